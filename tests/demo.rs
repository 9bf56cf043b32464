//! The whole chain at tiny sizes: every stage writes its outputs, a rerun skips finished
//! stages, and the evaluation compares base and aligned captioners.

mod common;

use common::{scratch, stylecap};

fn demo(out: &std::path::Path) -> std::process::Output {
    stylecap(&["demo", "--quick", "--quiet", "--out", out.to_str().unwrap()])
}

#[test]
fn quick_demo_runs_every_stage_and_resumes() {
    let out = scratch("demo", "quick");
    let o = demo(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in [
        "base/model/model.safetensors",
        "base/eval.json",
        "critic/eval.json",
        "judge/eval.json",
        "align/model/model.safetensors",
        "align/validation.json",
        "eval.json",
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
    // A second run finds every stage complete and only evaluates again.
    let o = demo(&out);
    assert!(o.status.success());
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(log.matches("done already, skipped").count(), 4, "{log}");
}
