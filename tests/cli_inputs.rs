//! Every configuration value and flag is checked where it is parsed: an out-of-range value is
//! refused with a non-zero exit and a message naming the field and its allowed range, never
//! a panic and never a run on nonsense.

mod common;

use std::path::Path;

use common::*;

/// Runs `stylecap ARGS` and checks it is refused: exit code 1 (an error, not a panic's 101),
/// every one of `expect` in stderr, and no panic message.
fn refused(args: &[&str], expect: &[&str]) {
    let out = stylecap(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "`stylecap {}` was not refused with an error:\n{err}",
        args.join(" ")
    );
    assert!(
        !err.contains("panicked at"),
        "`stylecap {}` panicked:\n{err}",
        args.join(" ")
    );
    for e in expect {
        assert!(
            err.contains(e),
            "`stylecap {}`: the error does not say `{e}`:\n{err}",
            args.join(" ")
        );
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn training_settings_out_of_range_are_refused_naming_the_field() {
    let dir = scratch("cli_inputs", "train");
    let out = dir.join("run").display().to_string();
    let train = |extra: &[&str], expect: &[&str]| {
        let mut args = vec!["train", "--out", out.as_str(), "--quiet"];
        args.extend_from_slice(extra);
        refused(&args, expect);
        assert!(
            !dir.join("run/config.json").exists(),
            "a refused run was started"
        );
    };
    train(&["--steps", "0"], &["steps = 0", "allowed 1 to"]);
    train(&["--batch-size", "0"], &["batch_size = 0", "allowed 1 to"]);
    train(&["--grad-accum", "0"], &["grad_accum = 0"]);
    train(&["--lr=-1"], &["lr = -1", "allowed"]);
    train(&["--lr", "nan"], &["lr = NaN", "allowed"]);
    train(&["--eval-every", "0"], &["eval_every = 0"]);
    train(&["--checkpoint-every", "0"], &["checkpoint_every = 0"]);
    let heads = write(&dir, "heads.json", r#"{"model": {"decoder_heads": 3}}"#);
    train(
        &["--config", &heads],
        &["model.decoder_dim and model.decoder_heads", "128", "3"],
    );
    let vocab = write(&dir, "vocab.json", r#"{"model": {"vocab_size": 1}}"#);
    train(
        &["--config", &vocab],
        &["model.vocab_size = 1", "allowed 257 to"],
    );
    let prefix = write(&dir, "prefix.toml", "[model]\nprefix_tokens = 0\n");
    train(
        &["--config", &prefix],
        &["model.prefix_tokens = 0", "allowed 1 to 64"],
    );
    let patch = write(&dir, "patch.toml", "[model]\npatch_size = 0\n");
    train(&["--config", &patch], &["model.patch_size = 0"]);
    let beta = write(&dir, "beta.json", r#"{"optimizer": {"beta2": 1.5}}"#);
    train(&["--config", &beta], &["optimizer.beta2 = 1.5"]);
    let long = write(&dir, "long.json", r#"{"max_caption_tokens": 200}"#);
    train(
        &["--config", &long],
        &["max_caption_tokens 200", "model.max_positions"],
    );
    let rate = write(&dir, "rate.json", r#"{"first_caption_rate": -0.5}"#);
    train(
        &["--config", &rate],
        &["first_caption_rate = -0.5", "allowed 0 to 1"],
    );
}

#[test]
fn critic_settings_out_of_range_are_refused_naming_the_field() {
    let dir = scratch("cli_inputs", "critic");
    let out = dir.join("run").display().to_string();
    let critic = |extra: &[&str], expect: &[&str]| {
        let mut args = vec!["critic", "train", "--out", out.as_str(), "--quiet"];
        args.extend_from_slice(extra);
        refused(&args, expect);
    };
    critic(&["--steps", "0"], &["steps = 0"]);
    critic(&["--lr", "inf"], &["lr = inf"]);
    let heads = write(&dir, "heads.json", r#"{"hidden": 100, "heads": 3}"#);
    critic(&["--config", &heads], &["hidden and heads", "100", "3"]);
    let held = write(&dir, "held.json", r#"{"held_out": 1.0}"#);
    critic(
        &["--config", &held],
        &["held_out = 1", "allowed 0.001 to 0.9"],
    );
}

#[test]
fn alignment_settings_out_of_range_are_refused_naming_the_field() {
    let dir = scratch("cli_inputs", "align");
    let out = dir.join("run").display().to_string();
    // Settings are checked before the base or the critic is opened.
    let align = |extra: &[&str], expect: &[&str]| {
        let mut args = vec![
            "align", "--base", "nowhere", "--critic", "nowhere", "--out", &out, "--quiet",
        ];
        args.extend_from_slice(extra);
        refused(&args, expect);
    };
    align(&["--steps", "0"], &["steps = 0"]);
    align(&["--samples", "1"], &["samples = 1", "rloo", "2 or more"]);
    align(&["--samples", "0", "--algo", "reinforce"], &["samples = 0"]);
    align(&["--lr=-0.001"], &["lr = -0.001"]);
    align(&["--beta", "nan"], &["beta = NaN"]);
    align(&["--w-content=-1"], &["w_content = -1"]);
    align(&["--images-per-step", "0"], &["images_per_step = 0"]);
    let t = write(&dir, "t.json", r#"{"temperature": 0.0}"#);
    align(&["--config", &t], &["`temperature` is 0.0", "0.01 to 10"]);
    let clip = write(&dir, "clip.toml", "ppo_epochs = 0\n");
    align(&["--config", &clip], &["ppo_epochs = 0"]);
    // The `clip` reward needs its model, named by the flag that gives it.
    align(
        &["--content-reward", "clip"],
        &["content_reward clip", "--clip DIR"],
    );
    let reward = write(&dir, "reward.toml", "content_reward = \"clip\"\n");
    align(&["--config", &reward], &["--clip DIR"]);
    assert!(!dir.join("run").exists(), "a refused run was started");
}

#[test]
fn evaluation_and_demo_settings_out_of_range_are_refused_naming_the_field() {
    let (base, critic) = tiny_base_and_critic("cli_inputs", 2);
    let (base, critic) = (base.display().to_string(), critic.display().to_string());
    let eval = |extra: &[&str], expect: &[&str]| {
        let mut args = vec!["eval", "--model", &base, "--judge", &critic];
        args.extend_from_slice(extra);
        refused(&args, expect);
    };
    eval(&["--temperature", "nan"], &["`temperature` is NaN"]);
    eval(
        &["--top-p", "2"],
        &["`top_p` is 2.0", "above 0 and at most 1"],
    );
    eval(&["--images", "0"], &["images = 0"]);
    eval(
        &["--repetition-penalty", "0.5"],
        &["`repetition_penalty` is 0.5", "1 (off) to 10"],
    );
    refused(
        &["report", &base, "--images", "100000"],
        &["images = 100000", "allowed 1 to 200"],
    );
    eval(&["--clip", "/nonexistent-clip"], &["/nonexistent-clip"]);
    eval(
        &["--captions", "/nonexistent-folder/captions.jsonl"],
        &["--captions", "folder /nonexistent-folder does not exist"],
    );

    // A preset is checked section by section before any stage runs.
    let dir = scratch("cli_inputs", "demo");
    let report = write(&dir, "report.toml", "[report]\nimages = 0\n");
    refused(
        &[
            "demo",
            "--preset",
            &report,
            "--out",
            &dir.join("out").display().to_string(),
            "--quiet",
        ],
        &["section [report]", "images = 0"],
    );
    let preset = write(&dir, "bad.toml", "[align]\nsteps = 0\n");
    let out = dir.join("out").display().to_string();
    refused(
        &["demo", "--preset", &preset, "--out", &out, "--quiet"],
        &["section [align]", "steps = 0"],
    );
    assert!(!dir.join("out/base").exists(), "a stage ran");

    // Half precision is for the forward-only commands.
    refused(
        &["--dtype", "f16", "demo", "--out", &out, "--quiet"],
        &["--dtype f16 applies to caption, serve, eval"],
    );
    refused(
        &["--dtype", "bf16", "bench", "--only", "train"],
        &["--dtype bf16 applies to", "bench --only generate"],
    );
    assert!(!dir.join("out/base").exists(), "a stage ran");
}
