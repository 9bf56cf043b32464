/// Big blocks on huge pages (see `stylecap::alloc`).
#[global_allocator]
static ALLOCATOR: stylecap::alloc::HugeBlocks = stylecap::alloc::HugeBlocks;

fn main() {
    if let Err(e) = stylecap::cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
