//! `stylecap bench`: medians of repeated training steps and greedy generations on the
//! reference benchmark model (tools/bench_torch.py times the same model in PyTorch).

use std::time::Instant;

use anyhow::Result;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Args;

use crate::model::gpt2::Gpt2Config;
use crate::model::vision::VisionConfig;
use crate::model::vit::ViTConfig;
use crate::model::{generate, Captioner, CaptionerConfig, DecodeOptions, StyleConfig};
use crate::train::step::{teacher_forcing, train_step, CaptionBatch};

#[derive(Args)]
pub struct BenchArgs {
    /// Timed repetitions of each measurement (after warm-up).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Caption tokens per training example.
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// Tokens generated per caption (greedy, KV cache, no early stop).
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The benchmark model of the core issue: ViT (64×64 images, patch 8, d=192, 4 layers,
/// 4 heads) and a GPT-2 decoder (4 layers, d=256, 4 heads, vocab 8192) with cross-attention.
pub fn bench_config() -> CaptionerConfig {
    let vit = ViTConfig::new(64, 8, 192, 4, 4);
    let gpt2 = Gpt2Config::new(8192, 128, 256, 4, 4);
    let mut cfg = CaptionerConfig::new(VisionConfig::Vit(vit), gpt2, 0, 0, StyleConfig::default());
    // No end token: every caption runs the full length, as in the PyTorch reference.
    cfg.eos_token_id = None;
    cfg
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(args: BenchArgs, base: Device) -> Result<()> {
    let threads = rayon::current_num_threads();
    base.seed(0);
    let train_device = base.clone().autodiff();
    let cfg = bench_config();
    let mut model = Captioner::new(cfg.clone(), &train_device);
    let b = args.batch;
    let captions: Vec<Vec<u32>> = (0..b)
        .map(|i| {
            (0..args.tokens - 1)
                .map(|j| ((i * 131 + j * 17) % 8191 + 1) as u32)
                .collect()
        })
        .collect();
    let (input_ids, targets, mask) = teacher_forcing(&captions, 0, 0, 0, &train_device);
    let batch = CaptionBatch {
        pixel_values: Tensor::random(
            [b, 3, 64, 64],
            Distribution::Normal(0.0, 1.0),
            &train_device,
        ),
        styles: None,
        input_ids,
        targets,
        mask,
    };
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
    let mut train_times = Vec::new();
    for i in 0..args.warmup + args.runs {
        let t = Instant::now();
        let (m, loss) = train_step(model, &mut optim, &batch, 1e-4);
        model = m;
        assert!(loss.is_finite());
        if i >= args.warmup {
            train_times.push(t.elapsed().as_secs_f64());
        }
    }

    let infer = Captioner::new(cfg, &base);
    let pixels = Tensor::<4>::random([b, 3, 64, 64], Distribution::Normal(0.0, 1.0), &base);
    let opts = DecodeOptions {
        max_new_tokens: args.new_tokens,
        ..Default::default()
    };
    let mut gen_times = Vec::new();
    for i in 0..args.warmup + args.runs {
        let t = Instant::now();
        let out = generate(&infer, pixels.clone(), None, &opts)?;
        assert_eq!(out[0].tokens.len(), args.new_tokens);
        if i >= args.warmup {
            gen_times.push(t.elapsed().as_secs_f64());
        }
    }
    let (train, gen) = (median(train_times), median(gen_times));
    if args.json {
        println!(
            "{}",
            serde_json::json!({"framework": format!("stylecap (burn, {base:?})"), "threads": threads, "runs": args.runs,
                "train_step_s": train, "generate_s": gen})
        );
    } else {
        println!(
            "stylecap (burn, {base:?}), {threads} CPU threads, median of {} runs",
            args.runs
        );
        println!(
            "  train step (fwd+bwd+AdamW), batch {b} x {} tokens: {train:.3} s",
            args.tokens
        );
        println!(
            "  greedy generation, batch {b} x {} tokens, KV cache: {gen:.3} s",
            args.new_tokens
        );
    }
    Ok(())
}
