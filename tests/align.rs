//! Alignment: the policy-gradient estimators against analytic gradients on a toy policy, PPO's
//! clipping, a short run on tiny models that leaves the reference untouched, a killed run
//! that resumes to the uninterrupted one, alignment on a caption dataset without scene
//! graphs, and the `clip` content reward (and the evaluation's CLIP scores).

mod common;

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use common::{fixture, reference, scratch};
use stylecap::align::advantage::Algo;
use stylecap::align::config::AlignConfig;
use stylecap::align::loss::{pg_loss, ppo_loss};
use stylecap::align::reward::{Clip, ContentReward, ContentRewardKind, Picture};
use stylecap::align::trainer::Aligner;
use stylecap::data::synth::{synth, SynthConfig};
use stylecap::model::lora::is_adapter_param;
use stylecap::model::weights::{read_named, Values};
use stylecap::rng::Rng;
use stylecap::run::RunOptions;
use stylecap::world::WorldConfig;

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// A categorical policy over 4 tokens: the REINFORCE estimate from sampled tokens converges
/// to the analytic gradient of the expected reward, ∂E[r]/∂θ_j = π_j (r_j − E[r]).
#[test]
fn reinforce_gradient_matches_the_analytic_one() {
    let _turn = common::serial();
    let device = Device::flex().autodiff();
    let theta = [0.5f32, -1.0, 0.2, 1.0];
    let reward = [1.0f32, 0.0, 0.5, 0.2];
    let pi: Vec<f32> = host(softmax(
        Tensor::<1>::from_data(TensorData::new(theta.to_vec(), [4]), &Device::flex()),
        0,
    ));
    let expected_r: f32 = pi.iter().zip(&reward).map(|(p, r)| p * r).sum();
    let analytic: Vec<f32> = (0..4).map(|j| pi[j] * (reward[j] - expected_r)).collect();

    let n = 20000;
    let mut rng = Rng::new(5);
    let samples: Vec<usize> = (0..n)
        .map(|_| {
            let u = rng.unit();
            let mut acc = 0.0;
            (0..4)
                .find(|&j| {
                    acc += pi[j];
                    u < acc
                })
                .unwrap_or(3)
        })
        .collect();
    let logits =
        Tensor::<2>::from_data(TensorData::new(theta.to_vec(), [1, 4]), &device).require_grad();
    let logp_all = log_softmax(logits.clone(), 1).expand([n, 4]);
    let idx = Tensor::<2, Int>::from_data(
        TensorData::new(
            samples.iter().map(|&s| s as i64).collect::<Vec<_>>(),
            [n, 1],
        ),
        &device,
    );
    let logp = logp_all.gather(1, idx); // [n, 1]: one token per "caption"
    let adv = Tensor::<2>::from_data(
        TensorData::new(
            samples.iter().map(|&s| reward[s]).collect::<Vec<_>>(),
            [n, 1],
        ),
        &device,
    );
    let mask = Tensor::<2>::ones([n, 1], &device);
    let loss = pg_loss(logp, mask, adv);
    let grad = host(logits.grad(&loss.backward()).unwrap());
    for j in 0..4 {
        // The loss is −estimate, so its gradient is −∇E[r].
        assert!(
            (-grad[j] - analytic[j]).abs() < 0.01,
            "θ_{j}: estimate {} vs analytic {}",
            -grad[j],
            analytic[j]
        );
    }
}

/// Gradient of the PPO loss with respect to the log-probability of one token.
fn ppo_grad(ratio: f32, advantage: f32) -> f32 {
    let device = Device::flex().autodiff();
    let logp = Tensor::<2>::from_data(TensorData::new(vec![ratio.ln() - 1.0], [1, 1]), &device)
        .require_grad();
    let old = Tensor::<2>::from_data(TensorData::new(vec![-1.0f32], [1, 1]), &device);
    let mask = Tensor::<2>::ones([1, 1], &device);
    let adv = Tensor::<2>::from_data(TensorData::new(vec![advantage], [1, 1]), &device);
    let loss = ppo_loss(logp.clone(), old, mask, adv, 0.2);
    host(logp.grad(&loss.backward()).unwrap())[0]
}

