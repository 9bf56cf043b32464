//! The speed benchmark (`stylecap bench`): the product's own steps on a reference model, timed
//! as medians of repeated runs; `tools/bench_torch.py` times the same model and work in
//! PyTorch.
//!
//! - The supervised step is `stylecap train`'s: [`micro_step`] (preprocessing, the sharded
//!   forward and backward passes, the gradient sum) and the trainer's AdamW.
//! - The alignment step is `stylecap align`'s: [`rollout::sample`], the reference's
//!   log-probabilities and KL, [`update::rewards`], [`update::advantages`] and
//!   [`update::update_policy`] with the trainer's AdamW, at the default settings (RLOO, the
//!   encoder frozen and encoded once per step, the reference the policy's starting weights;
//!   with `lora_rank`, adapters over the reference). Two parts are left out because the
//!   PyTorch reference has none: the critic and content checker (a synthetic reward stands
//!   in), and the supervised anchor.
//! - Greedy generation (or beam search, `beams`) is `stylecap caption`'s [`generate`].

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
use crate::model::autocast::Autocast;
use crate::model::gpt2::Gpt2Config;
use crate::model::layers::without_init;
use crate::model::lora;
use crate::model::vision::VisionConfig;
use crate::model::vit::ViTConfig;
use crate::model::weights::{freeze_named, materialize};
use crate::model::{generate, Captioner, CaptionerConfig, DecodeOptions, Strategy, StyleConfig};
use crate::optim::{Accumulated, AdamW};
use crate::rng::Rng;
use crate::sft::batches::StepRows;
use crate::sft::step::micro_step;
use crate::sft::TrainConfig;
use crate::util::Precision;

/// The model and workload the benchmark times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The small benchmark model ([`bench_model_config`]), 16 pictures, 64-token captions.
    Small,
    /// Real scale: ViT-B/16 at 224 px + GPT-2 124M with cross-attention, vocabulary 50,257
    /// ([`vit_b16_gpt2_config`]); 8 pictures + 8 style rows of 32 tokens per supervised step,
    /// 8 pictures for generation and alignment.
    VitB16Gpt2,
}

impl Preset {
    pub fn model(self) -> CaptionerConfig {
        match self {
            Preset::Small => bench_model_config(),
            Preset::VitB16Gpt2 => vit_b16_gpt2_config(),
        }
    }

    /// The workload of this preset, timed `runs` times after `warmup`.
    pub fn workload(self) -> BenchConfig {
        match self {
            Preset::Small => BenchConfig::default(),
            Preset::VitB16Gpt2 => BenchConfig {
                preset: self,
                runs: 3,
                warmup: 1,
                batch: 8,
                style_rows: 8,
                tokens: 32,
                ..BenchConfig::default()
            },
        }
    }
}

/// The parts of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Train,
    Align,
    Generate,
}

/// What to time.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub preset: Preset,
    /// The parts to time (all when empty); a part left out reports 0 s.
    pub only: Vec<Part>,
    /// Shards of the supervised step, and of the alignment step's scoring and update
    /// (`data_parallel` of `stylecap train` and `stylecap align`).
    pub data_parallel: usize,
    /// Gradient checkpointing in the supervised step (`stylecap train`'s: blocks recomputed)
    /// and the alignment step (`stylecap align`'s: burn's balanced checkpointing).
    pub gradient_checkpointing: bool,
    /// Mixed precision of the supervised and alignment steps (`--mixed-precision` of
    /// `stylecap train` and `stylecap align`; generation's float type is `--dtype`).
    pub mixed_precision: Precision,
    /// Timed repetitions of each measurement (after warm-up).
    pub runs: usize,
    /// Untimed repetitions before the timed ones.
    pub warmup: usize,
    /// Pictures per batch (one caption each in the supervised step).
    pub batch: usize,
    /// Style-text rows added to each supervised step, each with a blank picture as
    /// `stylecap train` shows them.
    pub style_rows: usize,
    /// Caption tokens per training example.
    pub tokens: usize,
    /// Tokens generated per caption (no early stop).
    pub new_tokens: usize,
    /// Generation by beam search with this many beams (`stylecap caption --beams`); 1: greedy.
    pub beams: usize,
    /// Captions sampled per image in the alignment step.
    pub samples: usize,
    /// The alignment step trains LoRA adapters of this rank over the reference (`stylecap
    /// align --lora-rank`); 0: the whole decoder.
    pub lora_rank: usize,
}

impl BenchConfig {
    fn wants(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            preset: Preset::Small,
            only: Vec::new(),
            data_parallel: TrainConfig::default().data_parallel,
            gradient_checkpointing: false,
            mixed_precision: Precision::F32,
            runs: 10,
            warmup: 2,
            batch: 16,
            style_rows: 0,
            tokens: 64,
            new_tokens: 32,
            beams: 1,
            samples: 4,
            lora_rank: 0,
        }
    }
}

