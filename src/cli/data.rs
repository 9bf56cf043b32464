//! `stylecap data`: make the built-in world, and look at any dataset.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::data::fetch::{
    self,
    config::{FetchConfig, OutputFormat, ResizeMode},
};
use crate::data::inspect;
use crate::data::synth::{self, SynthConfig, CONTACT_SHEET};
use crate::world::WorldConfig;

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Write the built-in scene world: PNG images, a JSONL manifest per split (train, val,
    /// test, compositional) with each scene graph, the built-in style corpus, a contact sheet.
    Synth(SynthArgs),
    /// Counts, style balance, caption lengths, image sizes and problems of a dataset: COCO
    /// captions JSON, a JSONL manifest or style corpus, an image folder with .txt captions, a
    /// folder of STYLE.txt files, or a `data synth` folder.
    Inspect(InspectArgs),
    /// Build an image–caption dataset from a list of image URLs with captions (TSV, CSV or
    /// JSONL): concurrent downloads, checks, cleaning, resizing, duplicate removal; rerun
    /// the same command to continue an interrupted fetch.
    Fetch(FetchArgs),
}

#[derive(Args)]
pub struct FetchArgs {
    /// URL list: .tsv or .csv with a header row, or .jsonl.
    #[arg(long)]
    pub input: PathBuf,
    /// Output folder: images/, manifest.jsonl, shards/, report.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Column or key with the image URL.
    #[arg(long, default_value = "url")]
    pub url_col: String,
    /// Column or key with the caption.
    #[arg(long, default_value = "caption")]
    pub caption_col: String,
    /// Downloads in flight at once.
    #[arg(long, default_value_t = FetchConfig::default().parallel)]
    pub parallel: usize,
    /// Requests per second to one host (0: unlimited).
    #[arg(long, default_value_t = FetchConfig::default().per_host_rps)]
    pub per_host_rps: f64,
    /// Seconds allowed for each request (connect, headers, body).
    #[arg(long, default_value_t = FetchConfig::default().timeout_s)]
    pub timeout: f64,
    /// Retries after timeouts, connection errors, 429 and 5xx (exponential backoff).
    #[arg(long, default_value_t = FetchConfig::default().retries)]
    pub retries: u32,
    /// First retry delay in seconds (doubled each retry).
    #[arg(long, default_value_t = FetchConfig::default().backoff_s)]
    pub backoff: f64,
    /// On a rerun, fetch again the records that failed with a timeout, a connection error,
    /// 429 or 5xx (`--retry-failed false`: such failures are final).
    #[arg(long, default_value_t = FetchConfig::default().retry_failed, action = clap::ArgAction::Set)]
    pub retry_failed: bool,
    /// Send requests through this HTTP(S) proxy (HTTP_PROXY and the like are ignored);
    /// names are still checked by resolving them here.
    #[arg(long)]
    pub proxy: Option<String>,
    /// Largest download in bytes.
    #[arg(long, default_value_t = FetchConfig::default().max_bytes)]
    pub max_bytes: u64,
    /// Redirects followed per request.
    #[arg(long, default_value_t = FetchConfig::default().max_redirects)]
    pub max_redirects: usize,
    /// Largest image in pixels, checked before decoding.
    #[arg(long, default_value_t = FetchConfig::default().max_pixels)]
    pub max_pixels: u64,
    /// Largest ratio of an image's longer side to its shorter, checked before decoding.
    #[arg(long, default_value_t = FetchConfig::default().max_aspect_ratio)]
    pub max_aspect_ratio: f64,
    /// Output size in pixels.
    #[arg(long, default_value_t = FetchConfig::default().size)]
    pub size: u32,
    /// How images are brought to --size.
    #[arg(long, value_enum, default_value = "center-crop")]
    pub resize: ResizeMode,
    /// Output image format.
    #[arg(long, value_enum, default_value = "jpeg")]
    pub format: OutputFormat,
    /// JPEG quality, 1 to 100 (with --format jpeg).
    #[arg(long, default_value_t = FetchConfig::default().jpeg_quality)]
    pub jpeg_quality: u8,
    /// Drop images whose shorter side is under this many pixels.
    #[arg(long, default_value_t = FetchConfig::default().min_image_side)]
    pub min_image_side: u32,
    /// Drop records whose cleaned caption has fewer words than this.
    #[arg(long, default_value_t = FetchConfig::default().min_caption_words)]
    pub min_caption_words: usize,
    /// Drop records whose cleaned caption has more characters than this.
    #[arg(long, default_value_t = FetchConfig::default().max_caption_chars)]
    pub max_caption_chars: usize,
    /// Perceptual-hash distance (bits, at most 7) for near duplicates; -1 turns it off.
    #[arg(long, default_value_t = FetchConfig::default().near_duplicate_bits, allow_hyphen_values = true)]
    pub near_duplicate_bits: i32,
    /// Images per shard folder.
    #[arg(long, default_value_t = FetchConfig::default().shard_size)]
    pub shard_size: usize,
    /// Allow loopback, private and link-local addresses (refused by default).
    #[arg(long)]
    pub allow_private: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images.
    #[arg(long, default_value_t = SynthConfig::default().train)]
    pub n: usize,
    /// Images in each of val, test and compositional (default: n/10, at least 1).
    #[arg(long)]
    pub eval_n: Option<usize>,
    /// Seed of the world: scenes, images and captions.
    #[arg(long, default_value_t = WorldConfig::default().seed)]
    pub seed: u64,
    /// Pixels per side.
    #[arg(long, default_value_t = WorldConfig::default().image_size)]
    pub size: u32,
    /// Distinct factual captions per image.
    #[arg(long, default_value_t = WorldConfig::default().captions_per_image)]
    pub captions: usize,
    /// Sentences per built-in style.
    #[arg(long, default_value_t = SynthConfig::default().style_texts)]
    pub style_texts: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Dataset file or folder.
    pub path: PathBuf,
    /// Image folder of a COCO JSON (default: images/ or train2017/ beside it).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Synth(a) => {
            let eval_n = a.eval_n.unwrap_or((a.n / 10).max(1));
            let config = SynthConfig {
                world: WorldConfig {
                    seed: a.seed,
                    image_size: a.size,
                    captions_per_image: a.captions,
                    ..WorldConfig::default()
                },
                train: a.n,
                val: eval_n,
                test: eval_n,
                compositional: eval_n,
                style_texts: a.style_texts,
            };
            let start = std::time::Instant::now();
            let info = synth::synth(&a.out, &config, !a.quiet)?;
            println!(
                "wrote {} images (train {}, val {}, test {}, compositional {}) and {} style \
                 texts ({}) to {} in {:.1} s",
                config.train + 3 * eval_n,
                config.train,
                eval_n,
                eval_n,
                eval_n,
                config.style_texts * info.styles.len(),
                info.styles.join(", "),
                a.out.display(),
                start.elapsed().as_secs_f32()
            );
            println!("look at {}", a.out.join(CONTACT_SHEET).display());
            Ok(())
        }
        DataCommand::Fetch(a) => {
            let config = FetchConfig {
                url_col: a.url_col,
                caption_col: a.caption_col,
                parallel: a.parallel,
                per_host_rps: a.per_host_rps,
                timeout_s: a.timeout,
                retries: a.retries,
                backoff_s: a.backoff,
                retry_failed: a.retry_failed,
                proxy: a.proxy,
                max_bytes: a.max_bytes,
                max_redirects: a.max_redirects,
                max_pixels: a.max_pixels,
                max_aspect_ratio: a.max_aspect_ratio,
                size: a.size,
                resize: a.resize,
                format: a.format,
                jpeg_quality: a.jpeg_quality,
                min_image_side: a.min_image_side,
                min_caption_words: a.min_caption_words,
                max_caption_chars: a.max_caption_chars,
                near_duplicate_bits: a.near_duplicate_bits,
                shard_size: a.shard_size,
                allow_private: a.allow_private,
                ..FetchConfig::default()
            };
            let r = fetch::run(&a.input, &a.out, config, !a.quiet)?;
            println!(
                "kept {} of {} records in {}",
                r.kept,
                r.records,
                a.out.display()
            );
            for (reason, n) in &r.dropped {
                println!("  dropped {n:>7}  {reason}");
            }
            if r.still_failing > 0 {
                println!(
                    "{} records failed for reasons that may pass (timeouts, connection errors, \
                     429, 5xx); a rerun retries them unless --retry-failed false",
                    r.still_failing
                );
            }
            println!("manifest: {}", a.out.join("manifest.jsonl").display());
            Ok(())
        }
        DataCommand::Inspect(a) => {
            let report = inspect::inspect(&a.path, a.images.as_deref())?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", inspect::render(&report));
            }
            Ok(())
        }
    }
}
