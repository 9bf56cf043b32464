//! `stylecap eval`: captions in each style for held-out images, scored by the judge.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::prelude::Device;
use clap::Args;

use crate::critic::Critic;
use crate::data::sources::CaptionSource;
use crate::eval::captioner::{evaluate_captioner, render, EvalConfig};
use crate::model::folder::{model_dir, LoadedCaptioner};
use crate::world::Split;

#[derive(Args)]
pub struct EvalArgs {
    /// Captioner folder (a run's `model/`, or the run folder itself).
    #[arg(long)]
    pub model: PathBuf,
    /// Base captioner (the alignment's reference): adds perplexity and KL under it.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Judge folder (`stylecap critic train --judge`).
    #[arg(long)]
    pub judge: PathBuf,
    /// Images: a `data synth` folder (its test split), or any caption dataset. Default: the
    /// built-in world's test split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Evaluate the compositional split of the built-in world instead of the test split.
    #[arg(long)]
    pub compositional: bool,
    /// Images captioned (the first ones of the split).
    #[arg(long, default_value_t = EvalConfig::default().images)]
    pub images: usize,
    /// Comma-separated styles (default: all the captioner knows).
    #[arg(long, value_delimiter = ',')]
    pub styles: Option<Vec<String>>,
    /// Greedy decoding instead of sampling (--temperature and --top-p are then unused).
    #[arg(long)]
    pub greedy: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = EvalConfig::default().temperature)]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    #[arg(long, default_value_t = EvalConfig::default().top_p)]
    pub top_p: f32,
    /// Seed for sampling.
    #[arg(long, default_value_t = EvalConfig::default().seed)]
    pub seed: u64,
    /// Decode-time repetition penalty, as `caption --repetition-penalty` (1, off, to 10).
    #[arg(long, default_value_t = EvalConfig::default().repetition_penalty)]
    pub repetition_penalty: f32,
    /// Never repeat an n-gram of tokens of this size, as `caption --no-repeat-ngram-size`
    /// (0, off, to 4096).
    #[arg(long, default_value_t = EvalConfig::default().no_repeat_ngram_size)]
    pub no_repeat_ngram_size: usize,
    /// Sentence encoder (a sentence-transformers folder such as all-MiniLM-L6-v2): adds each
    /// caption's embedding similarity to its references.
    #[arg(long)]
    pub content_encoder: Option<PathBuf>,
    /// CLIP model (a CLIPModel folder such as openai/clip-vit-base-patch32): adds CLIPScore
    /// and RefCLIPScore.
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// Also write every caption to this file, one JSON object a line: image (its index in
    /// the split), style, caption, token_ids, logprobs.
    #[arg(long)]
    pub captions: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs, device: Device) -> Result<()> {
    // Checked before the evaluation runs, not found missing after it.
    if let Some(path) = &a.captions {
        let folder = path.parent().unwrap_or(std::path::Path::new(""));
        anyhow::ensure!(
            folder.as_os_str().is_empty() || folder.is_dir(),
            "--captions {}: the folder {} does not exist",
            path.display(),
            folder.display()
        );
    }
    let captioner = LoadedCaptioner::load(&model_dir(&a.model), &device)?;
    let base = match &a.base {
        Some(b) => Some(LoadedCaptioner::load(&model_dir(b), &device)?),
        None => None,
    };
    let judge = Critic::load(&a.judge, &device)?;
    let split = if a.compositional {
        Split::Compositional
    } else {
        Split::Test
    };
    let size = captioner.model.config.encoder.image_size();
    let source = CaptionSource::held_out(a.data.as_deref(), split, size, a.images)?;
    let config = EvalConfig {
        images: a.images,
        styles: a.styles,
        greedy: a.greedy,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        repetition_penalty: a.repetition_penalty,
        no_repeat_ngram_size: a.no_repeat_ngram_size,
        content_encoder: a.content_encoder.clone(),
        clip: a.clip.clone(),
        ..EvalConfig::default()
    };
    let result = evaluate_captioner(&captioner, base.as_ref(), &judge, &source, &config, &device)?;
    if let Some(path) = &a.captions {
        let mut lines = String::new();
        for c in &result.captions {
            lines += &serde_json::to_string(c)?;
            lines.push('\n');
        }
        crate::util::write_atomic(path, lines.as_bytes())
            .with_context(|| format!("writing the captions to {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", render(&result));
    }
    Ok(())
}
