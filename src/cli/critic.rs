//! `stylecap critic`: train, score with and evaluate a style critic (or the judge).

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::Device;
use clap::{Args, Subcommand};

use crate::critic::metrics::{evaluate, render};
use crate::critic::train::{train_critic, CorpusPart, CriticTrainConfig, FINE_TUNE_LR};
use crate::critic::Critic;
use crate::data::records::LoadOptions;
use crate::data::sources::load_styles;

#[derive(Args)]
pub struct CriticArgs {
    #[command(subcommand)]
    pub command: CriticCommand,
}

#[derive(Subcommand)]
pub enum CriticCommand {
    /// Train a critic on labelled texts (default: the built-in styles) and report held-out
    /// accuracy, per-style precision/recall, calibration and the confusion matrix.
    Train(CriticTrainArgs),
    /// Print the probability of each style for each text.
    Score(ScoreArgs),
    /// Accuracy, per-style precision/recall and the confusion matrix on a labelled file.
    Eval(EvalArgs),
}

#[derive(Args)]
pub struct CriticTrainArgs {
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Labelled texts: JSONL {"text","style"} or a folder of STYLE.txt.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A caption dataset (any format `train --data` reads) whose training pictures'
    /// captions are added to the `factual` texts of --data (2,500 pictures, one caption each):
    /// the captioner's own factual captions, which a critic would otherwise take for one of
    /// the corpus's styles. `demo --data` passes its data here.
    #[arg(long, requires = "data")]
    pub factual_captions: Option<PathBuf>,
    /// Fine-tune a pretrained BERT / MiniLM folder (config.json, model.safetensors,
    /// tokenizer.json) instead of training a small encoder.
    #[arg(long)]
    pub pretrained: Option<String>,
    /// Train the judge: another seed, split and architecture than the default critic.
    #[arg(long)]
    pub judge: bool,
    /// The part of the corpus to use: `critic` and `judge` are disjoint halves (a fixed
    /// shuffle), so a judge trained with `--judge --part judge` never saw a text the critic
    /// trained with `--part critic` learnt from.
    #[arg(long, value_enum)]
    pub part: Option<CorpusPart>,
    /// Settings file (JSON or TOML); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Optimisation steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Peak learning rate (with --pretrained and neither --lr nor --config: the fine-tuning
    /// rate, 5e-5).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed for the held-out split, initialisation and batch order (--judge has its own).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Skip bad data records (each is listed) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Mixed precision: compute the matrix products in f16 or bf16, keeping f32 weights and
    /// optimizer (f16 with dynamic loss scaling). Pays on a GPU; on the CPU it is slower.
    #[arg(long, value_enum)]
    pub mixed_precision: Option<crate::util::Precision>,
    /// Print the held-out report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ScoreArgs {
    /// Critic folder (`stylecap critic train`; a judge folder works too).
    #[arg(long)]
    pub critic: PathBuf,
    /// Texts to score.
    #[arg(required = true)]
    pub texts: Vec<String>,
    /// Print the probabilities as JSON, one object per text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Critic or judge folder to evaluate.
    #[arg(long)]
    pub critic: PathBuf,
    /// Labelled texts: JSONL {"text","style"} or a folder of STYLE.txt.
    #[arg(long)]
    pub data: PathBuf,
    /// Skip bad data records (each is listed) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CriticArgs, device: Device) -> Result<()> {
    match args.command {
        CriticCommand::Train(a) => {
            let mut c = match (&a.config, a.judge) {
                (Some(path), _) => crate::util::read_config_file(path)?,
                (None, true) => CriticTrainConfig::judge(),
                (None, false) => CriticTrainConfig::default(),
            };
            if a.data.is_some() {
                c.data = a.data.clone();
            }
            if a.factual_captions.is_some() {
                c.factual_captions = a.factual_captions.clone();
            }
            if let Some(p) = a.part {
                c.corpus_part = p;
            }
            if a.pretrained.is_some() {
                c.pretrained = a.pretrained.clone();
                // Fine-tuning wants a much smaller step than training from scratch.
                if a.lr.is_none() && a.config.is_none() {
                    c.lr = FINE_TUNE_LR;
                }
            }
            if let Some(v) = a.steps {
                c.steps = v;
            }
            if let Some(v) = a.lr {
                c.lr = v;
            }
            if let Some(v) = a.seed {
                c.seed = v;
            }
            c.skip_bad |= a.skip_bad;
            if let Some(p) = a.mixed_precision {
                c.mixed_precision = p;
            }
            let report = train_critic(&c, &a.out, !a.quiet, &device)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("held-out {}", render(&report));
                println!("critic: {}", a.out.display());
            }
            Ok(())
        }
        CriticCommand::Score(a) => {
            let (critic, tokenizer) = Critic::load(&a.critic, &device)?;
            let texts: Vec<&str> = a.texts.iter().map(String::as_str).collect();
            let probs = critic.probabilities(&tokenizer, &texts, &device)?;
            if a.json {
                let rows: Vec<serde_json::Value> = texts
                    .iter()
                    .zip(&probs)
                    .map(|(t, p)| {
                        let scores: serde_json::Map<String, serde_json::Value> = critic
                            .info
                            .styles
                            .iter()
                            .zip(p)
                            .map(|(s, &v)| (s.clone(), v.into()))
                            .collect();
                        serde_json::json!({"text": t, "probabilities": scores})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for (t, p) in texts.iter().zip(&probs) {
                    println!("{t}");
                    let mut ranked: Vec<(&String, &f32)> =
                        critic.info.styles.iter().zip(p).collect();
                    ranked.sort_by(|a, b| b.1.total_cmp(a.1));
                    for (s, v) in ranked {
                        println!("  {s:<16} {v:.4}");
                    }
                }
            }
            Ok(())
        }
        CriticCommand::Eval(a) => {
            let (critic, tokenizer) = Critic::load(&a.critic, &device)?;
            let loaded = load_styles(
                &a.data,
                LoadOptions {
                    skip_bad: a.skip_bad,
                },
            )?;
            for p in &loaded.skipped {
                eprintln!("skipped: {p}");
            }
            let mut texts = Vec::new();
            let mut labels = Vec::new();
            for t in &loaded.records {
                labels.push(
                    critic
                        .style_index(&t.style)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", t.source))?,
                );
                texts.push(t.text.as_str());
            }
            let probs = critic.probabilities(&tokenizer, &texts, &device)?;
            let report = evaluate(&critic.info.styles, &probs, &labels);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render(&report));
            }
            Ok(())
        }
    }
}
