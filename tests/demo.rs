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

    // Other settings in the same folder are refused before any stage is skipped or run.
    let o = stylecap(&[
        "demo",
        "--quick",
        "--quiet",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("train.seed: 0 there, 1 now") && !log.contains("=="),
        "{log}"
    );
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

/// The whole chain on a user's data: a caption manifest without scene graphs (a `data synth`
/// folder's, with the `scene` field removed) and a style corpus of the user's. Every stage
/// runs; alignment takes concept F1 (weighted 2); the critic and the judge learn from
/// disjoint halves of the corpus, with captions of the manifest added to `factual`; the
/// evaluation and the report's gallery use the held-out test slice of the manifest, never a
/// built-in world picture.
#[test]
fn demo_runs_on_a_plain_manifest_and_a_style_corpus() {
    let dir = scratch("demo", "user-data");
    let _ = std::fs::remove_dir_all(&dir);
    let synth = dir.join("synth");
    let o = stylecap(&[
        "data",
        "synth",
        "--out",
        synth.to_str().unwrap(),
        "--n",
        "60",
        "--eval-n",
        "2",
        "--size",
        "32",
        "--style-texts",
        "300",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(synth.join("train.jsonl")).unwrap();
    let mut records: Vec<serde_json::Value> = Vec::new();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v.as_object_mut().unwrap().remove("scene").is_some());
        // Paths relative to the synth folder stay valid from the manifest's new place.
        let image = synth.join(v["image"].as_str().unwrap());
        v["image"] = image.to_str().unwrap().into();
        records.push(v);
    }
    let plain = dir.join("my-captions.jsonl");
    let lines: Vec<String> = records.iter().map(|v| v.to_string()).collect();
    std::fs::write(&plain, lines.join("\n") + "\n").unwrap();
    let styles = dir.join("my-styles.jsonl");
    std::fs::copy(synth.join("styles.jsonl"), &styles).unwrap();
    // The quick preset, shorter still: the point is that every stage runs on this data.
    let preset = dir.join("preset.toml");
    let quick = include_str!("../presets/demo-quick.toml")
        .replace("steps = 700", "steps = 200")
        .replace("steps = 400", "steps = 100")
        .replace("steps = 150", "steps = 20")
        .replace("eval_every = 50", "eval_every = 10");
    std::fs::write(&preset, quick).unwrap();
    let out = dir.join("demo");
    let o = stylecap(&[
        "demo",
        "--quiet",
        "--preset",
        preset.to_str().unwrap(),
        "--data",
        plain.to_str().unwrap(),
        "--styles",
        styles.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let json = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(p)).unwrap()).unwrap()
    };
    assert_eq!(json("align/config.json")["content_reward"], "concepts");
    assert_eq!(json("align/config.json")["w_content"], 2.0);
    for (stage, part) in [("critic", "critic"), ("judge", "judge")] {
        let config = json(&format!("{stage}/config.json"));
        assert_eq!(config["corpus_part"], part);
        assert_eq!(config["factual_captions"], plain.to_str().unwrap());
    }
    let eval = json("eval.json");
    // The held-out test slice: 5% of 60 pictures.
    let (_, test_ids) = stylecap::data::sources::held_out_slices(records.len(), 0);
    assert_eq!(test_ids.len(), 3);
    for name in ["base", "aligned"] {
        let rows = eval[name]["styles"].as_array().unwrap();
        assert_eq!(rows.len(), 6, "{name}: one row per style of the corpus");
        for r in rows {
            assert_eq!(r["captions"], 3, "{name}: the test slice's pictures: {r}");
            assert!(r["cider_d"].as_f64().unwrap().is_finite(), "{r}");
            let concepts = r["concept_f1"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&concepts), "{r}");
            assert!(r["content_fidelity"].is_null(), "no scene graphs here: {r}");
        }
    }
    // The gallery shows the test slice's pictures, each with its own first reference.
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(report.matches("<img class=\"picture\"").count(), 3);
    for &i in &test_ids {
        let reference = records[i]["captions"][0].as_str().unwrap();
        assert!(report.contains(reference), "test picture {i}: {reference}");
    }
    assert!(report.contains("never saw a text the critic learnt from"));
}
