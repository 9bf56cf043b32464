//! `stylecap data`: make the built-in world, and look at any dataset.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::data::inspect;
use crate::data::synth::{self, SynthConfig, CONTACT_SHEET};
use crate::data::world::WorldConfig;

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
}

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Images in each of val, test and compositional (default: n/10, at least 1).
    #[arg(long)]
    pub eval_n: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pixels per side.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Distinct factual captions per image.
    #[arg(long, default_value_t = 5)]
    pub captions: usize,
    /// Sentences per built-in style.
    #[arg(long, default_value_t = 5000)]
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
