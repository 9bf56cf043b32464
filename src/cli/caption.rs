//! `stylecap caption`: one image in, one caption out.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use burn::prelude::*;
use clap::Args;

use crate::data::image::open_rgb;
use crate::model::pretrained::resolve;
use crate::model::{generate, DecodeOptions, LoadedCaptioner, Strategy};

#[derive(Args)]
pub struct CaptionArgs {
    /// Captioner directory (config.json, model.safetensors, tokenizer.json,
    /// preprocessor_config.json), or a Hub id `org/name` in builds with `--features hub`.
    #[arg(long)]
    pub model: String,
    /// Image file (PNG or JPEG).
    #[arg(long)]
    pub image: PathBuf,
    /// Style to write in (one of the captioner's styles; default: its first).
    #[arg(long)]
    pub style: Option<String>,
    /// Greedy decoding (the default unless --temperature, --top-p, --top-k or --beams is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k", "beams"])]
    pub greedy: bool,
    /// Sampling temperature.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Sample among the k most likely tokens only.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Beam search with this many beams.
    #[arg(long)]
    pub beams: Option<usize>,
    /// Most tokens to generate (fewer when the caption ends).
    #[arg(long, default_value_t = DecodeOptions::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Seed for sampling.
    #[arg(long, default_value_t = DecodeOptions::default().seed)]
    pub seed: u64,
    /// Print one JSON object: caption, style, token_ids (without the start token), logprobs.
    #[arg(long)]
    pub json: bool,
}

impl CaptionArgs {
    fn strategy(&self) -> Strategy {
        if let Some(n) = self.beams {
            return Strategy::Beam {
                num_beams: n,
                length_penalty: 1.0,
            };
        }
        if self.greedy
            || (self.temperature.is_none() && self.top_p.is_none() && self.top_k.is_none())
        {
            return Strategy::Greedy;
        }
        Strategy::Sample {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            top_p: self.top_p.unwrap_or(1.0),
        }
    }
}

pub fn run(args: CaptionArgs, device: Device) -> Result<()> {
    let dir = resolve(&args.model)?;
    let LoadedCaptioner {
        model,
        tokenizer,
        preprocess: pre,
    } = LoadedCaptioner::load(&dir, &device)?;
    let pre_path = dir.join("preprocessor_config.json");
    if !pre_path.exists() {
        let s = model.config.encoder.image_size();
        eprintln!(
            "note: {} not found; resizing to {s}x{s} with mean=std=0.5",
            pre_path.display()
        );
    }
    let styles = &model.config.style.styles;
    let style = match (&args.style, styles.first()) {
        (Some(s), _) => Some((s.clone(), model.config.style_index(s)?)),
        (None, Some(first)) => Some((first.clone(), 0)),
        (None, None) => None,
    };
    let image = open_rgb(&args.image)?;
    let pixels = pre.batch(&[image], &device)?;
    let [_, _, h, w] = pixels.dims();
    let size = model.config.encoder.image_size();
    ensure!(
        h == size && w == size,
        "{}: preprocessing gives {h}x{w} images, the encoder expects {size}x{size}",
        pre_path.display()
    );
    let opts = DecodeOptions {
        strategy: args.strategy(),
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
    };
    let style_idx = style.as_ref().map(|(_, i)| vec![*i]);
    let out = generate(&model, pixels, style_idx.as_deref(), &opts)?
        .into_iter()
        .next()
        .context("no caption")?;
    let caption = tokenizer.decode(&out.tokens)?.trim().to_string();
    if args.json {
        let obj = serde_json::json!({
            "caption": caption,
            "style": style.map(|(s, _)| s),
            "token_ids": out.tokens,
            "logprobs": out.logprobs,
        });
        println!("{obj}");
    } else {
        println!("{caption}");
    }
    Ok(())
}
