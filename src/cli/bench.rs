//! `stylecap bench`: medians of repeated training steps and greedy generations on the
//! reference benchmark model (tools/bench_torch.py times the same model in PyTorch).

use std::time::Instant;

use anyhow::Result;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Args;

use crate::align::advantage::leave_one_out;
use crate::align::loss::pg_loss;
use crate::model::generate::sample_or_greedy;
use crate::model::gpt2::Gpt2Config;
use crate::model::score::token_logprobs;
use crate::model::vision::VisionConfig;
use crate::model::vit::ViTConfig;
use crate::model::{generate, Captioner, CaptionerConfig, DecodeOptions, Strategy, StyleConfig};
use crate::train::step::{teacher_forcing, train_step, CaptionBatch};

#[derive(Args)]
pub struct BenchArgs {
    /// Timed repetitions of each measurement (after warm-up).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Untimed warm-up repetitions before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Images per batch (one caption each in the training step).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Caption tokens per training example.
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// Tokens generated per caption (greedy, KV cache, no early stop).
    #[arg(long, default_value_t = 32)]
    pub new_tokens: usize,
    /// Samples per image in the RL step (rollout of `batch` images × this, then one update).
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
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

/// The process's peak resident memory so far (VmHWM), in MiB; None off Linux.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A synthetic reward, cheap and deterministic: the share of a caption's tokens in the lower
/// half of the vocabulary. The benchmark times the model, not a critic.
fn synthetic_reward(tokens: &[u32], vocab: usize) -> f32 {
    let low = tokens.iter().filter(|&&t| (t as usize) < vocab / 2).count();
    low as f32 / tokens.len().max(1) as f32
}

/// One RL step as the alignment trainer takes it (RLOO, KL in the reward): sample `k`
/// captions per image with the current policy (nucleus sampling, KV cache), score them under
/// the frozen reference, then one policy-gradient update with AdamW. Returns the loss.
#[allow(clippy::too_many_arguments)]
fn rl_step(
    policy: Captioner,
    reference: &Captioner,
    optim: &mut burn::optim::ModuleOptimizer,
    pixels: &Tensor<4>,
    k: usize,
    new_tokens: usize,
    seed: u64,
    base: &Device,
) -> (Captioner, f32) {
    let train_device = pixels.device();
    let b = pixels.dims()[0];
    let rows: Vec<i64> = (0..b as i64)
        .flat_map(|i| std::iter::repeat_n(i, k))
        .collect();
    let n = rows.len();
    let select = |d: &Device| Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [n]), d);
    let plain_pixels = pixels.clone().to_device(base);
    let opts = DecodeOptions {
        strategy: Strategy::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        },
        max_new_tokens: new_tokens,
        seed,
    };
    let frozen = policy.clone().valid();
    let encoded = frozen.encode(plain_pixels.clone()).select(select(base));
    let gens = sample_or_greedy(&frozen, &encoded, None, n, &opts);
    let tokens: Vec<&[u32]> = gens.iter().map(|g| g.tokens.as_slice()).collect();

    let ref_encoded = reference.encode(plain_pixels).select(select(base));
    let (ref_lp, _, _) = token_logprobs(reference, &ref_encoded, None, &tokens, false, base);
    let ref_lp = crate::model::score::to_rows(ref_lp, &tokens);
    let vocab = policy.decoder.vocab_size();
    let rewards: Vec<f32> = gens
        .iter()
        .zip(&ref_lp)
        .map(|(g, r)| {
            let kl: f32 = g.logprobs.iter().zip(r).map(|(a, b)| a - b).sum();
            synthetic_reward(&g.tokens, vocab) - 0.05 * kl
        })
        .collect();
    let adv = leave_one_out(&rewards, k);

    let encoded = policy.encode(pixels.clone()).select(select(&train_device));
    let (logp, mask, _) = token_logprobs(&policy, &encoded, None, &tokens, true, &train_device);
    let adv = Tensor::<2>::from_data(TensorData::new(adv, [n, 1]), &train_device);
    let loss = pg_loss(logp, mask, adv);
    let grads = loss.backward();
    let value = loss.into_scalar::<f32>();
    let grads = burn::optim::GradientsParams::from_grads(grads, &policy);
    (optim.step(1e-5, policy, grads), value)
}

pub fn run(args: BenchArgs, base: Device) -> Result<()> {
    let threads = rayon::current_num_threads();
    let rss_before = peak_rss_mib();
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

    let peak_train = peak_rss_mib();

    let reference = Captioner::new(cfg.clone(), &base);
    let mut rl_times = Vec::new();
    for i in 0..args.warmup + args.runs {
        let t = Instant::now();
        let (m, loss) = rl_step(
            model,
            &reference,
            &mut optim,
            &batch.pixel_values,
            args.samples,
            args.new_tokens,
            i as u64,
            &base,
        );
        model = m;
        assert!(loss.is_finite());
        if i >= args.warmup {
            rl_times.push(t.elapsed().as_secs_f64());
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
    let (train, gen, rl) = (median(train_times), median(gen_times), median(rl_times));
    if args.json {
        println!(
            "{}",
            serde_json::json!({"framework": format!("stylecap (burn, {base:?})"), "threads": threads, "runs": args.runs,
                "train_step_s": train, "generate_s": gen, "rl_step_s": rl,
                "peak_rss_after_train_mib": peak_train, "rss_before_model_mib": rss_before})
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
        println!(
            "  RL step ({b} images x {} samples of {} tokens, reference scoring, update): {rl:.3} s",
            args.samples, args.new_tokens
        );
        if let (Some(p), Some(r)) = (peak_train, rss_before) {
            println!(
                "  peak RSS after the training steps: {p:.0} MiB ({r:.0} MiB before the model)"
            );
        }
    }
    Ok(())
}
