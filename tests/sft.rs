//! The supervised trainer: a resumed run equals an uninterrupted one, a NaN stops the run
//! without saving, settings files are read and checked.

mod common;

use std::path::Path;

use burn::prelude::*;
use common::{max_diff, scratch, serial, tiny_model_shape};
use stylecap::model::weights::{read_named, replace_named, StoredTensor, Values};
use stylecap::run::RunOptions;
use stylecap::sft::config::TrainConfig;
use stylecap::sft::trainer::Trainer;

fn tiny() -> TrainConfig {
    TrainConfig {
        world_train: 48,
        world_val: 6,
        style_texts: 40,
        model: tiny_model_shape(),
        steps: 6,
        batch_size: 3,
        style_batch_size: 2,
        grad_accum: 2,
        warmup_steps: 2,
        eval_every: 6,
        checkpoint_every: 3,
        eval_images: 3,
        max_caption_tokens: 40,
        ..TrainConfig::default()
    }
}

fn weights(t: &Trainer) -> Vec<(String, Vec<f32>)> {
    read_named(&t.model, "", &mut Values)
        .into_iter()
        .map(|(n, v)| (n, v.unwrap().values))
        .collect()
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("tokens_per_s").is_some() || v.get("split").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let _turn = serial();
    let device = Device::flex();
    let (a, b) = (scratch("sft", "whole"), scratch("sft", "killed"));
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
    let quiet = RunOptions::default();

    let mut whole = Trainer::new(tiny(), &a, false, &device).unwrap();
    let summary = whole.run(&quiet).unwrap();
    assert_eq!(summary.steps, 6);
    assert!(a.join("model/model.safetensors").is_file() && a.join("eval.json").is_file());

    let mut first = Trainer::new(tiny(), &b, false, &device).unwrap();
    let stop = RunOptions {
        stop_after: Some(4),
        ..RunOptions::default()
    };
    first.run(&stop).unwrap();
    drop(first);
    // Killed after step 4: the checkpoint holds step 3, and step 4's log line is dropped.
    let mut resumed = Trainer::new(TrainConfig::default(), &b, true, &device).unwrap();
    assert_eq!(resumed.step, 3);
    assert_eq!(
        resumed.config,
        tiny(),
        "resume uses the run's saved configuration"
    );
    resumed.run(&quiet).unwrap();
    let (wa, wb) = (weights(&whole), weights(&resumed));
    assert_eq!(wa.len(), wb.len());
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let diff = max_diff(va, vb);
        assert!(diff == 0.0, "{na} differs by {diff} after resuming");
    }
    assert_eq!(
        losses(&a),
        losses(&b),
        "logged losses differ after resuming"
    );

    // A checkpoint that says it is past the run's end is refused, naming it and the range.
    std::fs::write(a.join("checkpoint/state.json"), r#"{"step": 9999}"#).unwrap();
    let err = Trainer::new(tiny(), &a, true, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("checkpoint") && err.contains("9999") && err.contains("0..=6"),
        "{err}"
    );

    // A run killed between the checkpoint's two renames (the new one complete beside it, the
    // folder itself gone) resumes from the newest complete checkpoint.
    std::fs::write(a.join("checkpoint/state.json"), r#"{"step": 6}"#).unwrap();
    std::fs::rename(a.join("checkpoint"), a.join(".checkpoint.tmp4242")).unwrap();
    std::fs::create_dir_all(a.join(".checkpoint.tmp17")).unwrap();
    let again = Trainer::new(tiny(), &a, true, &device).unwrap();
    assert_eq!(again.step, 6);
    assert_eq!(weights(&again), wa, "resumed from the stranded checkpoint");
    assert!(!a.join(".checkpoint.tmp17").exists() && !a.join(".checkpoint.tmp4242").exists());

    // A checkpoint whose styles are not the ones the data gives now (the corpus changed
    // between the kill and the resume) is refused: its style rows would be read as others.
    let config = b.join("checkpoint/config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["stylecap"]["styles"][0] = "baroque".into();
    std::fs::write(&config, c.to_string()).unwrap();
    let err = format!(
        "{:#}",
        Trainer::new(tiny(), &b, true, &device).err().unwrap()
    );
    assert!(
        err.contains("trained on the styles baroque") && err.contains("the style corpus now"),
        "{err}"
    );

    // A second run into the same folder is refused rather than mixed in.
    let err = Trainer::new(tiny(), &a, false, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("already holds a run"), "{err}");
}

#[test]
fn a_nan_stops_training_and_saves_nothing() {
    let _turn = serial();
    let device = Device::flex();
    let run = scratch("sft", "nan");
    let _ = std::fs::remove_dir_all(&run);
    let mut t = Trainer::new(tiny(), &run, false, &device).unwrap();
    t.model = replace_named(t.model.clone(), "", |name, shape| {
        (name == "decoder.transformer.ln_f.weight").then(|| StoredTensor {
            shape: shape.to_vec(),
            values: vec![f32::NAN; shape.iter().product()],
        })
    });
    let err = t.run(&RunOptions::default()).err().unwrap().to_string();
    assert!(err.contains("step 1") && err.contains("NaN"), "{err}");
    assert!(!run.join("checkpoint").exists());
    assert!(!run.join("model").exists());
}

#[test]
fn settings_files_are_read_and_checked() {
    let dir = scratch("sft", "config");
    let toml = dir.join("run.toml");
    std::fs::write(&toml, "steps = 7\nlr = 0.01\n[model]\ndecoder_layers = 5\n").unwrap();
    let c = TrainConfig::from_file(&toml).unwrap();
    assert_eq!((c.steps, c.lr, c.model.decoder_layers), (7, 0.01, 5));
    assert_eq!(c.batch_size, TrainConfig::default().batch_size);
    let json = dir.join("run.json");
    std::fs::write(&json, "{\"stepz\": 7}").unwrap();
    let err = format!("{:#}", TrainConfig::from_file(&json).unwrap_err());
    assert!(err.contains("run.json") && err.contains("stepz"), "{err}");
}

#[test]
fn same_seed_same_weights() {
    let _turn = serial();
    let device = Device::flex();
    let (a, b) = (scratch("sft", "det-a"), scratch("sft", "det-b"));
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
    let mut c = tiny();
    c.steps = 3;
    let mut x = Trainer::new(c.clone(), &a, false, &device).unwrap();
    x.run(&RunOptions::default()).unwrap();
    let mut y = Trainer::new(c, &b, false, &device).unwrap();
    y.run(&RunOptions::default()).unwrap();
    for ((na, va), (_, vb)) in weights(&x).iter().zip(&weights(&y)) {
        let diff = max_diff(va, vb);
        assert!(
            diff == 0.0,
            "{na} differs by {diff} between two runs of one seed"
        );
    }
}

/// Mixed precision (`--mixed-precision`, `model::autocast`): with the matrix products in bf16
/// or f16, the loss and every parameter's gradient stay close to f32's. Each gradient is
/// within `tol` of f32's relative to its norm: bf16 keeps 8 significant bits (0.4% per
/// rounding) and f16 11 (0.05%), and a gradient goes through a few products, each rounding
/// its inputs; the tolerance is 8 such roundings (measured: up to 4.3 in bf16, 5.2 in f16).
/// The gradients must also differ from f32's somewhere (the products did run in half
/// precision).
#[test]
fn mixed_precision_gradients_follow_f32() {
    use burn::tensor::Distribution;
    use stylecap::model::autocast::Autocast;
    use stylecap::optim::grads::named_gradients;
    use stylecap::sft::step::{batch_loss, teacher_forcing, CaptionBatch};
    use stylecap::util::Precision;
    let _turn = serial();
    let device = Device::flex().autodiff();
    let model = common::tiny_captioner("vit", &["factual", "noir"], &device);
    let captions = vec![vec![5, 9, 12, 7], vec![3, 3, 20], vec![40, 2, 11, 6, 8]];
    let (input_ids, targets, mask) = teacher_forcing(&captions, 0, 1, 1, &device);
    let b = CaptionBatch {
        pixel_values: Tensor::random([3, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device),
        encoder_states: None,
        pictures: vec![0, 1, 2],
        styles: Some(Tensor::from_data(
            TensorData::new(vec![0i64, 1, 0], [3]),
            &device,
        )),
        input_ids,
        targets,
        mask,
    };
    let run = |precision: Precision| {
        let _mixed = Autocast::enter(precision);
        let loss = batch_loss(&model, &b);
        let grads = loss.backward();
        let named = named_gradients(&model, &grads);
        (loss.into_scalar::<f32>(), named)
    };
    let (want_loss, want) = run(Precision::F32);
    let total = want
        .iter()
        .flat_map(|(_, g)| g.as_ref().unwrap())
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    // 8 unit roundoffs: 2^-8 (bf16's 8 significant bits) and 2^-11 (f16's 11).
    for (precision, tol) in [
        (Precision::Bf16, 8.0 / 256.0),
        (Precision::F16, 8.0 / 2048.0),
    ] {
        let (loss, got) = run(precision);
        assert!(
            (loss - want_loss).abs() <= tol * want_loss,
            "{precision}: loss {loss} against f32's {want_loss}"
        );
        let mut differs = false;
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            let (w, g) = (w.as_ref().unwrap(), g.as_ref().unwrap());
            assert!(g.iter().all(|x| x.is_finite()), "{precision}: {name}");
            let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
            let err = w
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                .sqrt();
            // Attention's key bias has no gradient in exact arithmetic (the softmax ignores
            // a shift shared by every key): what it gets is rounding, held to the whole
            // gradient's scale.
            let scale = norm.max(1e-3 * total);
            assert!(
                err <= tol * scale,
                "{precision}: {name}'s gradient is {err} from f32's (norm {norm})"
            );
            differs |= err > 0.0;
        }
        assert!(differs, "{precision}: the gradients equal f32's exactly");
    }
}

/// Training runs in mixed precision: the logged losses follow f32's run within 2% (the
/// weights differ), f16's loss scale is logged, and a killed f16 run resumes to the uninterrupted run's weights (the loss scale is
/// part of the checkpoint).
#[test]
fn mixed_precision_training_follows_f32_and_resumes() {
    use stylecap::util::Precision;
    let _turn = serial();
    let device = Device::flex();
    let quiet = RunOptions::default();
    let run = |name: &str, precision: Precision| {
        let dir = scratch("sft", name);
        let _ = std::fs::remove_dir_all(&dir);
        let c = TrainConfig {
            mixed_precision: precision,
            ..tiny()
        };
        let mut t = Trainer::new(c, &dir, false, &device).unwrap();
        t.run(&quiet).unwrap();
        (dir, t)
    };
    let (f32_dir, plain) = run("mp-f32", Precision::F32);
    let want = losses(&f32_dir);
    for precision in [Precision::Bf16, Precision::F16] {
        let (dir, t) = run(&format!("mp-{precision}"), precision);
        let got = losses(&dir);
        assert_eq!(got.len(), want.len());
        assert!(
            weights(&t) != weights(&plain),
            "{precision}: the same weights as f32's (the products were not in half precision)"
        );
        for ((step, a), (_, b)) in want.iter().zip(&got) {
            assert!(
                (a - b).abs() <= 0.02 * a,
                "{precision}: loss {b} at step {step} against f32's {a}"
            );
        }
        let scales: Vec<f64> = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss_scale"].as_f64()
            })
            .collect();
        assert_eq!(
            scales.is_empty(),
            precision == Precision::Bf16,
            "{precision}: {scales:?}"
        );
        if precision == Precision::F16 {
            let killed = scratch("sft", "mp-f16-killed");
            let _ = std::fs::remove_dir_all(&killed);
            let c = TrainConfig {
                mixed_precision: precision,
                ..tiny()
            };
            let mut first = Trainer::new(c, &killed, false, &device).unwrap();
            first
                .run(&RunOptions {
                    stop_after: Some(4),
                    ..RunOptions::default()
                })
                .unwrap();
            drop(first);
            let mut resumed = Trainer::new(TrainConfig::default(), &killed, true, &device).unwrap();
            resumed.run(&quiet).unwrap();
            // A scale started afresh at step 3 would count 3 good steps, not 6.
            assert_eq!(resumed.optim.loss_scale, t.optim.loss_scale);
            for ((name, a), (_, b)) in weights(&t).iter().zip(&weights(&resumed)) {
                let diff = max_diff(a, b);
                assert!(
                    diff == 0.0,
                    "{name} differs by {diff} after resuming in f16"
                );
            }
        }
    }
}
