fn main() {
    if let Err(e) = stylecap::cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
