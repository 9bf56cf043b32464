//! The GPU path against the CPU's, on a machine with a GPU (`tools/gpu_check.sh` runs these):
//!
//! ```sh
//! STYLECAP_TEST_DEVICE=vulkan cargo test --release --features vulkan --test gpu -- --ignored --nocapture
//! ```
//!
//! Greedy and beam-search captions from transformers' fixture give the CPU's tokens, with and
//! without repetition limits; sampled
//! captions carry the model's log-probabilities (what the RL stage takes as log π); an RL
//! update's loss and gradients match the CPU's on the same rollout; the fused ops' device
//! forms give the CPU's values and gradients.

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use common::{rollout_captions, tiny_captioner};
use stylecap::align::advantage::Algo;
use stylecap::align::config::AlignConfig;
use stylecap::align::rollout::{self, Rollout};
use stylecap::align::update::{batch_gradients, Update};
use stylecap::model::generate::{generate, DecodeOptions, Strategy};
use stylecap::model::repeats::Repeats;
use stylecap::model::weights::SafetensorsFile;
use stylecap::model::Captioner;

const NEEDS: &str =
    "needs a GPU: STYLECAP_TEST_DEVICE=vulkan|wgpu|cuda and a build with that feature";

/// A fixture folder, relative to the working directory: cargo runs tests from the package
/// root, and tools/gpu_check.sh runs a copy of this binary from the repository's root on
/// another machine.
fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new("tests/fixtures").join(name)
}

fn reference(name: &str) -> SafetensorsFile {
    SafetensorsFile::open(&fixture(name).join("reference.safetensors")).expect("fixture reference")
}

fn gpu() -> Device {
    let name = std::env::var("STYLECAP_TEST_DEVICE").expect(NEEDS);
    stylecap::util::device(&name, stylecap::util::Precision::F32).expect(NEEDS)
}

#[test]
#[ignore = "needs a GPU (STYLECAP_TEST_DEVICE)"]
fn greedy_and_beam_tokens_match_the_cpu() {
    let (cpu, gpu) = (Device::flex(), gpu());
    let r = reference("vit_gpt2");
    let pixels = r.tensor::<4>("pixel_values", &cpu).unwrap();
    let beams = Strategy::Beam {
        num_beams: 3,
        length_penalty: 1.0,
    };
    let limited = Repeats {
        penalty: 1.3,
        no_repeat_ngram: 2,
    };
    for (name, strategy, repeats) in [
        ("greedy", Strategy::Greedy, Repeats::default()),
        ("3 beams", beams.clone(), Repeats::default()),
        ("greedy, repetition limits", Strategy::Greedy, limited),
        ("3 beams, repetition limits", beams, limited),
    ] {
        let opts = DecodeOptions {
            strategy,
            max_new_tokens: 16,
            seed: 0,
            repeats,
        };
        let on = |device: &Device| {
            let model = Captioner::load(&fixture("vit_gpt2"), device).unwrap();
            generate(&model, pixels.clone().to_device(device), None, &opts).unwrap()
        };
        let (want, got) = (on(&cpu), on(&gpu));
        let mut worst = 0f32;
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w.tokens, g.tokens, "{name}: caption {i}");
            for (a, b) in w.logprobs.iter().zip(&g.logprobs) {
                worst = worst.max((a - b).abs());
            }
        }
        println!(
            "{name}: {} captions, the CPU's tokens; log-probs within {worst:.2e}",
            got.len()
        );
        assert!(worst <= 1e-3, "{name}: log-probabilities differ by {worst}");
    }
}

#[test]
#[ignore = "needs a GPU (STYLECAP_TEST_DEVICE)"]
fn sampled_tokens_carry_the_models_log_probabilities() {
    let gpu = gpu();
    let model = Captioner::load(&fixture("vit_gpt2"), &gpu).unwrap();
    let pixels = reference("vit_gpt2")
        .tensor::<4>("pixel_values", &gpu)
        .unwrap();
    let opts = DecodeOptions {
        strategy: Strategy::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        },
        max_new_tokens: 12,
        seed: 3,
        ..DecodeOptions::default()
    };
    let r = rollout::sample(&model, pixels, None, 4, &opts, true);
    let teacher_forced = rollout::reference_logprobs(&model, &r, 1);
    let mut worst = 0f32;
    for (old, re) in r.old_logprobs.iter().zip(&teacher_forced) {
        assert_eq!(old.len(), re.len());
        for (a, b) in old.iter().zip(re) {
            worst = worst.max((a - b).abs());
        }
    }
    let distinct = {
        let mut t = r.tokens.clone();
        t.sort();
        t.dedup();
        t.len()
    };
    println!(
        "sampling: {} captions ({distinct} distinct); log-probs within {worst:.2e} of teacher forcing",
        r.tokens.len()
    );
    assert!(distinct > 1, "sampled captions all alike");
    assert!(worst <= 1e-3, "sampled log-probabilities differ by {worst}");
}

