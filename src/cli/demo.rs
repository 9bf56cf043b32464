//! `stylecap demo`: parses the flags, runs `crate::demo`, and prints its tables.

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::Device;
use clap::Args;

use crate::cli::align::ContentRewardArgs;
use crate::cli::train::BaseDataArgs;
use crate::demo::{run as run_demo, DemoData, DemoPreset};
use crate::eval::captioner::render;

#[derive(Args)]
pub struct DemoArgs {
    /// Output folder (one run folder per stage: base/, critic/, judge/, align/; then
    /// eval.json and report.html).
    #[arg(long, default_value = "demo")]
    pub out: PathBuf,
    /// The small preset (presets/demo-quick.toml): the whole chain in about a minute and a
    /// half, for a smoke test.
    #[arg(long, conflicts_with = "preset")]
    pub quick: bool,
    /// A preset file of your own (TOML, sections as in presets/demo.toml: train, critic,
    /// judge, align, eval, report), instead of the built-in one.
    #[arg(long)]
    pub preset: Option<PathBuf>,
    // Your own data instead of the built-in world and styles (the critic learns from one half
    // of --styles, the judge from the other).
    #[command(flatten)]
    pub data: BaseDataArgs,
    #[command(flatten)]
    pub content: ContentRewardArgs,
    /// Seed of the base captioner's training and of the alignment (default: the preset's).
    /// The critic and the judge keep theirs, so demos with different seeds are judged alike;
    /// give each its own --out.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: DemoArgs, device: Device) -> Result<()> {
    let mut preset = match (&a.preset, a.quick) {
        (Some(path), _) => DemoPreset::from_file(path)?,
        (None, true) => DemoPreset::builtin("demo-quick")?,
        (None, false) => DemoPreset::builtin("demo")?,
    };
    if let Some(seed) = a.seed {
        preset.seed(seed);
    }
    DemoData {
        data: a.data.data.clone(),
        val_data: a.data.val_data.clone(),
        test_data: a.data.test_data.clone(),
        styles: a.data.styles.clone(),
        content_reward: a.content.content_reward,
        content_encoder: a.content.content_encoder.clone(),
        clip: a.content.clip.clone(),
        vision: a.data.vision.clone(),
        decoder: a.data.decoder.clone(),
    }
    .apply(&mut preset)?;
    let summary = run_demo(preset, &a.out, !a.quiet, &device)?;
    for (name, e) in &summary.evals {
        println!("{name} captioner: {}", render(e));
    }
    println!("aligned captions of the first test picture:");
    for e in &summary.examples {
        println!("  {e}");
    }
    println!("report: {}", summary.report.display());
    println!(
        "demo finished in {:.0} s; stages in {} (eval.json holds the tables)",
        summary.seconds,
        a.out.display()
    );
    Ok(())
}
