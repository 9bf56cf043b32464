//! The speed benchmark (`stylecap bench`): the product's own steps on a reference model, timed
//! as medians of repeated runs; `tools/bench_torch.py` times the same model and work in
//! PyTorch.
//!
//! - The supervised step is `stylecap train`'s: [`micro_step`] (preprocessing, the sharded
//!   forward and backward passes, the gradient sum) and the trainer's AdamW.
//! - The alignment step is `stylecap align`'s: [`rollout::sample`], the reference's
//!   log-probabilities and KL, [`update::rewards`], [`update::advantages`] and
//!   [`update::update_policy`] with the trainer's AdamW, at the default settings (RLOO). Two
//!   parts are left out because the PyTorch reference has none: the critic and content
//!   checker (a synthetic reward stands in), and the supervised anchor.
//! - Greedy generation is `stylecap caption`'s [`generate`].

use std::time::Instant;

use anyhow::{ensure, Result};
use burn::prelude::*;
use image::RgbImage;
use serde::Serialize;

use crate::align::advantage::MovingBaseline;
use crate::align::config::AlignConfig;
use crate::align::reward::RunningStats;
use crate::align::rollout;
use crate::align::update::{self, Update};
use crate::data::image::PreprocessorConfig;
use crate::model::gpt2::Gpt2Config;
use crate::model::vision::VisionConfig;
use crate::model::vit::ViTConfig;
use crate::model::{generate, Captioner, CaptionerConfig, DecodeOptions, Strategy, StyleConfig};
use crate::optim::{Accumulated, AdamW};
use crate::rng::Rng;
use crate::sft::batches::StepRows;
use crate::sft::step::micro_step;
use crate::sft::TrainConfig;

/// What to time.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Timed repetitions of each measurement (after warm-up).
    pub runs: usize,
    /// Untimed repetitions before the timed ones.
    pub warmup: usize,
    /// Images per batch (one caption each in the supervised step).
    pub batch: usize,
    /// Caption tokens per training example.
    pub tokens: usize,
    /// Tokens generated per caption (no early stop).
    pub new_tokens: usize,
    /// Captions sampled per image in the alignment step.
    pub samples: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            runs: 10,
            warmup: 2,
            batch: 16,
            tokens: 64,
            new_tokens: 32,
            samples: 4,
        }
    }
}

/// Medians in seconds, and memory in MiB.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub framework: String,
    pub threads: usize,
    pub runs: usize,
    pub train_step_s: f64,
    pub generate_s: f64,
    pub rl_step_s: f64,
    pub peak_rss_after_train_mib: Option<f64>,
    pub rss_before_model_mib: Option<f64>,
}

/// The benchmark model: ViT (64×64 images, patch 8, d=192, 4 layers, 4 heads) and a GPT-2
/// decoder (4 layers, d=256, 4 heads, vocab 8192) with cross-attention, no styles.
pub fn bench_model_config() -> CaptionerConfig {
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

/// Seeded noise pictures.
fn pictures(n: usize, size: u32, seed: u64) -> Vec<RgbImage> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            RgbImage::from_fn(size, size, |_, _| {
                image::Rgb([0, 0, 0].map(|_: u8| rng.below(256) as u8))
            })
        })
        .collect()
}

/// Times `f` `warmup + runs` times; the median of the timed runs.
fn timed(warmup: usize, runs: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let t = Instant::now();
        f(i)?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(median(times))
}

