//! `stylecap demo`: the whole chain on the built-in world: train the base captioner, the
//! critic and the judge, align all built-in styles, and evaluate base and aligned captioners
//! with the judge. Each stage is skipped when its output is complete, so an interrupted demo
//! continues where it stopped (the base captioner resumes from its checkpoint).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use burn::prelude::Device;
use clap::Args;

use crate::align::config::AlignConfig;
use crate::align::trainer::Aligner;
use crate::critic::train::{train_critic, CriticTrainConfig};
use crate::critic::Critic;
use crate::data::world::Split;
use crate::eval::captioner::{evaluate_captioner, render, EvalConfig, LoadedCaptioner};
use crate::eval::report::{write_report, ReportOptions};
use crate::train::config::{ModelShape, TrainConfig};
use crate::train::data::CaptionSource;
use crate::train::sft::{RunOptions, Trainer};
use crate::util::write_json;

#[derive(Args)]
pub struct DemoArgs {
    /// Output folder (one subfolder per stage).
    #[arg(long, default_value = "demo")]
    pub out: PathBuf,
    /// Small sizes: the whole chain in about a minute and a half, for a smoke test.
    #[arg(long)]
    pub quick: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Announces a stage with the demo's elapsed time, so a log shows what each stage took.
fn stage(name: &str, done: bool, start: Instant) -> bool {
    let at = start.elapsed().as_secs_f64();
    if done {
        eprintln!("== {name}: done already, skipped [{at:.0} s]");
    } else {
        eprintln!("== {name} [{at:.0} s]");
    }
    !done
}

pub fn run(a: DemoArgs, device: Device) -> Result<()> {
    let start = Instant::now();
    let out = &a.out;
    std::fs::create_dir_all(out)?;
    let show = !a.quiet;
    let (base_dir, critic_dir, judge_dir, align_dir) = (
        out.join("base"),
        out.join("critic"),
        out.join("judge"),
        out.join("align"),
    );

    let mut train = TrainConfig::default();
    let mut critic = CriticTrainConfig::default();
    let mut judge = CriticTrainConfig::judge();
    let mut align = AlignConfig::default();
    if a.quick {
        // Small enough for a test (about a minute), big enough that the base writes the
        // styles somewhat and alignment visibly moves the judge's score.
        train.model = ModelShape {
            image_size: 32,
            patch_size: 8,
            vision_dim: 64,
            vision_layers: 1,
            vision_heads: 2,
            decoder_dim: 64,
            decoder_layers: 2,
            decoder_heads: 2,
            vocab_size: 512,
            max_positions: 64,
            prefix_tokens: 2,
            ..ModelShape::default()
        };
        train.steps = 700;
        // The quick chain's settings (here and for alignment's β below), tuned for it
        // before the defaults changed.
        train.lr = 3e-3;
        train.lr_encoder = 2e-3;
        train.lr_cross = 2e-3;
        train.optimizer.beta2 = 0.999;
        // More style text per batch: the styles must show within a few hundred steps.
        train.batch_size = 8;
        train.style_batch_size = 32;
        train.world_train = 1000;
        train.style_texts = 1000;
        train.eval_every = 700;
        train.eval_images = 10;
        train.world_val = 10;
        for (c, hidden, layers) in [(&mut critic, 64, 1), (&mut judge, 48, 2)] {
            c.steps = 400;
            c.texts_per_style = 500;
            c.world_captions = 200;
            c.vocab_size = 512;
            c.hidden = hidden;
            c.layers = layers;
            c.heads = 2;
        }
        align.steps = 150;
        align.lr = 3e-4;
        align.beta = 0.02;
        align.eval_every = 50;
        // One sampled caption per picture: enough pictures that the best step is not noise.
        align.eval_images = 60;
    }

    if stage(
        "base captioner (stylecap train)",
        base_dir.join("eval.json").is_file(),
        start,
    ) {
        let resume = base_dir.join("checkpoint/state.json").is_file();
        let mut t = Trainer::new(train, &base_dir, resume, &device)?;
        t.run(&RunOptions {
            resume,
            show_progress: show,
            stop_after: None,
        })?;
    }
    for (name, dir, config) in [
        ("critic", &critic_dir, &critic),
        ("judge", &judge_dir, &judge),
    ] {
        if stage(
            &format!("{name} (stylecap critic train)"),
            dir.join("eval.json").is_file(),
            start,
        ) {
            let r = train_critic(config, dir, show, &device)?;
            eprintln!("   held-out accuracy {:.4}", r.accuracy);
        }
    }
    if stage(
        "alignment (stylecap align)",
        align_dir.join("validation.json").is_file(),
        start,
    ) {
        let _ = std::fs::remove_dir_all(&align_dir);
        align.base = base_dir.clone();
        align.critic = critic_dir.clone();
        Aligner::new(align, &align_dir, &device)?.run(show)?;
    }
    stage("evaluation (stylecap eval)", false, start);
    let judge = Critic::load(&judge_dir, &device)?;
    let images = if a.quick { 10 } else { 100 };
    let mut results = serde_json::Map::new();
    let base = LoadedCaptioner::load(&base_dir.join("model"), &device)?;
    for (name, dir) in [
        ("base", base_dir.join("model")),
        ("aligned", align_dir.join("model")),
    ] {
        let captioner = LoadedCaptioner::load(&dir, &device)?;
        let size = captioner.model.config.encoder.image_size();
        let source = CaptionSource::world(0, size, Split::Test, images);
        let config = EvalConfig {
            images,
            ..EvalConfig::default()
        };
        let e = evaluate_captioner(&captioner, Some(&base), &judge, &source, &config, &device)?;
        println!("{name} captioner: {}", render(&e));
        results.insert(name.into(), serde_json::to_value(&e)?);
    }
    write_json(&out.join("eval.json"), &results)?;
    stage("report (stylecap report)", false, start);
    let report_options = ReportOptions {
        images: if a.quick { 4 } else { 8 },
        ..ReportOptions::default()
    };
    let (report, examples) = write_report(out, None, &report_options, &device)?;
    println!("aligned captions of the first test picture:");
    for e in &examples {
        println!("  {e}");
    }
    println!("report: {}", display(&report));
    println!(
        "demo finished in {:.0} s; stages in {} (eval.json holds the tables)",
        start.elapsed().as_secs_f64(),
        display(out)
    );
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
