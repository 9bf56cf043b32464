//! Bad input gets a clear error naming the file and the problem, never a panic.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::*;
use stylecap::model::pretrained::{load_gpt2, load_vision};
use stylecap::model::weights::{write_safetensors, SafetensorsFile};
use stylecap::model::Captioner;

/// A copy of a fixture directory to damage.
fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let dir = scratch("errors", tag);
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn rewrite_weights(dir: &Path, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let path = dir.join("model.safetensors");
    let file = SafetensorsFile::open(&path).unwrap();
    let mut tensors: Vec<_> = file
        .names()
        .map(|n| {
            let t = file.get(n).unwrap();
            (n.to_string(), t.shape, t.values)
        })
        .collect();
    edit(&mut tensors);
    write_safetensors(&path, &tensors).unwrap();
}

#[test]
fn missing_config_names_the_file() {
    let dir = copy_fixture("vit_gpt2", "noconfig");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = err_text(Captioner::load(&dir, &Device::flex()));
    assert!(
        e.contains("config.json") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn corrupt_config_names_the_file_and_position() {
    let dir = copy_fixture("vit", "badjson");
    std::fs::write(
        dir.join("config.json"),
        "{\"hidden_size\": 32,\n \"num_hidden_layers\": }",
    )
    .unwrap();
    let e = err_text(load_vision(&dir, &Device::flex()));
    assert!(
        e.contains("config.json") && e.contains("invalid JSON") && e.contains("line 2"),
        "{e}"
    );
}

#[test]
fn config_missing_a_field_says_which() {
    let dir = copy_fixture("gpt2", "nofield");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("n_embd");
    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
    let e = err_text(load_gpt2(&dir, false, &Device::flex()));
    assert!(e.contains("config.json") && e.contains("n_embd"), "{e}");
}

#[test]
fn wrong_tensor_shape_names_tensor_and_shapes() {
    let dir = copy_fixture("vit_gpt2", "shape");
    rewrite_weights(&dir, |t| {
        let w = t
            .iter_mut()
            .find(|(n, _, _)| n == "decoder.transformer.h.1.attn.c_proj.weight")
            .unwrap();
        w.1 = vec![16, 64];
    });
    let e = err_text(Captioner::load(&dir, &Device::flex()));
    assert!(
        e.contains("model.safetensors")
            && e.contains("decoder.transformer.h.1.attn.c_proj.weight")
            && e.contains("[16, 64]"),
        "{e}"
    );
}

#[test]
fn missing_tensor_names_it() {
    let dir = copy_fixture("vit", "missing");
    rewrite_weights(&dir, |t| {
        t.retain(|(n, _, _)| n != "encoder.layer.1.layernorm_before.weight")
    });
    let e = err_text(load_vision(&dir, &Device::flex()));
    assert!(
        e.contains("model.safetensors")
            && e.contains("encoder.layer.1.layernorm_before.weight")
            && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn corrupt_safetensors_names_the_file() {
    let dir = copy_fixture("gpt2", "corrupt");
    std::fs::write(
        dir.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json",
    )
    .unwrap();
    let e = err_text(load_gpt2(&dir, false, &Device::flex()));
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
}

#[test]
fn plain_gpt2_gets_fresh_cross_attention_and_says_so() {
    let loaded = load_gpt2(&fixture("gpt2"), true, &Device::flex()).unwrap();
    assert!(loaded.model.has_cross_attention());
    assert!(
        loaded
            .fresh
            .iter()
            .any(|n| n == "transformer.h.0.crossattention.q_attn.weight"),
        "{:?}",
        loaded.fresh
    );
    assert_eq!(
        loaded.fresh.len(),
        2 * 8,
        "2 layers x (c_attn, q_attn, c_proj, ln_cross_attn) x (weight, bias)"
    );
}

#[test]
fn cli_reports_unreadable_image_and_unknown_style() {
    let dir = scratch("errors", "cli");
    let bad = dir.join("not-an-image.png");
    std::fs::write(&bad, b"this is text").unwrap();
    let model = fixture("vit_gpt2");
    let out = stylecap(&[
        "caption",
        "--model",
        model.to_str().unwrap(),
        "--image",
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not-an-image.png")
            && err.contains("not a readable image")
            && !err.contains("panicked"),
        "{err}"
    );

    let styled = scratch("errors", "styled");
    let device = Device::flex();
    // The fixture's tokenizer has 320 tokens: the captioner's vocabulary must hold them.
    Captioner::new(tiny_config("vit", &["factual", "noir"], 320), &device)
        .save(&styled)
        .unwrap();
    std::fs::copy(model.join("tokenizer.json"), styled.join("tokenizer.json")).unwrap();
    let img = model.join("image.png");
    let out = stylecap(&[
        "caption",
        "--model",
        styled.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--style",
        "gothic",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unknown style `gothic`") && err.contains("factual, noir"),
        "{err}"
    );
}

/// Edits one JSON file of a captioner folder.
fn edit_json(path: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// A captioner folder whose files disagree (ids beyond the vocabulary, a tokenizer with more
/// tokens than the decoder has rows, styles without a prefix or without room for a caption,
/// preprocessing to another size or dividing by zero) is refused at load, naming the file.
#[test]
fn captioner_folders_whose_files_disagree_are_refused_at_load() {
    use stylecap::model::LoadedCaptioner;
    let device = Device::flex();
    assert!(LoadedCaptioner::load(&fixture("vit_gpt2"), &device).is_ok());
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, &str, Edit, &str)> = vec![
        (
            "eos",
            "config.json",
            Box::new(|v| v["eos_token_id"] = 320.into()),
            "field `eos_token_id` is 320; the decoder's vocabulary has ids 0 to 319",
        ),
        (
            "huge-id",
            "config.json",
            Box::new(|v| v["pad_token_id"] = (1u64 << 40).into()),
            "field `pad_token_id` is 1099511627776",
        ),
        (
            "no-prefix",
            "config.json",
            Box::new(|v| v["stylecap"] = serde_json::json!({"styles": ["a", "b"]})),
            "2 styles and `prefix_tokens` 0",
        ),
        (
            "no-room",
            "config.json",
            Box::new(|v| v["stylecap"] = serde_json::json!({"styles": ["a"], "prefix_tokens": 63})),
            "n_positions 64 leaves no room for a caption",
        ),
        (
            "tokens",
            "tokenizer.json",
            Box::new(|v| {
                let mut extra = v["added_tokens"][0].clone();
                extra["id"] = 320.into();
                extra["content"] = "<|extra|>".into();
                v["added_tokens"].as_array_mut().unwrap().push(extra);
            }),
            "token id 320, beyond the decoder's vocabulary of 320",
        ),
        (
            "std",
            "preprocessor_config.json",
            Box::new(|v| v["image_std"] = serde_json::json!([0.5, 0.0, 0.5])),
            "image_std finite and non-zero",
        ),
        (
            "size",
            "preprocessor_config.json",
            Box::new(|v| v["size"] = serde_json::json!({"height": 48, "width": 48})),
            "preprocessing gives 48x48 images; the encoder expects 32x32",
        ),
        (
            "crop",
            "preprocessor_config.json",
            Box::new(|v| {
                v["size"] = serde_json::json!({"shortest_edge": 24});
                v["do_center_crop"] = true.into();
                v["crop_size"] = serde_json::json!({"height": 32, "width": 32});
            }),
            "smaller than the crop (32x32)",
        ),
        (
            "varying",
            "preprocessor_config.json",
            Box::new(|v| v["size"] = serde_json::json!({"shortest_edge": 32})),
            "images of varying size",
        ),
    ];
    for (tag, file, edit, says) in cases {
        let dir = copy_fixture("vit_gpt2", &format!("disagree-{tag}"));
        edit_json(&dir.join(file), edit);
        let e = err_text(LoadedCaptioner::load(&dir, &device));
        assert!(e.contains(says), "{tag}: {e}");
        assert!(e.contains(file), "{tag}: the message names {file}: {e}");
    }
}

#[test]
fn hub_id_without_the_hub_feature_says_what_to_do() {
    let img = fixture("vit_gpt2").join("image.png");
    let out = stylecap(&[
        "caption",
        "--model",
        "nlpconnect/vit-gpt2-image-captioning",
        "--image",
        img.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    if cfg!(feature = "hub") {
        assert!(
            err.contains("nlpconnect/vit-gpt2-image-captioning"),
            "{err}"
        );
    } else {
        assert!(
            err.contains("--features hub") && err.contains("download the model"),
            "{err}"
        );
    }
}

/// `stylecap caption --greedy --json` on the VisionEncoderDecoder fixture gives transformers'
/// tokens (the fixture's first reference row is this PNG through transformers' processor).
#[test]
fn cli_caption_json_matches_transformers() {
    let model = fixture("vit_gpt2");
    let img = model.join("image.png");
    let out = stylecap(&[
        "caption",
        "--model",
        model.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--greedy",
        "--max-new-tokens",
        "16",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<i64> = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    let r = reference("vit_gpt2");
    let want = ints(r.int_tensor::<2>("generated", &Device::flex()).unwrap());
    let want = &want[..16];
    let end = want.iter().position(|&t| t == 0).map_or(16, |i| i + 1);
    assert_eq!(got, want[..end].to_vec());
    assert_eq!(v["logprobs"].as_array().unwrap().len(), got.len());
    assert!(v["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l.as_f64().unwrap() <= 0.0));
    assert!(v["caption"].is_string());
}
