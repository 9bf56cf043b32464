//! `stylecap bench`: parses the flags and prints what `crate::bench` measured.

use anyhow::Result;
use burn::prelude::*;
use clap::Args;

use crate::bench::{run as run_bench, BenchConfig, Part, Preset};
use crate::util::Precision;

/// The workload flags default to the preset's (small: 10 runs after 2 warm-ups, batch 16,
/// 64-token captions, 32 new tokens, 4 samples; vit-b16-gpt2: 3 runs after 1, 8 pictures +
/// 8 style rows of 32 tokens, 32 new tokens, 4 samples).
#[derive(Args)]
pub struct BenchArgs {
    /// Model and workload: `small` (the benchmark model) or `vit-b16-gpt2` (ViT-B/16 224 px +
    /// GPT-2 124M with cross-attention, random weights: about 1 GiB per copy of the weights,
    /// and 9+ GiB while training).
    #[arg(long, value_enum, default_value_t = Preset::Small)]
    pub preset: Preset,
    /// Time only these parts (repeatable; default: all). A part left out reports 0 s.
    #[arg(long, value_enum)]
    pub only: Vec<Part>,
    /// Shards of the supervised step and of the alignment step's scoring and update, run in
    /// parallel (`data_parallel` of `stylecap train` and `stylecap align`; each shard holds
    /// its own gradients: fewer shards, less memory, slower steps).
    #[arg(long, default_value_t = crate::sft::TrainConfig::default().data_parallel)]
    pub data_parallel: usize,
    /// Gradient checkpointing: the supervised step recomputes each transformer block in its
    /// backward pass (`stylecap train --gradient-checkpointing`), the alignment step
    /// memory-bound activations (burn's balanced checkpointing, as `stylecap align`).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Mixed precision of the supervised and alignment steps: their matrix products in f16
    /// or bf16 (`--mixed-precision` of `stylecap train` and `stylecap align`).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub mixed_precision: Precision,
    /// Timed repetitions of each measurement (after warm-up).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Untimed warm-up repetitions before the timed ones.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Pictures per batch (one caption each in the training step).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Caption tokens per training example.
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Tokens generated per caption (KV cache, no early stop).
    #[arg(long)]
    pub new_tokens: Option<usize>,
    /// Time generation by beam search with this many beams (`stylecap caption --beams`,
    /// 1 to 16) instead of greedy decoding.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub beams: u16,
    /// Samples per image in the alignment step (rollout of `batch` images × this, then one
    /// update).
    #[arg(long)]
    pub samples: Option<usize>,
    /// The alignment step trains LoRA adapters of this rank on the decoder's attention
    /// projections, over the reference's weights (`stylecap align --lora-rank`).
    #[arg(long, default_value_t = 0)]
    pub lora_rank: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs, base: Device) -> Result<()> {
    let d = args.preset.workload();
    let b = BenchConfig {
        runs: args.runs.unwrap_or(d.runs),
        warmup: args.warmup.unwrap_or(d.warmup),
        batch: args.batch.unwrap_or(d.batch),
        tokens: args.tokens.unwrap_or(d.tokens),
        new_tokens: args.new_tokens.unwrap_or(d.new_tokens),
        beams: args.beams.into(),
        samples: args.samples.unwrap_or(d.samples),
        only: args.only,
        data_parallel: args.data_parallel,
        gradient_checkpointing: args.gradient_checkpointing,
        mixed_precision: args.mixed_precision,
        lora_rank: args.lora_rank,
        ..d
    };
    let r = run_bench(&b, &base)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{}, {}, preset {:?}, {} CPU threads, median of {} runs",
        r.framework, r.dtype, b.preset, r.threads, r.runs
    );
    if r.mixed_precision != Precision::F32 {
        println!(
            "  training steps in mixed precision ({})",
            r.mixed_precision
        );
    }
    println!(
        "  supervised step (stylecap train's: fwd+bwd+AdamW), {} pictures + {} style rows x {} \
         tokens: {:.3} s",
        b.batch, b.style_rows, b.tokens, r.train_step_s
    );
    let decoding = match b.beams {
        1 => "greedy generation".to_string(),
        n => format!("beam search ({n} beams)"),
    };
    println!(
        "  {decoding}, batch {} x {} tokens, KV cache: {:.3} s",
        b.batch, b.new_tokens, r.generate_s
    );
    println!(
        "  alignment step (stylecap align's: {} images x {} samples of {} tokens, reference \
         scoring, RLOO update): {:.3} s",
        b.batch, b.samples, b.new_tokens, r.rl_step_s
    );
    if r.rl_step_s > 0.0 {
        println!(
            "    of which sampling {:.3} s, reference {:.3} s, update {:.3} s",
            r.rl_sample_s, r.rl_reference_s, r.rl_update_s
        );
    }
    if let (Some(p), Some(m)) = (r.peak_rss_after_train_mib, r.rss_before_model_mib) {
        println!("  peak RSS after the training steps: {p:.0} MiB ({m:.0} MiB before the model)");
    }
    if let Some(p) = r.peak_rss_mib {
        println!("  peak RSS of the whole run: {p:.0} MiB");
    }
    Ok(())
}