/// Medians in seconds, and memory in MiB.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub framework: String,
    /// The device's float type (`--dtype`).
    pub dtype: String,
    /// The matrix products' float type in the training steps (`--mixed-precision`).
    pub mixed_precision: Precision,
    pub preset: Preset,
    pub threads: usize,
    pub runs: usize,
    pub train_step_s: f64,
    /// Greedy generation, or beam search with `beams` beams.
    pub generate_s: f64,
    pub beams: usize,
    pub rl_step_s: f64,
    /// Where the alignment step's time goes: sampling (with encoding the pictures), the
    /// reference's log-probabilities, and the update (rewards, forward, backward, AdamW);
    /// each the median of its own over the timed runs.
    pub rl_sample_s: f64,
    pub rl_reference_s: f64,
    pub rl_update_s: f64,
    pub peak_rss_after_train_mib: Option<f64>,
    pub rss_before_model_mib: Option<f64>,
    /// The peak of the whole run (with `only = [Align]`: the alignment step's).
    pub peak_rss_mib: Option<f64>,
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

/// ViT-B/16 at 224 px (12 layers, 768 wide, 12 heads) and GPT-2 124M (12 layers, 768 wide,
/// 12 heads, 1024 positions, vocabulary 50,257) with cross-attention, no styles: the pair
/// users start from (`google/vit-base-patch16-224-in21k` + `gpt2`).
pub fn vit_b16_gpt2_config() -> CaptionerConfig {
    let vit = ViTConfig::new(224, 16, 768, 12, 12);
    let gpt2 = Gpt2Config::new(50257, 1024, 768, 12, 12);
    let mut cfg = CaptionerConfig::new(
        VisionConfig::Vit(vit),
        gpt2,
        50256,
        50256,
        StyleConfig::default(),
    );
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

/// The median of one phase over the timed runs (0 when none ran).
fn phase(runs: &[[f64; 3]], i: usize) -> f64 {
    if runs.is_empty() {
        return 0.0;
    }
    median(runs.iter().map(|r| r[i]).collect())
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
    ensure!(
        (1..=256).contains(&b.data_parallel),
        "--data-parallel is {}; allowed: 1 to 256",
        b.data_parallel
    );
    crate::model::autocast::check(b.mixed_precision, base)?;
    let threads = rayon::current_num_threads();
    let rss_before = peak_rss_mib();
    base.seed(0);
    // Checkpointing recomputes blocks in the supervised step, and is burn's balanced
    // checkpointing in the alignment step, as in `stylecap train` and `stylecap align`.
    let sft_device = base.clone().autodiff();
    let train_device = crate::tensor::autodiff_device(base, b.gradient_checkpointing);
    let cfg = b.preset.model();
    let side = cfg.encoder.image_size();
    let preprocess = PreprocessorConfig::square(side);
    let eot = cfg.decoder_start_token_id;
    // A LoRA alignment step adapts the reference itself: no second model.
    let own_policy = b.wants(Part::Train) || (b.wants(Part::Align) && b.lora_rank == 0);
    let mut model = own_policy.then(|| Captioner::new(cfg.clone(), &sft_device));

    // The supervised step, as `stylecap train` takes it at its defaults.
    let train = TrainConfig {
        data_parallel: b.data_parallel,
        ..TrainConfig::default()
    };
    let vocab = cfg.decoder.vocab_size;
    let blank = RgbImage::from_pixel(side as u32, side as u32, image::Rgb([255, 255, 255]));
    let mut images = pictures(b.batch, side as u32, 1);
    images.extend(std::iter::repeat_n(blank, b.style_rows));
    let rows = StepRows {
        tokens: (0..images.len())
            .map(|i| {
                (0..b.tokens - 1)
                    .map(|j| ((i * 131 + j * 17) % (vocab - 1) + 1) as u32)
                    .collect()
            })
            .collect(),
        styles: vec![0; images.len()],
        keys: vec![None; images.len()],
        images,
    };
    let mut optim = AdamW::new(train.optimizer.clone()).with_mixed_precision(b.mixed_precision);
    let mixed = Autocast::enter(b.mixed_precision);
    let train_s = if b.wants(Part::Train) {
        timed(b.warmup, b.runs, |_| {
            let mut acc = Accumulated::default();
            let m = model.take().expect("model");
            let (loss, _) = micro_step(
                &m,
                &rows,
                (train.data_parallel, b.gradient_checkpointing),
                &preprocess,
                eot,
                &sft_device,
                (&mut acc, 1, optim.loss_factor()),
                None,
                || (),
            )?;
            let (m, stats) = optim.update(m, acc, |_| train.lr);
            // f16's loss scaling may skip a step while it finds its scale, as in training.
            ensure!(
                loss.is_finite() && (stats.applied || optim.loss_scale.is_some()),
                "the loss diverged"
            );
            model = Some(m);
            Ok(())
        })?
    } else {
        0.0
    };
    let peak_train = peak_rss_mib();

    // The alignment step, as `stylecap align` takes it at its defaults (see the module docs).
    let align = AlignConfig {
        samples: b.samples,
        max_new_tokens: b.new_tokens,
        ptx_coef: 0.0,
        lora_rank: b.lora_rank,
        data_parallel: b.data_parallel,
        ..AlignConfig::default()
    };
    // As `stylecap align` starts: the reference is the policy's starting weights, and the
    // policy's encoder is frozen (or, with LoRA, everything but the adapters).
    let reference = b.wants(Part::Align).then(|| match align.lora() {
        Some(l) => {
            let reference = Captioner::new(cfg.clone(), base);
            let policy = lora::add_adapters(reference.clone(), &l, base);
            model = Some(lora::freeze_base(policy.to_device(&train_device).train()));
            reference
        }
        None => {
            let reference = model.take().expect("model").valid();
            let policy = reference.clone().to_device(&train_device).train();
            model = Some(freeze_named(policy, "", |n| n.starts_with("encoder.")));
            reference
        }
    });
    let pixels = preprocess.batch(&pictures(b.batch, side as u32, 2), base)?;
    let mut optim = AdamW::new(align.optimizer.clone()).with_mixed_precision(b.mixed_precision);
    let (mut baseline, mut stats, mut bad) =
        (MovingBaseline::default(), RunningStats::default(), 0);
    let mut phases: Vec<[f64; 3]> = Vec::new();
    let rl_s = if b.wants(Part::Align) {
        timed(b.warmup, b.runs, |i| {
            let t = Instant::now();
            let policy = model.take().expect("model");
            let opts = DecodeOptions {
                strategy: Strategy::Sample {
                    temperature: align.temperature,
                    top_k: 0,
                    top_p: align.top_p,
                },
                max_new_tokens: align.max_new_tokens,
                seed: i as u64,
                ..DecodeOptions::default()
            };
            let r = rollout::sample(
                &policy,
                pixels.clone(),
                None,
                align.samples,
                &opts,
                !align.train_encoder,
            );
            let sampled = t.elapsed().as_secs_f64();
            let reference = reference.as_ref().expect("the reference");
            let ref_lp = rollout::reference_logprobs(reference, &r, align.data_parallel);
            let scored = t.elapsed().as_secs_f64();
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
            ensure!(
                log.skipped == 0 || optim.loss_scale.is_some(),
                "the update skipped a batch"
            );
            model = Some(policy);
            if i >= b.warmup {
                let done = t.elapsed().as_secs_f64();
                phases.push([sampled, scored - sampled, done - scored]);
            }
            Ok(())
        })?
    } else {
        0.0
    };

    drop(mixed);

    // Greedy generation (or beam search), as `stylecap caption` runs it.
    let infer = without_init(|| Captioner::new(cfg, base));
    if b.wants(Part::Generate) {
        materialize(&infer);
    }
    let opts = DecodeOptions {
        max_new_tokens: b.new_tokens,
        strategy: match b.beams {
            0 | 1 => Strategy::Greedy,
            n => Strategy::Beam {
                num_beams: n,
                length_penalty: 1.0,
            },
        },
        ..Default::default()
    };
    let generate_s = if b.wants(Part::Generate) {
        timed(b.warmup, b.runs, |_| {
            let out = generate(&infer, pixels.clone(), None, &opts)?;
            ensure!(
                out[0].tokens.len() == b.new_tokens,
                "generation stopped early"
            );
            Ok(())
        })?
    } else {
        0.0
    };
    Ok(BenchResult {
        framework: format!("stylecap (burn, {base:?})"),
        dtype: crate::util::float_type(base),
        mixed_precision: b.mixed_precision,
        preset: b.preset,
        threads,
        runs: b.runs,
        train_step_s: train_s,
        generate_s,
        beams: b.beams,
        rl_step_s: rl_s,
        rl_sample_s: phase(&phases, 0),
        rl_reference_s: phase(&phases, 1),
        rl_update_s: phase(&phases, 2),
        peak_rss_after_train_mib: peak_train,
        rss_before_model_mib: rss_before,
        peak_rss_mib: peak_rss_mib(),
    })
}

#[cfg(test)]
mod tests {
    use super::Preset;
    use crate::sft::shards::picture_cost;

    /// The cost model that cuts shards weighs a picture as its products do: 197 states
    /// through 12 layers of ViT-B against GPT-2's 12 layers and 50,257-word head per token
    /// (about 140 tokens), the small preset's 65 states through 4 narrow layers (about 25).
    #[test]
    fn a_picture_weighs_what_its_products_do() {
        let small = picture_cost(&Preset::Small.model());
        let large = picture_cost(&Preset::VitB16Gpt2.model());
        assert!((120..=160).contains(&large), "{large}");
        assert!((15..=35).contains(&small), "{small}");
    }
}
