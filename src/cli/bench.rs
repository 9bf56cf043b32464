//! `stylecap bench`: parses the flags and prints what `crate::bench` measured.

use anyhow::Result;
use burn::prelude::*;
use clap::Args;

use crate::bench::{run as run_bench, BenchConfig};

#[derive(Args)]
pub struct BenchArgs {
    /// Timed repetitions of each measurement (after warm-up).
    #[arg(long, default_value_t = BenchConfig::default().runs)]
    pub runs: usize,
    /// Untimed warm-up repetitions before the timed ones.
    #[arg(long, default_value_t = BenchConfig::default().warmup)]
    pub warmup: usize,
    /// Images per batch (one caption each in the training step).
    #[arg(long, default_value_t = BenchConfig::default().batch)]
    pub batch: usize,
    /// Caption tokens per training example.
    #[arg(long, default_value_t = BenchConfig::default().tokens)]
    pub tokens: usize,
    /// Tokens generated per caption (greedy, KV cache, no early stop).
    #[arg(long, default_value_t = BenchConfig::default().new_tokens)]
    pub new_tokens: usize,
    /// Samples per image in the alignment step (rollout of `batch` images × this, then one
    /// update).
    #[arg(long, default_value_t = BenchConfig::default().samples)]
    pub samples: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs, base: Device) -> Result<()> {
    let b = BenchConfig {
        runs: args.runs,
        warmup: args.warmup,
        batch: args.batch,
        tokens: args.tokens,
        new_tokens: args.new_tokens,
        samples: args.samples,
    };
    let r = run_bench(&b, &base)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{}, {} CPU threads, median of {} runs",
        r.framework, r.threads, r.runs
    );
    println!(
        "  supervised step (stylecap train's: fwd+bwd+AdamW), batch {} x {} tokens: {:.3} s",
        b.batch, b.tokens, r.train_step_s
    );
    println!(
        "  greedy generation, batch {} x {} tokens, KV cache: {:.3} s",
        b.batch, b.new_tokens, r.generate_s
    );
    println!(
        "  alignment step (stylecap align's: {} images x {} samples of {} tokens, reference \
         scoring, RLOO update): {:.3} s",
        b.batch, b.samples, b.new_tokens, r.rl_step_s
    );
    if let (Some(p), Some(m)) = (r.peak_rss_after_train_mib, r.rss_before_model_mib) {
        println!("  peak RSS after the training steps: {p:.0} MiB ({m:.0} MiB before the model)");
    }
    Ok(())
}
