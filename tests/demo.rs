//! The whole chain at small sizes: a demo killed mid-way finishes when run again without
//! redoing its finished stages, every stage writes its outputs, the aligned captioner's
//! styles score higher with the judge than the base's, the report opens in a browser, and a
//! rerun skips finished stages.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::{chromium, Browser};
use common::{scratch, stylecap};

fn demo(out: &std::path::Path) -> std::process::Output {
    stylecap(&["demo", "--quick", "--quiet", "--out", out.to_str().unwrap()])
}

#[test]
fn quick_demo_runs_every_stage_and_resumes() {
    let out = scratch("demo", "quick");
    // Killed mid-way: as soon as the base captioner is complete, in the critic's stage.
    let mut child = Command::new(env!("CARGO_BIN_EXE_stylecap"))
        .args(["demo", "--quick", "--quiet", "--out", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !out.join("base/eval.json").is_file() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the demo ended before its base captioner was complete"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no base captioner in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("eval.json").exists(), "killed before the end");
    // Run again: it finishes without training the base captioner again.
    let o = demo(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains("base captioner (stylecap train): done already, skipped"),
        "{log}"
    );
    for file in [
        "base/model/model.safetensors",
        "base/eval.json",
        "critic/eval.json",
        "judge/eval.json",
        "align/model/model.safetensors",
        "align/eval.json",
        "eval.json",
        "report.html",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    for name in ["base", "aligned"] {
        let styles = eval[name]["styles"].as_array().unwrap();
        assert_eq!(styles.len(), 6, "{name}: one row per style");
        for s in styles {
            let score = s["style_score"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&score));
        }
    }
    // Alignment targets every style but factual: there the judge must score it higher.
    let styled_score = |name: &str| {
        let rows: Vec<f64> = eval[name]["styles"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["style"] != "factual")
            .map(|s| s["style_score"].as_f64().unwrap())
            .collect();
        rows.iter().sum::<f64>() / rows.len() as f64
    };
    let (base, aligned) = (styled_score("base"), styled_score("aligned"));
    assert!(
        aligned > base,
        "the judge scores the aligned captioner's styles higher: {aligned:.3} vs {base:.3}"
    );
    for s in eval["aligned"]["styles"].as_array().unwrap() {
        let kl = s["kl_to_base"].as_f64().unwrap();
        let ppl = s["base_perplexity"].as_f64().unwrap();
        assert!(kl.is_finite() && ppl >= 1.0, "{s}");
    }
    for s in eval["base"]["styles"].as_array().unwrap() {
        let kl = s["kl_to_base"].as_f64().unwrap();
        assert!(kl.abs() < 1e-2, "the base against itself has no KL: {s}");
    }
    report_opens_in_a_browser(&out);

    // A second run finds every stage complete and only evaluates again.
    let o = demo(&out);
    assert!(o.status.success());
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(log.matches("done already, skipped").count(), 4, "{log}");
}

/// The report in headless Chromium: every gallery picture decodes, every plot has its lines,
/// the metrics table has a row per style and model.
fn report_opens_in_a_browser(out: &std::path::Path) {
    let Some(chrome) = chromium() else { return };
    let report = out.join("report.html").canonicalize().unwrap();
    let mut b = Browser::open(&chrome, &format!("file://{}", report.display()));
    b.wait_for(
        "document.getElementById('gallery') && document.readyState === 'complete'",
        Duration::from_secs(20),
    );
    let pictures = b.eval(
        "[...document.querySelectorAll('#gallery img')].map(i => i.complete && i.naturalWidth > 0)",
    );
    let pictures = pictures.as_array().unwrap();
    assert_eq!(
        pictures.len(),
        4,
        "the quick demo's gallery has 4 test pictures"
    );
    assert!(
        pictures.iter().all(|p| p == true),
        "every picture decodes: {pictures:?}"
    );
    let plots = b.eval(
        "[...document.querySelectorAll('#plots svg')].map(s => s.querySelectorAll('polyline').length)",
    );
    let plots = plots.as_array().unwrap();
    assert_eq!(
        plots.len(),
        6,
        "loss, validation, reward, KL, style and content plots"
    );
    assert!(plots.iter().all(|n| n.as_u64().unwrap() > 0), "{plots:?}");
    let rows = b.eval("document.querySelectorAll('table.metrics tr').length");
    assert_eq!(rows, 1 + 6 * 2, "a header and a row per style and model");
    let captions = b.eval("document.querySelectorAll('#gallery td.caption').length");
    assert_eq!(
        captions,
        4 * 6 * 2,
        "a caption per picture, style and model"
    );
    b.screenshot(&out.join("report.png"));
}