#[test]
fn ppo_gives_no_gradient_outside_the_clip_on_the_clipped_side() {
    let _turn = common::serial();
    // Positive advantage, ratio above 1 + ε: clipped, no gradient.
    assert_eq!(ppo_grad(1.5, 1.0), 0.0);
    // Negative advantage, ratio below 1 − ε: clipped, no gradient.
    assert_eq!(ppo_grad(0.5, -1.0), 0.0);
    // Inside the region, or outside on the unclipped side: the plain ratio gradient −ρA.
    assert!((ppo_grad(1.1, 1.0) + 1.1).abs() < 1e-5);
    assert!((ppo_grad(1.5, -1.0) - 1.5).abs() < 1e-5);
    assert!((ppo_grad(0.5, 1.0) + 0.5).abs() < 1e-5);
}

#[test]
fn a_short_alignment_run_trains_the_policy_and_never_the_reference() {
    let (base, critic) = common::tiny_base_and_critic("align", 4);
    let _turn = common::serial();
    let device = Device::flex();
    let out = scratch("align", "run");
    let _ = std::fs::remove_dir_all(&out);
    let config = AlignConfig {
        base: base.clone(),
        critic,
        steps: 2,
        images_per_step: 2,
        samples: 2,
        max_new_tokens: 8,
        eval_every: 2,
        eval_images: 2,
        lr: 1e-2,
        ..AlignConfig::default()
    };
    let mut aligner = Aligner::new(config, &out, false, &device).unwrap();
    let weights = |m: &stylecap::model::Captioner| -> Vec<(String, Vec<f32>)> {
        read_named(m, "", &mut Values)
            .into_iter()
            .map(|(n, v)| (n, v.unwrap().values))
            .collect()
    };
    let reference_before = weights(&aligner.reference);
    let policy_before = weights(&aligner.policy);
    assert_eq!(
        reference_before, policy_before,
        "the policy starts as the base"
    );
    aligner.run(&RunOptions::default()).unwrap();
    assert_eq!(
        weights(&aligner.reference),
        reference_before,
        "the reference changed"
    );
    let changed: Vec<String> = weights(&aligner.policy)
        .into_iter()
        .zip(&policy_before)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((n, _), _)| n)
        .collect();
    assert!(
        changed.iter().any(|n| n.starts_with("decoder.")),
        "the policy did not train"
    );
    assert!(
        !changed.iter().any(|n| n.starts_with("encoder.")),
        "the frozen encoder trained: {changed:?}"
    );
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(
        log.lines().filter(|l| l.contains("\"kl\"")).count() == 2,
        "{log}"
    );
    // The supervised anchor (on by default) ran in every step.
    for line in log.lines().filter(|l| l.contains("\"kl\"")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ptx = v["ptx_loss"].as_f64().unwrap();
        assert!(ptx.is_finite() && ptx > 0.0, "{line}");
    }
    assert!(out.join("model/model.safetensors").is_file());

    // In f16 mixed precision the same run trains too, with its loss scale logged, and ends
    // elsewhere than f32's (the products ran in half precision).
    let mixed = scratch("align", "run-f16");
    let _ = std::fs::remove_dir_all(&mixed);
    let config = AlignConfig {
        mixed_precision: stylecap::util::Precision::F16,
        ..aligner.config.clone()
    };
    let mut f16 = Aligner::new(config, &mixed, false, &device).unwrap();
    f16.run(&RunOptions::default()).unwrap();
    let (a, b) = (weights(&f16.policy), weights(&aligner.policy));
    assert!(
        a != b && a != policy_before,
        "f16: the policy did not train in half precision"
    );
    let log = std::fs::read_to_string(mixed.join("metrics.jsonl")).unwrap();
    for line in log.lines().filter(|l| l.contains("\"kl\"")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["loss_scale"].as_f64().is_some_and(|s| s >= 1.0), "{line}");
        assert!(v["loss"].as_f64().unwrap().is_finite(), "{line}");
    }
}