/// Runs the benchmark on `base` (the plain device).
pub fn run(b: &BenchConfig, base: &Device) -> Result<BenchResult> {
    ensure!(b.runs > 0, "bench needs at least one timed run");
    ensure!(
        b.batch > 0 && b.tokens > 1 && b.new_tokens > 0 && b.samples > 1,
        "bench needs a batch, captions of at least 2 tokens, new tokens and 2 samples"
    );
    let threads = rayon::current_num_threads();
    let rss_before = peak_rss_mib();
    base.seed(0);
    let train_device = base.clone().autodiff();
    let cfg = bench_model_config();
    let preprocess = PreprocessorConfig::square(64);
    let eot = cfg.decoder_start_token_id;
    let mut model = Some(Captioner::new(cfg.clone(), &train_device));

    // The supervised step, as `stylecap train` takes it at its defaults.
    let train = TrainConfig::default();
    let vocab = cfg.decoder.vocab_size;
    let rows = StepRows {
        images: pictures(b.batch, 64, 1),
        tokens: (0..b.batch)
            .map(|i| {
                (0..b.tokens - 1)
                    .map(|j| ((i * 131 + j * 17) % (vocab - 1) + 1) as u32)
                    .collect()
            })
            .collect(),
        styles: vec![0; b.batch],
    };
    let mut optim = AdamW::new(train.optimizer.clone());
    let train_s = timed(b.warmup, b.runs, |_| {
        let mut acc = Accumulated::default();
        let m = model.take().expect("model");
        let (loss, _) = micro_step(
            &m,
            &rows,
            train.data_parallel,
            &preprocess,
            eot,
            &train_device,
            (&mut acc, 1),
            || (),
        )?;
        ensure!(
            loss.is_finite() && acc.global_norm().is_finite(),
            "the loss diverged"
        );
        model = Some(optim.update(m, acc, |_| train.lr).0);
        Ok(())
    })?;
    let peak_train = peak_rss_mib();

    // The alignment step, as `stylecap align` takes it at its defaults (see the module docs).
    let align = AlignConfig {
        samples: b.samples,
        max_new_tokens: b.new_tokens,
        ptx_coef: 0.0,
        ..AlignConfig::default()
    };
    let reference = Captioner::new(cfg.clone(), base);
    let pixels = preprocess.batch(&pictures(b.batch, 64, 2), base)?;
    let mut optim = AdamW::new(align.optimizer.clone());
    let (mut baseline, mut stats, mut bad) =
        (MovingBaseline::default(), RunningStats::default(), 0);
    let rl_s = timed(b.warmup, b.runs, |i| {
        let policy = model.take().expect("model");
        let opts = DecodeOptions {
            strategy: Strategy::Sample {
                temperature: align.temperature,
                top_k: 0,
                top_p: align.top_p,
            },
            max_new_tokens: align.max_new_tokens,
            seed: i as u64,
        };
        let r = rollout::sample(
            &policy,
            pixels.clone(),
            None,
            align.samples,
            &opts,
            &train_device,
        );
        let ref_lp = rollout::reference_logprobs(&reference, &r);
        let kls = rollout::caption_kls(align.kl_estimator, &r.old_logprobs, &ref_lp);
        let scores: Vec<f32> = r
            .tokens
            .iter()
            .map(|t| synthetic_reward(t, vocab))
            .collect();
        let rewards = update::rewards(&align, &scores, &kls, align.beta, &mut stats);
        let advantages = update::advantages(&align, &rewards, &mut baseline, None);
        let (policy, log) = update::update_policy(
            policy,
            &mut optim,
            &Update {
                config: &align,
                rollout: &r,
                advantages: &advantages,
                ref_logprobs: &ref_lp,
                anchor: None,
                beta: align.beta,
                step: i,
            },
            &mut bad,
            &train_device,
        )?;
        ensure!(log.skipped == 0, "the update skipped a batch");
        model = Some(policy);
        Ok(())
    })?;

    // Greedy generation, as `stylecap caption` runs it.
    let infer = Captioner::new(cfg, base);
    let opts = DecodeOptions {
        max_new_tokens: b.new_tokens,
        ..Default::default()
    };
    let generate_s = timed(b.warmup, b.runs, |_| {
        let out = generate(&infer, pixels.clone(), None, &opts)?;
        ensure!(
            out[0].tokens.len() == b.new_tokens,
            "generation stopped early"
        );
        Ok(())
    })?;
    Ok(BenchResult {
        framework: format!("stylecap (burn, {base:?})"),
        threads,
        runs: b.runs,
        train_step_s: train_s,
        generate_s,
        rl_step_s: rl_s,
        peak_rss_after_train_mib: peak_train,
        rss_before_model_mib: rss_before,
    })
}
