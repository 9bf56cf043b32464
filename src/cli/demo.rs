//! `stylecap demo`: parses the flags, runs `crate::demo`, and prints its tables.

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::Device;
use clap::Args;

use crate::cli::align::ContentRewardArgs;
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
    /// Your own pictures with reference captions, in any format `train --data` reads (a
    /// `data synth` folder, COCO captions JSON, JSONL manifest, image folder, `data fetch`
    /// output), instead of the built-in world. Validation and test pictures are fixed
    /// held-out slices of it unless --val-data / --test-data name others.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation pictures (alignment keeps the policy that scores best on them).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Test pictures for the evaluation and the report's gallery.
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Your own style corpus (JSONL {"text","style"} or a folder of STYLE.txt), instead of
    /// the built-in styles: the critic learns from one half of it and the judge from the
    /// other.
    #[arg(long)]
    pub styles: Option<PathBuf>,
    #[command(flatten)]
    pub content: ContentRewardArgs,
    /// Pretrained vision encoder for the base captioner (HF folder or id).
    #[arg(long)]
    pub vision: Option<String>,
    /// Pretrained GPT-2 for the base captioner (HF folder or id).
    #[arg(long)]
    pub decoder: Option<String>,
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
    DemoData {
        data: a.data.clone(),
        val_data: a.val_data.clone(),
        test_data: a.test_data.clone(),
        styles: a.styles.clone(),
        content_reward: a.content.content_reward,
        content_encoder: a.content.content_encoder.clone(),
        clip: a.content.clip.clone(),
        vision: a.vision.clone(),
        decoder: a.decoder.clone(),
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