/// LoRA alignment: only the adapters train, over base weights that stay the reference's;
/// `model/` is an adapter folder that `caption` opens, and `export --merge-lora` folds it into
/// a plain captioner with the same captions; a killed run resumes to the uninterrupted one.
#[test]
fn lora_alignment_trains_only_adapters_resumes_and_exports() {
    let (base, critic) = common::tiny_base_and_critic("align", 4);
    let _turn = common::serial();
    let device = Device::flex();
    let (whole, killed) = (
        scratch("align", "lora-whole"),
        scratch("align", "lora-killed"),
    );
    for d in [&whole, &killed] {
        let _ = std::fs::remove_dir_all(d);
    }
    let config = AlignConfig {
        base,
        critic,
        lora_rank: 2,
        lora_mlp: true,
        steps: 4,
        images_per_step: 2,
        samples: 2,
        max_new_tokens: 8,
        eval_every: 2,
        checkpoint_every: 2,
        eval_images: 2,
        lr: 5e-2,
        ..AlignConfig::default()
    };
    let weights = |m: &stylecap::model::Captioner| -> Vec<(String, Vec<f32>)> {
        read_named(m, "", &mut Values)
            .into_iter()
            .map(|(n, v)| (n, v.unwrap().values))
            .collect()
    };
    let split = |w: Vec<(String, Vec<f32>)>| -> (Vec<_>, Vec<_>) {
        w.into_iter().partition(|(n, _)| is_adapter_param(n))
    };
    let mut a = Aligner::new(config.clone(), &whole, false, &device).unwrap();
    let reference = weights(&a.reference);
    let (adapters_before, base_before) = split(weights(&a.policy));
    assert_eq!(base_before, reference, "the policy's base is the reference");
    assert!(!adapters_before.is_empty());
    a.run(&RunOptions::default()).unwrap();
    let (adapters_after, base_after) = split(weights(&a.policy));
    assert_eq!(weights(&a.reference), reference, "the reference changed");
    assert_eq!(base_after, base_before, "a frozen base weight trained");
    let trained = adapters_after
        .iter()
        .zip(&adapters_before)
        .filter(|(x, y)| x != y)
        .count();
    assert_eq!(trained, adapters_before.len(), "every adapter trains");
    let model = whole.join("model");
    assert!(model.join("adapter_model.safetensors").is_file());
    assert!(!model.join("model.safetensors").exists());

    let mut b = Aligner::new(config.clone(), &killed, false, &device).unwrap();
    b.run(&RunOptions {
        stop_after: Some(3),
        ..RunOptions::default()
    })
    .unwrap();
    drop(b);
    let mut b = Aligner::new(AlignConfig::default(), &killed, true, &device).unwrap();
    assert_eq!(b.step, 2);
    b.run(&RunOptions::default()).unwrap();
    assert!(
        weights(&a.policy) == weights(&b.policy),
        "the resumed LoRA policy differs from the uninterrupted one"
    );
    for file in ["model/adapter_model.safetensors", "eval.json"] {
        assert!(
            std::fs::read(whole.join(file)).unwrap() == std::fs::read(killed.join(file)).unwrap(),
            "{file} differs"
        );
    }

    // Captions from the adapter folder, and from the merged export.
    let image = whole.join("picture.png");
    image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, 90])
    })
    .save(&image)
    .unwrap();
    let merged = scratch("align", "lora-merged");
    let (model, merged, image) = (
        model.to_str().unwrap(),
        merged.to_str().unwrap(),
        image.to_str().unwrap(),
    );
    let refused = common::stylecap(&["export", "--model", model, "--out", merged]);
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && e.contains("--merge-lora"),
        "{e}"
    );
    let out = common::stylecap(&["export", "--model", model, "--out", merged, "--merge-lora"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let caption = |m: &str| {
        let out = common::stylecap(&["caption", "--model", m, "--image", image, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token_ids"].clone()
    };
    let adapted = caption(model);
    assert!(adapted.as_array().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        adapted,
        caption(merged),
        "the merged captioner captions otherwise"
    );

    // An adapter folder whose base is itself (or any adapter folder) is refused, not
    // followed until the stack overflows.
    let looped = scratch("align", "lora-looped");
    for f in std::fs::read_dir(model).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, looped.join(f.file_name().unwrap())).unwrap();
        }
    }
    let config = looped.join("adapter_config.json");
    let mut peft: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    peft["base_model_name_or_path"] = ".".into();
    std::fs::write(&config, peft.to_string()).unwrap();
    let out = common::stylecap(&[
        "caption",
        "--model",
        looped.to_str().unwrap(),
        "--image",
        image,
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("is an adapter folder too"), "{e}");
}

/// The metrics log without its timings (which differ between runs).
fn metrics_without_timings(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("tokens_per_s");
                o.remove("elapsed_s");
            }
            v
        })
        .collect()
}

