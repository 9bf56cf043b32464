//! `stylecap caption`: pictures in, a caption per picture and style out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use burn::prelude::*;
use clap::Args;

use crate::caption::{self, job_signature, list_pictures, Job, MAX_BATCH_SIZE};
use crate::model::pretrained::resolve;
use crate::model::settings::CheckedSettings;
use crate::model::{DecodeLimits, DecodeOptions, DecodeSettings, LoadedCaptioner, Strategy};
use crate::util::float_type;

#[derive(Args)]
pub struct CaptionArgs {
    /// Captioner directory (config.json, model.safetensors, tokenizer.json,
    /// preprocessor_config.json), or a Hub id `org/name` in builds with `--features hub`.
    #[arg(long)]
    pub model: String,
    /// Image files (PNG or JPEG) or folders of them (searched recursively, in path order);
    /// several may follow one --image, so shell globs work.
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// Styles to write in, comma-separated, or `all` (default: the captioner's first). Each
    /// picture is captioned in each.
    #[arg(long, value_delimiter = ',')]
    pub style: Vec<String>,
    /// Write the captions to this file as JSON Lines instead of printing them. A killed run
    /// started again with the same settings goes on where it stopped (from FILE.partial).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Pictures decoded together (1 to 256); each picture's styles share its encoding.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH_SIZE as u64))]
    pub batch_size: u64,
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
    /// Print one JSON object per caption (JSON Lines): image, style, caption, token_ids
    /// (without the start token), logprobs.
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
    let loaded = LoadedCaptioner::load(&dir, &device)?;
    let model = &loaded.model;
    let settings = args
        .settings()
        .check(&DecodeLimits::of(model))
        .map_err(|e| anyhow!(e.message(&e.setting.flag())))?;
    let pre_path = dir.join("preprocessor_config.json");
    if !pre_path.exists() {
        let s = model.config.encoder.image_size();
        eprintln!(
            "note: {} not found; resizing to {s}x{s} with mean=std=0.5",
            pre_path.display()
        );
    }
    let names = &model.config.style.styles;
    let styles: Vec<usize> = match args.style.as_slice() {
        _ if names.is_empty() => Vec::new(),
        [] => vec![0],
        [all] if all == "all" => (0..names.len()).collect(),
        given => given
            .iter()
            .map(|s| model.config.style_index(s))
            .collect::<Result<_>>()?,
    };
    let job = Job {
        pictures: list_pictures(&args.image)?,
        styles,
        decoding: DecodeOptions {
            strategy: args.strategy(&settings),
            max_new_tokens: settings
                .max_new_tokens
                .unwrap_or(DecodeOptions::default().max_new_tokens),
            seed: args.seed,
            repeats: settings.repeats(),
        },
        batch_size: args.batch_size as usize,
    };
    // One picture in one style prints just its caption, as it always did.
    let single = job.pictures.len() == 1 && job.styles.len() <= 1;
    let signature = args
        .out
        .as_ref()
        .map(|_| job_signature(&dir, &loaded, &job, &float_type(&device)));
    let out = args.out.as_deref().zip(signature.as_ref());
    let summary = caption::run(&loaded, &job, &device, out, |batch| {
        if !single {
            for u in &batch.unreadable {
                eprintln!("skipped: {}", u.reason);
            }
        }
        if out.is_some() {
            return Ok(());
        }
        // Written, not printed: a closed pipe (`| head`) ends the run with an error, not a panic.
        let mut stdout = std::io::stdout().lock();
        for r in &batch.records {
            if args.json {
                writeln!(stdout, "{}", serde_json::to_string(r)?)?;
            } else if single {
                writeln!(stdout, "{}", r.caption)?;
            } else {
                let style = r
                    .style
                    .as_deref()
                    .map(|s| format!("\t{s}"))
                    .unwrap_or_default();
                writeln!(stdout, "{}{style}\t{}", r.image, r.caption)?;
            }
        }
        stdout.flush()?;
        Ok(())
    })?;
    if let Some(path) = &args.out {
        eprintln!(
            "wrote {} captions of {} pictures to {}{}",
            summary.captions,
            job.pictures.len() - summary.unreadable.len(),
            path.display(),
            match summary.resumed_batches {
                0 => String::new(),
                n => format!(" (resumed after {n} batches an earlier run had finished)"),
            }
        );
    }
    match summary.unreadable.as_slice() {
        [] => Ok(()),
        [one] if single => bail!("{}", one.reason),
        many => {
            let mut names: Vec<&str> = many.iter().take(5).map(|u| u.path.as_str()).collect();
            if many.len() > 5 {
                names.push("...");
            }
            bail!(
                "{} of {} pictures could not be read ({}); the others were captioned",
                many.len(),
                job.pictures.len(),
                names.join(", ")
            )
        }
    }
}
