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
    let tokens = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    let logprobs = v["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
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