#[test]
fn a_killed_alignment_resumes_to_the_uninterrupted_run() {
    let (base, critic) = common::tiny_base_and_critic("align", 4);
    let _turn = common::serial();
    let device = Device::flex();
    let (whole, killed) = (scratch("align", "whole"), scratch("align", "killed"));
    for d in [&whole, &killed] {
        let _ = std::fs::remove_dir_all(d);
    }
    // REINFORCE with normalised rewards and the adaptive KL: every piece of the loop's state
    // (moving baseline, running reward statistics, β, best validation) must survive.
    let config = AlignConfig {
        base,
        critic,
        algo: Algo::Reinforce,
        normalize_rewards: true,
        steps: 5,
        images_per_step: 2,
        samples: 2,
        max_new_tokens: 8,
        eval_every: 2,
        checkpoint_every: 2,
        eval_images: 2,
        lr: 1e-2,
        ..AlignConfig::default()
    };
    let mut a = Aligner::new(config.clone(), &whole, false, &device).unwrap();
    let vals_whole = a.run(&RunOptions::default()).unwrap();

    let mut b = Aligner::new(config.clone(), &killed, false, &device).unwrap();
    // Killed after step 3: its last checkpoint is step 2's.
    b.run(&RunOptions {
        stop_after: Some(3),
        ..RunOptions::default()
    })
    .unwrap();
    drop(b);
    assert!(!killed.join("eval.json").exists());
    let refused = Aligner::new(config.clone(), &killed, false, &device)
        .err()
        .unwrap();
    assert!(refused.to_string().contains("--resume"), "{refused}");
    let mut b = Aligner::new(AlignConfig::default(), &killed, true, &device).unwrap();
    assert_eq!(b.step, 2);
    assert_eq!(
        b.config,
        AlignConfig {
            content_reward: Some(ContentRewardKind::Scene),
            w_content: Some(ContentRewardKind::Scene.default_weight()),
            ..config.clone()
        },
        "resume uses the run's saved configuration, with the content reward it chose"
    );
    let vals_resumed = b.run(&RunOptions::default()).unwrap();

    let weights = |m: &stylecap::model::Captioner| read_named(m, "", &mut Values);
    assert!(
        weights(&a.policy) == weights(&b.policy),
        "the resumed policy differs from the uninterrupted one"
    );
    assert_eq!(vals_whole, vals_resumed);
    for file in ["model/model.safetensors", "eval.json"] {
        assert!(
            std::fs::read(whole.join(file)).unwrap() == std::fs::read(killed.join(file)).unwrap(),
            "{file} differs"
        );
    }
    assert_eq!(
        metrics_without_timings(&whole),
        metrics_without_timings(&killed)
    );

    // A checkpoint claiming a step past the run's end is refused, naming the range.
    let state = killed.join("checkpoint/state.json");
    std::fs::write(&state, r#"{"step": 9999}"#).unwrap();
    let e = Aligner::new(config, &killed, true, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("9999") && e.contains("0..=5"), "{e}");
}

/// A `data synth` folder of `32`-pixel pictures, with its train and val manifests written again
/// without their scene graphs (`plain-train.jsonl`, `plain-val.jsonl`).
fn synth_with_plain_manifests(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    let config = SynthConfig {
        world: WorldConfig {
            image_size: 32,
            ..WorldConfig::default()
        },
        train: 12,
        val: 3,
        test: 2,
        compositional: 2,
        style_texts: 10,
    };
    synth(dir, &config, false).unwrap();
    for split in ["train", "val"] {
        let text = std::fs::read_to_string(dir.join(format!("{split}.jsonl"))).unwrap();
        let plain: Vec<String> = text
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert!(v.as_object_mut().unwrap().remove("scene").is_some());
                v.to_string()
            })
            .collect();
        std::fs::write(
            dir.join(format!("plain-{split}.jsonl")),
            plain.join("\n") + "\n",
        )
        .unwrap();
    }
}

