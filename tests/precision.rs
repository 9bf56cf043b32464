//! Half precision (`--dtype f16|bf16`): captions of the transformers fixture in f16 and bf16
//! against f32, through `stylecap caption`. Each precision runs in a process of its own:
//! burn fixes a device's float type once per process.

mod common;

use common::*;

/// Token ids and their log-probabilities from `stylecap --dtype DTYPE caption ... --json`.
fn caption(dtype: &str, decoding: &[&str]) -> (Vec<u64>, Vec<f64>) {
    let mut args = vec![
        "--threads",
        "1",
        "--dtype",
        dtype,
        "caption",
        "--model",
        "tests/fixtures/vit_gpt2",
        "--image",
        "tests/fixtures/vit_gpt2/image.png",
        "--max-new-tokens",
        "16",
        "--json",
    ];
    args.extend_from_slice(decoding);
    let out = stylecap(&args);
    assert!(
        out.status.success(),
        "--dtype {dtype} caption failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tokens = serde_json::from_value(v["token_ids"].clone()).unwrap();
    let logprobs = serde_json::from_value(v["logprobs"].clone()).unwrap();
    (tokens, logprobs)
}

/// Captions in half precision against f32's, greedy and with beam search. Each token's
/// log-probability is within `tol` of f32's (f16 keeps 11 significant bits, bf16 8: about
/// 0.002 and 0.016 at the fixture's log-probabilities near -3, so the tolerances are 10 and
/// 6 of those steps). f16 gives f32's tokens. bf16 may part from them only at a near tie:
/// the fixture is a random tiny model whose next-token distributions are nearly flat, so
/// where the two top candidates are closer than bf16 can tell apart, bf16 takes the other
/// one; everything before that must agree.
#[test]
fn half_precision_captions_match_f32() {
    for decoding in [&["--greedy"][..], &["--beams", "3"][..]] {
        let (want, want_lp) = caption("f32", decoding);
        assert!(
            want.len() >= 8,
            "the fixture's caption is too short to compare"
        );
        for (dtype, tol) in [("f16", 0.02), ("bf16", 0.1)] {
            let (got, got_lp) = caption(dtype, decoding);
            let same = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
            if dtype == "f16" {
                assert_eq!(got, want, "{dtype} {decoding:?}: tokens differ from f32's");
            } else if same < want.len() {
                let gap = (want_lp[same] - got_lp[same]).abs();
                assert!(
                    gap <= 2.0 * tol,
                    "{dtype} {decoding:?}: token {same} differs from f32's, and not at a near \
                     tie (log-probabilities {} and {})",
                    want_lp[same],
                    got_lp[same]
                );
            }
            let diff = want_lp[..same]
                .iter()
                .zip(&got_lp)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            eprintln!(
                "{dtype} {decoding:?}: {same} of {} tokens as f32's, log-probabilities within \
                 {diff:.2e}",
                want.len()
            );
            assert!(
                diff <= tol,
                "{dtype} {decoding:?}: log-probabilities differ from f32's by {diff} (> {tol})"
            );
            assert!(
                diff > 0.0,
                "{dtype} gave f32's exact log-probabilities: not half precision"
            );
        }
    }
}

/// The GPU's decoding path (every choice made on the device: arg-max, top-k and top-p
/// truncation, Gumbel-max draws, end tracking, log-probabilities) run in f16 on the CPU
/// backend, where it can be checked: greedy rows give the host path's tokens, and sampled
/// tokens carry the model's f16 log-probabilities, finite and within the f16 tolerance of
/// teacher forcing; beam search's pick of continuations is the host's. This process's CPU
/// device is set to f16; the test above only spawns processes of its own.
#[test]
fn device_decoding_works_in_f16() {
    use burn::prelude::*;
    use burn::tensor::FloatDType;
    use stylecap::model::generate::{self, Choice};
    use stylecap::model::repeats::Repeats;
    let mut device = Device::flex();
    device.configure(FloatDType::F16).unwrap();
    let model =
        stylecap::model::Captioner::load(std::path::Path::new("tests/fixtures/vit_gpt2"), &device)
            .unwrap();
    let pixels = Tensor::<4>::random(
        [3, 3, 32, 32],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    assert_eq!(pixels.dtype(), burn::tensor::DType::F16);
    let encoded = model.encode(pixels.clone());
    let limits = [10usize, 6, 10];
    let off = [Repeats::default(); 3];
    let host = generate::decode_rows(&model, &encoded, None, &limits, &off, |_| Choice::Greedy);
    let on_device =
        generate::decode_rows_on_device(&model, &encoded, None, &limits, &off, |_| Choice::Greedy);
    let total = |rows: &[generate::Generation]| rows.iter().map(|g| g.tokens.len()).sum::<usize>();
    assert!(
        total(&host) >= 12,
        "the greedy rows end too soon to compare"
    );
    for (i, (h, d)) in host.iter().zip(&on_device).enumerate() {
        assert_eq!(h.tokens, d.tokens, "greedy row {i}");
        for (a, b) in h.logprobs.iter().zip(&d.logprobs) {
            assert!(
                (a - b).abs() <= 1e-5,
                "greedy row {i}: log-prob {a} against {b}"
            );
        }
    }
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let sampled = generate::decode_rows_on_device(&model, &encoded, None, &[8; 3], &off, |_| {
        Choice::draw(1.0, 20, 0.9, &mut rng)
    });
    assert!(
        total(&sampled) >= 12,
        "the sampled rows end too soon to compare"
    );
    let start = model.config.decoder_start_token_id as i64;
    for (i, g) in sampled.iter().enumerate() {
        let mut ids = vec![start];
        for (step, &tok) in g.tokens.iter().enumerate() {
            let lp = g.logprobs[step];
            assert!(
                lp.is_finite() && lp <= 0.0,
                "row {i} step {step}: log-prob {lp}"
            );
            let t = ids.len();
            let input = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, t]), &device);
            let logits = model
                .forward(pixels.clone().narrow(0, i, 1), None, input, None)
                .narrow(1, t - 1, 1)
                .flatten::<1>(0, 2);
            let want = stylecap::tensor::floats(burn::tensor::activation::log_softmax(logits, 0));
            let diff = (want[tok as usize] - lp).abs();
            assert!(
                diff <= 0.02,
                "row {i} step {step}: log-prob differs by {diff}"
            );
            ids.push(tok as i64);
            if model.config.eos_token_id == Some(tok) {
                break;
            }
        }
    }

    // Beam search's pick on the device: f32 log-probabilities (as beam search takes them) on
    // an f16 device, with f32 hypothesis scores and a dead beam, give the host's pick.
    let (beams, k) = (3, 6);
    let (_, first) = model.start_decoding(&encoded, None, 3);
    let lp =
        burn::tensor::activation::log_softmax(first.cast(FloatDType::F32), 1).repeat_dim(0, beams);
    let scores: Vec<f32> = (0..3 * beams)
        .map(|r| {
            if r % beams == 2 {
                f32::NEG_INFINITY
            } else {
                -0.25 * r as f32
            }
        })
        .collect();
    let on_device = generate::best_continuations_on_device(lp.clone(), &scores, beams, k);
    let host = generate::best_continuations(&stylecap::tensor::floats(lp), &scores, beams, k);
    assert_eq!(on_device, host, "beam continuations in f16");
}