#[test]
#[ignore = "needs a GPU (STYLECAP_TEST_DEVICE)"]
fn an_rl_update_gives_the_cpus_loss_and_gradients() {
    let cpu = Device::flex();
    let gpu = gpu();
    let model = tiny_captioner("vit", &["factual", "noir"], &cpu);
    let pixels = Tensor::<4>::random([3, 3, 16, 16], Distribution::Normal(0.0, 1.0), &cpu);
    let tokens: Vec<Vec<u32>> = rollout_captions();
    let old: Vec<Vec<f32>> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (0..t.len())
                .map(|j| -2.0 - 0.1 * ((i + j) % 4) as f32)
                .collect()
        })
        .collect();
    let refs: Vec<Vec<f32>> = old
        .iter()
        .map(|r| r.iter().map(|v| v - 0.2).collect())
        .collect();
    let advantages = [0.5f32, -1.0, 1.5, -0.25, 0.75, -1.5];
    let rows: Vec<usize> = (0..6).collect();
    for algo in [Algo::Rloo, Algo::Grpo, Algo::Ppo] {
        let config = AlignConfig {
            algo,
            data_parallel: 1,
            max_ratio: 1e6,
            ..AlignConfig::default()
        };
        let on = |device: &Device| {
            let train = device.clone().autodiff();
            let rollout = Rollout {
                pixels: pixels.clone().to_device(device),
                encoder_states: None,
                image_of_row: vec![0, 0, 1, 1, 2, 2],
                styles: Some(vec![1, 1, 0, 0, 1, 1]),
                tokens: tokens.clone(),
                old_logprobs: old.clone(),
            };
            let u = Update {
                config: &config,
                rollout: &rollout,
                advantages: &advantages,
                ref_logprobs: &refs,
                anchor: None,
                beta: 0.1,
                step: 0,
            };
            let policy = model.clone().to_device(&train).train();
            batch_gradients(&policy, &u, &rows, &train, 1.0).expect("within the ratio bound")
        };
        let (want, got) = (on(&cpu), on(&gpu));
        let loss_diff = (want.value - got.value).abs();
        let (wanted, gotten) = (want.acc.into_host(), got.acc.into_host());
        assert_eq!(
            wanted.grads().keys().collect::<Vec<_>>(),
            gotten.grads().keys().collect::<Vec<_>>()
        );
        let mut worst = 0f32;
        for (name, g) in wanted.grads() {
            let scale = g.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let diff = gotten.grads()[name]
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            worst = worst.max(diff / scale);
        }
        println!(
            "{algo:?} update: loss {} on the CPU, {} on the GPU (|Δ| {loss_diff:.2e}); gradients within {worst:.2e} of each tensor's largest",
            want.value, got.value
        );
        assert!(
            loss_diff <= 1e-4 * want.value.abs().max(1.0),
            "{algo:?}: loss differs by {loss_diff}"
        );
        assert!(
            worst <= 1e-3,
            "{algo:?}: gradients differ by {worst} (relative)"
        );
    }
}

/// The device forms of the fused ops (the LM head's cross-entropy and token log-probabilities,
/// the GELUs) give the CPU's host forms' values and gradients.
#[test]
#[ignore = "needs a GPU (STYLECAP_TEST_DEVICE)"]
fn fused_ops_on_the_device_match_the_cpu() {
    use stylecap::model::layers::Activation;
    use stylecap::model::lm_head;
    use stylecap::tensor::floats;

    let cpu = Device::flex();
    let gpu = gpu();
    let (b, t, d, v) = (3, 5, 16, 61);
    let hidden = Tensor::<3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &cpu);
    let weight = Tensor::<2>::random([v, d], Distribution::Normal(0.0, 0.5), &cpu);
    let targets: Vec<i64> = (0..b * t).map(|i| (i * 7 % v) as i64).collect();
    let mask: Vec<f32> = (0..b * t).map(|i| (i % 4 != 3) as u8 as f32).collect();
    let on = |device: &Device| -> Vec<(&'static str, Vec<f32>)> {
        let ad = device.clone().autodiff();
        let h = Tensor::<3>::from_data(hidden.to_data(), &ad).require_grad();
        let w = Tensor::<2>::from_data(weight.to_data(), &ad).require_grad();
        let targets = Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [b, t]), &ad);
        let mask = Tensor::<2>::from_data(TensorData::new(mask.clone(), [b, t]), &ad);
        let ce = lm_head::cross_entropy(
            Activation::GeluTanh.forward(h.clone()),
            w.clone(),
            targets.clone(),
            mask.clone(),
        );
        let lp = lm_head::token_logprobs(
            Activation::Gelu.forward(h.clone()),
            w.clone(),
            targets,
            mask,
            true,
        );
        let quick = Activation::QuickGelu.forward(h.clone());
        let loss = ce.clone() + (lp.picked.clone() * 0.3).sum() + (quick.clone() * 0.01).sum();
        let grads = loss.backward();
        vec![
            ("cross-entropy", floats(ce)),
            ("log-probabilities", floats(lp.picked)),
            ("entropies", floats(lp.entropy)),
            ("quick_gelu", floats(quick)),
            ("hidden's gradient", floats(h.grad(&grads).unwrap())),
            ("weight's gradient", floats(w.grad(&grads).unwrap())),
        ]
    };
    for ((what, want), (_, got)) in on(&cpu).into_iter().zip(on(&gpu)) {
        let scale = want.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        let diff = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        println!(
            "{what}: GPU within {:.2e} of the CPU's (relative to its largest)",
            diff / scale
        );
        assert!(
            diff <= 1e-3 * scale,
            "{what}: GPU differs from CPU by {diff}"
        );
    }
}