#[test]
fn alignment_on_plain_captions_never_reads_scene_graphs() {
    let (base, critic) = common::tiny_base_and_critic("align", 4);
    let _turn = common::serial();
    let device = Device::flex();
    let data = scratch("align", "synth");
    synth_with_plain_manifests(&data);
    let config = |split_prefix: &str, reward: Option<ContentRewardKind>| AlignConfig {
        base: base.clone(),
        critic: critic.clone(),
        data: Some(data.join(format!("{split_prefix}train.jsonl"))),
        val_data: Some(data.join(format!("{split_prefix}val.jsonl"))),
        content_reward: reward,
        steps: 3,
        images_per_step: 2,
        samples: 2,
        max_new_tokens: 8,
        eval_every: 3,
        eval_images: 3,
        lr: 1e-2,
        ..AlignConfig::default()
    };
    let run = |name: &str, c: AlignConfig| {
        let out = scratch("align", name);
        let _ = std::fs::remove_dir_all(&out);
        let mut a = Aligner::new(c, &out, false, &device).unwrap();
        a.run(&RunOptions::default()).unwrap();
        (a, out)
    };
    for (name, reward) in [
        ("cider", ContentRewardKind::Cider),
        ("concepts", ContentRewardKind::Concepts),
    ] {
        let (with_scenes, dir_a) = run(&format!("{name}-with-scenes"), config("", Some(reward)));
        let (plain, dir_b) = run(&format!("{name}-plain"), config("plain-", Some(reward)));
        let weights = |m: &stylecap::model::Captioner| read_named(m, "", &mut Values);
        assert!(
            weights(&with_scenes.policy) == weights(&plain.policy),
            "the scene graphs changed the {name}-rewarded run"
        );
        assert_eq!(
            std::fs::read(dir_a.join("eval.json")).unwrap(),
            std::fs::read(dir_b.join("eval.json")).unwrap()
        );
        // The content reward was live: sampled captions scored against the references
        // (the tiny model's bytes share n-grams with them, never a concept).
        if reward == ContentRewardKind::Cider {
            let log = metrics_without_timings(&dir_b);
            assert!(
                log.iter()
                    .filter_map(|r| r["content"].as_f64())
                    .any(|c| c > 0.0),
                "{name}: {log:?}"
            );
        }
    }

    // Without --content-reward, plain captions get concept F1, recorded in config.json; the
    // scene checker is refused on them, naming the way out.
    let (_, dir_c) = run("auto", config("plain-", None));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir_c.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["content_reward"], "concepts");
    let out = scratch("align", "scene-on-plain");
    let _ = std::fs::remove_dir_all(&out);
    let e = Aligner::new(
        config("plain-", Some(ContentRewardKind::Scene)),
        &out,
        false,
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--content-reward concepts"), "{e}");
    let (_, dir_d) = run("scene", config("", None));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir_d.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["content_reward"], "scene");
}

/// The `clip` reward on the CLIP fixture's captions and pictures: RefCLIP-S where the picture
/// has references, CLIP-S where it has none, each as transformers' features give them
/// (computed by tools/make_fixtures.py).
#[test]
fn clip_reward_is_ref_clip_s_with_references_else_clip_s() {
    use stylecap::data::image::open_rgb;
    use stylecap::model::clip_score::ClipScorer;
    // Loading draws the random initial weights it then replaces, from the device's generator,
    // which the seeded runs of the other tests must have to themselves.
    let _turn = common::serial();
    let device = Device::flex();
    let dir = fixture("clip_model");
    let texts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("texts.json")).unwrap()).unwrap();
    let captions: Vec<String> = serde_json::from_value(texts["captions"].clone()).unwrap();
    let references: Vec<Vec<String>> = serde_json::from_value(texts["references"].clone()).unwrap();
    let images = [
        open_rgb(&dir.join("image.png")).unwrap(),
        open_rgb(&dir.join("image2.png")).unwrap(),
    ];
    let pictures: Vec<Picture> = references
        .iter()
        .enumerate()
        .map(|(i, r)| Picture {
            references: r,
            scene: None,
            image: &images[i % 2],
        })
        .collect();
    let reward = Clip(ClipScorer::load(&dir, &device).unwrap());
    let got = reward.scores(&captions, &pictures).unwrap();
    let r = reference("clip_model");
    let clip = common::values(r.tensor::<2>("clip_score", &device).unwrap());
    let refclip = common::values(r.tensor::<1>("ref_clip_score", &device).unwrap());
    for (i, g) in got.iter().enumerate() {
        let expected = if references[i].is_empty() {
            clip[i * 2 + i % 2]
        } else {
            refclip[i]
        };
        assert!(
            (g - expected).abs() <= 1e-4,
            "caption {i}: reward {g}, expected {expected}"
        );
    }
    assert!(references.iter().any(Vec::is_empty) && references.iter().any(|r| !r.is_empty()));
}

