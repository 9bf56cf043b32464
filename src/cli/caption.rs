//! `stylecap caption`: one image in, one caption out.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use burn::prelude::*;
use clap::Args;

use crate::data::image::open_rgb;
use crate::model::pretrained::resolve;
use crate::model::settings::CheckedSettings;
use crate::model::{
    generate, DecodeLimits, DecodeOptions, DecodeSettings, LoadedCaptioner, Strategy,
};

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
    /// Sampling temperature (0.01 to 10).
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability (above 0,
    /// at most 1).
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Sample among the k most likely tokens only (1 to the vocabulary size).
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<i64>,
    /// Beam search with this many beams (1 to 16).
    #[arg(long, allow_negative_numbers = true)]
    pub beams: Option<i64>,
    /// Most tokens to generate (fewer when the caption ends; at most what the decoder's
    /// positions allow).
    #[arg(long, allow_negative_numbers = true, default_value_t = DecodeOptions::default().max_new_tokens as i64)]
    pub max_new_tokens: i64,
    /// Hold back tokens already generated: their logits are divided by this where positive
    /// and multiplied where negative (1, off, to 10; transformers' `repetition_penalty`).
    #[arg(long, allow_negative_numbers = true)]
    pub repetition_penalty: Option<f32>,
    /// Never repeat an n-gram of tokens of this size (0, off, to what the decoder's positions
    /// allow; transformers' `no_repeat_ngram_size`).
    #[arg(long, allow_negative_numbers = true)]
    pub no_repeat_ngram_size: Option<i64>,
    /// Seed for sampling.
    #[arg(long, default_value_t = DecodeOptions::default().seed)]
    pub seed: u64,
    /// Print one JSON object: caption, style, token_ids (without the start token), logprobs.
    #[arg(long)]
    pub json: bool,
}

impl CaptionArgs {
    fn settings(&self) -> DecodeSettings {
        DecodeSettings {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            beams: self.beams,
            n: None,
            max_new_tokens: Some(self.max_new_tokens),
            repetition_penalty: self.repetition_penalty,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
        }
    }

    fn strategy(&self, s: &CheckedSettings) -> Strategy {
        if let Some(n) = s.beams {
            return Strategy::Beam {
                num_beams: n,
                length_penalty: 1.0,
            };
        }
        if self.greedy || (s.temperature.is_none() && s.top_p.is_none() && s.top_k.is_none()) {
            return Strategy::Greedy;
        }
        Strategy::Sample {
            temperature: s.temperature.unwrap_or(1.0),
            top_k: s.top_k.unwrap_or(0),
            top_p: s.top_p.unwrap_or(1.0),
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
    let settings = args
        .settings()
        .check(&DecodeLimits::of(&model))
        .map_err(|e| anyhow!(e.message(&e.setting.flag())))?;
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
    let opts = DecodeOptions {
        strategy: args.strategy(&settings),
        max_new_tokens: settings
            .max_new_tokens
            .unwrap_or(DecodeOptions::default().max_new_tokens),
        seed: args.seed,
        repeats: settings.repeats(),
    };
    let style_idx = style.as_ref().map(|(_, i)| vec![*i]);
    let out = generate(&model, pixels, style_idx.as_deref(), &opts)?
        .into_iter()
        .next()
        .context("no caption")?;
    let caption = tokenizer.decode_caption(&out.tokens)?;
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