/// A short run with the `clip` reward on the built-in world (whose pictures have references):
/// the content term is logged, finite, and not constant.
#[test]
fn a_short_alignment_run_with_the_clip_reward() {
    let (base, critic) = common::tiny_base_and_critic("align", 4);
    let _turn = common::serial();
    let device = Device::flex();
    let out = scratch("align", "clip-run");
    let _ = std::fs::remove_dir_all(&out);
    let config = AlignConfig {
        base,
        critic,
        content_reward: Some(ContentRewardKind::Clip),
        clip: Some(fixture("clip_model")),
        steps: 3,
        images_per_step: 2,
        samples: 2,
        max_new_tokens: 8,
        eval_every: 3,
        eval_images: 2,
        lr: 1e-2,
        ..AlignConfig::default()
    };
    Aligner::new(config, &out, false, &device)
        .unwrap()
        .run(&RunOptions::default())
        .unwrap();
    let content: Vec<f64> = metrics_without_timings(&out)
        .iter()
        .filter_map(|r| r["content"].as_f64())
        .collect();
    assert_eq!(content.len(), 3, "{content:?}");
    assert!(
        content.iter().all(|c| c.is_finite() && *c >= 0.0),
        "{content:?}"
    );
    assert!(
        content.iter().any(|c| (c - content[0]).abs() > 1e-6),
        "the clip reward did not vary: {content:?}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["content_reward"], "clip");
}

/// `eval` with a CLIP model reports each style's mean CLIP-S and RefCLIP-S (the world's test
/// pictures have references), equal to the scorer's on the same captions and pictures; without
/// one the JSON has neither key and the table no CLIP columns.
#[test]
fn evaluation_with_clip_reports_clip_scores() {
    use stylecap::critic::Critic;
    use stylecap::data::sources::CaptionSource;
    use stylecap::eval::captioner::{evaluate_captioner, render, EvalConfig};
    use stylecap::model::clip_score::ClipScorer;
    use stylecap::model::LoadedCaptioner;
    let (base, critic) = common::tiny_base_and_critic("align", 4);
    let _turn = common::serial();
    let device = Device::flex();
    let captioner = LoadedCaptioner::load(&base.join("model"), &device).unwrap();
    let judge = Critic::load(&critic, &device).unwrap();
    let size = captioner.model.config.encoder.image_size();
    let n = 3;
    let source = CaptionSource::held_out(None, stylecap::world::Split::Test, size, n).unwrap();
    let config = EvalConfig {
        images: n,
        clip: Some(fixture("clip_model")),
        ..EvalConfig::default()
    };
    let with = evaluate_captioner(&captioner, None, &judge, &source, &config, &device).unwrap();
    let scorer = ClipScorer::load(&fixture("clip_model"), &device).unwrap();
    let examples = source.get_many(&(0..n).collect::<Vec<_>>()).unwrap();
    let images: Vec<&image::RgbImage> = examples.iter().map(|e| &e.image).collect();
    for s in &with.styles {
        // With three pictures, the three examples are all the captions.
        let caps: Vec<&str> = s.examples.iter().map(String::as_str).collect();
        assert_eq!(caps.len(), n);
        let expected = scorer
            .clip_score(&caps, &images)
            .unwrap()
            .iter()
            .sum::<f32>()
            / n as f32;
        let got = s.clip_score.unwrap();
        assert!(
            (got - expected).abs() < 1e-5,
            "{}: {got} vs {expected}",
            s.style
        );
        let r = s.ref_clip_score.unwrap();
        assert!(
            (0.0..=2.5).contains(&got) && (0.0..=2.5).contains(&r),
            "{got} {r}"
        );
    }
    assert!(render(&with).contains("RefCLIP-S"));
    let json = serde_json::to_value(&with).unwrap();
    assert!(json["styles"][0]["ref_clip_score"].is_number());

    let without = evaluate_captioner(
        &captioner,
        None,
        &judge,
        &source,
        &EvalConfig {
            images: n,
            ..EvalConfig::default()
        },
        &device,
    )
    .unwrap();
    assert!(!render(&without).contains("CLIP-S"));
    let json = serde_json::to_value(&without).unwrap();
    assert!(json["styles"][0].get("clip_score").is_none(), "{json}");
}

/// An update batch cut into shards (`data_parallel`) whose passes run in parallel gives the
/// loss and gradient of one pass over all its rows: REINFORCE/RLOO, GRPO and PPO (with some
/// ratios clipped), with the supervised anchor, from kept encoder states and from the
/// pictures (the encoder in the graph), over captions of different lengths.
#[test]
fn sharded_update_batches_give_the_whole_batch_gradient() {
    use burn::tensor::Distribution;
    use stylecap::align::rollout::{token_logprobs, Rollout};
    use stylecap::align::update::{batch_gradients, Update};
    use stylecap::sft::step::caption_batch;
    let _turn = common::serial();
    let device = Device::flex().autodiff();
    let plain = Device::flex();
    let model = common::tiny_captioner("vit", &["factual", "noir"], &device);
    let pixels = Tensor::<4>::random([3, 3, 16, 16], Distribution::Normal(0.0, 1.0), &plain);
    let tokens: Vec<Vec<u32>> = common::rollout_captions();
    let mut rollout = Rollout {
        pixels: pixels.clone(),
        encoder_states: None,
        image_of_row: vec![0, 0, 1, 1, 2, 2],
        styles: Some(vec![1, 1, 0, 0, 1, 1]),
        tokens: tokens.clone(),
        old_logprobs: Vec::new(),
    };
    // The sampling policy's log-probabilities, moved so that some ratios leave PPO's clip.
    let all: Vec<usize> = (0..6).collect();
    let (lp, _, _) = token_logprobs(&model.clone().valid(), &all, &rollout, false, &plain);
    let lp = stylecap::tensor::floats(lp);
    let width = lp.len() / 6;
    rollout.old_logprobs = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (0..t.len())
                .map(|j| lp[i * width + j] + 0.3 * ((i * 7 + j * 3) % 5) as f32 - 0.6)
                .collect()
        })
        .collect();
    let ref_logprobs: Vec<Vec<f32>> = rollout
        .old_logprobs
        .iter()
        .map(|r| r.iter().map(|v| v - 0.2).collect())
        .collect();
    let advantages = [0.5f32, -1.0, 1.5, -0.25, 0.75, -1.5];
    let anchor = caption_batch(
        pixels.clone().to_device(&device),
        &[0, 0, 0],
        &tokens[..3],
        0,
        &device,
    );
    let states = model.clone().valid().encoder.forward(pixels);
    let cases = [
        (Algo::Rloo, false, true),
        (Algo::Rloo, true, false),
        (Algo::Grpo, false, true),
        (Algo::Ppo, false, false),
    ];
    for (algo, with_anchor, kept_states) in cases {
        rollout.encoder_states = kept_states.then(|| states.clone());
        let gradients = |shards: usize| {
            let config = AlignConfig {
                algo,
                data_parallel: shards,
                max_ratio: 1e6,
                ..AlignConfig::default()
            };
            let u = Update {
                config: &config,
                rollout: &rollout,
                advantages: &advantages,
                ref_logprobs: &ref_logprobs,
                anchor: with_anchor.then_some(&anchor),
                beta: 0.1,
                step: 0,
            };
            batch_gradients(&model, &u, &all, &device, 1.0).expect("within the ratio bound")
        };
        let whole = gradients(1);
        let what = format!("{algo:?}, anchor {with_anchor}, kept states {kept_states}");
        if algo == Algo::Ppo {
            let (clipped, _) = whole.ppo.expect("PPO's statistics");
            assert!(clipped > 0.0 && clipped < 1.0, "{what}: clipped {clipped}");
        }
        assert!(
            whole.acc.grads().keys().any(|n| n.starts_with("encoder.")) != kept_states,
            "{what}: the encoder takes a gradient exactly when it is in the graph"
        );
        for shards in [2, 3] {
            let cut = gradients(shards);
            assert!(
                (cut.value - whole.value).abs() <= 1e-5 * whole.value.abs().max(1.0),
                "{what}, {shards} shards: loss {} vs {}",
                cut.value,
                whole.value
            );
            assert!((cut.entropy - whole.entropy).abs() <= 1e-5 * whole.entropy.abs().max(1.0));
            assert_eq!(cut.ptx.is_some(), with_anchor);
            if let (Some(a), Some(b)) = (cut.ppo, whole.ppo) {
                assert!(
                    (a.0 - b.0).abs() <= 1e-5 && (a.1 - b.1).abs() <= 1e-5,
                    "{what}"
                );
            }
            let names: Vec<&String> = cut.acc.grads().keys().collect();
            assert_eq!(
                names,
                whole.acc.grads().keys().collect::<Vec<_>>(),
                "{what}"
            );
            for (name, g) in whole.acc.grads() {
                let c = &cut.acc.grads()[name];
                let scale = g.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                let diff = c
                    .iter()
                    .zip(g)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    diff <= 1e-5 * scale.max(1.0),
                    "{what}, {shards} shards: {name} differs by {diff} (scale {scale})"
                );
                assert!(
                    g.iter().any(|&x| x != 0.0),
                    "{what}: {name} has no gradient"
                );
            }
        }
    }
}

/// Sampling under mixed precision casts each weight once per decoding, not once per token
/// (the decoder cache's `casts`), with the same logits as casting at every step; in f32
/// nothing is kept.
#[test]
fn mixed_precision_decoding_casts_each_weight_once() {
    use stylecap::model::autocast::{Autocast, KeptCasts};
    use stylecap::model::lora::{add_adapters, LoraConfig};
    use stylecap::util::Precision;
    let _turn = common::serial();
    let device = Device::flex();
    let model = common::tiny_captioner("vit", &["plain", "noir"], &device);
    let lora = LoraConfig {
        rank: 2,
        alpha: 4.0,
        mlp: true,
    };
    let model = add_adapters(model, &lora, &device);
    let pixels = Tensor::<4>::random([3, 3, 16, 16], burn::tensor::Distribution::Default, &device);
    let styles = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 1], [3]), &device);
    let tokens = [[5i64, 9, 12], [3, 20, 7], [40, 2, 11], [7, 7, 1]];
    let decode = |fresh_every_step: bool| {
        let encoded = model.encode(pixels.clone());
        let (mut cache, first) = model.start_decoding(&encoded, Some(styles.clone()), 3);
        let (mut logits, mut kept) = (vec![host(first)], vec![cache.casts.len()]);
        for step in tokens {
            if fresh_every_step {
                cache.casts = KeptCasts::default();
            }
            let fed = Tensor::<1, Int>::from_data(TensorData::new(step.to_vec(), [3]), &device);
            logits.push(host(model.step(&encoded, fed, &mut cache)));
            kept.push(cache.casts.len());
        }
        (logits, kept)
    };
    let (f32_logits, f32_kept) = decode(false);
    assert!(
        f32_kept.iter().all(|&n| n == 0),
        "f32 keeps no casts: {f32_kept:?}"
    );

    let _mixed = Autocast::enter(Precision::F16);
    let (kept_logits, kept) = decode(false);
    let (fresh_logits, _) = decode(true);
    // Per layer: self-attention's c_attn and c_proj, cross-attention's q_attn and c_proj, the
    // MLP's c_fc and c_proj, and the two factors of each one's adapter.
    let per_step = 2 * (6 + 2 * 6);
    assert_eq!(kept, vec![per_step; tokens.len() + 1]);
    assert_eq!(
        kept_logits, fresh_logits,
        "a kept cast is the same as a new one"
    );
    // f16 carries 11 significant bits (a unit roundoff of 4.9e-4): the products part from
    // f32's, by far less than 1% of the largest logit over two layers.
    let parted = common::max_diff(&kept_logits.concat(), &f32_logits.concat());
    let largest = f32_logits.concat().iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(
        parted > 0.0 && parted < 0.01 * largest,
        "f16 products part from f32's by {parted} (largest logit {largest})"
    );
}

/// `eval --captions` writes every caption it judged: a line per picture and style in the
/// evaluation's order, tokens with their log-probabilities, the first three of each style
/// being the report's examples.
#[test]
fn evaluation_writes_every_caption_it_judged() {
    let (base, critic) = common::tiny_base_and_critic("align-eval-captions", 2);
    let file = scratch("align", "eval-captions").join("captions.jsonl");
    let (base, critic, path) = (
        base.display().to_string(),
        critic.display().to_string(),
        file.display().to_string(),
    );
    let out = common::stylecap(&[
        "--threads",
        "1",
        "eval",
        "--model",
        &base,
        "--judge",
        &critic,
        "--images",
        "4",
        "--greedy",
        "--json",
        "--captions",
        &path,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let styles = eval["styles"].as_array().unwrap();
    assert!(styles.len() >= 2, "{eval}");
    assert_eq!(lines.len(), 4 * styles.len());
    for (style, rows) in styles.iter().zip(lines.chunks(4)) {
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(
                (&row["image"], &row["style"]),
                (&serde_json::json!(i), &style["style"])
            );
            let (tokens, logprobs) = (
                row["token_ids"].as_array().unwrap(),
                row["logprobs"].as_array().unwrap(),
            );
            assert!(
                !tokens.is_empty() && tokens.len() == logprobs.len(),
                "{row}"
            );
            assert!(logprobs.iter().all(|l| l.as_f64().unwrap() <= 0.0), "{row}");
        }
        let first: Vec<&serde_json::Value> = rows.iter().take(3).map(|r| &r["caption"]).collect();
        assert_eq!(
            style["examples"]
                .as_array()
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            first
        );
    }
}
