//! Parity with transformers: the fixtures in tests/fixtures were written by
//! tools/make_fixtures.py from tiny random transformers models, with their inputs and outputs.

mod common;

use burn::prelude::*;
use common::*;
use stylecap::data::image::{open_rgb, PreprocessorConfig};
use stylecap::model::generate::{generate, DecodeOptions, Strategy};
use stylecap::model::gpt2::DecoderCache;
use stylecap::model::pretrained::{load_gpt2, load_vision};
use stylecap::model::vision::VisionEncoder;
use stylecap::model::Captioner;

const TOL: f32 = 1e-4;

fn device() -> Device {
    Device::flex()
}

#[test]
fn vit_matches_transformers() {
    let d = device();
    let (_, model) = load_vision(&fixture("vit"), &d).unwrap();
    let r = reference("vit");
    let out = model.forward(r.tensor::<4>("pixel_values", &d).unwrap());
    let diff = max_abs_diff(out.clone(), r.tensor("last_hidden_state", &d).unwrap());
    assert!(diff <= TOL, "ViT last_hidden_state differs by {diff}");
    let VisionEncoder::Vit(vit) = &model else {
        panic!("expected a ViT")
    };
    let pooled = vit.pooled(out).expect("fixture has a pooler");
    let diff = max_abs_diff(pooled, r.tensor("pooler_output", &d).unwrap());
    assert!(diff <= TOL, "ViT pooler_output differs by {diff}");
}

#[test]
fn clip_vision_matches_transformers() {
    let d = device();
    let (_, model) = load_vision(&fixture("clip_vision"), &d).unwrap();
    let r = reference("clip_vision");
    let out = model.forward(r.tensor::<4>("pixel_values", &d).unwrap());
    let diff = max_abs_diff(out.clone(), r.tensor("last_hidden_state", &d).unwrap());
    assert!(diff <= TOL, "CLIP last_hidden_state differs by {diff}");
    let VisionEncoder::Clip(clip) = &model else {
        panic!("expected CLIP")
    };
    let diff = max_abs_diff(clip.pooled(out), r.tensor("pooler_output", &d).unwrap());
    assert!(diff <= TOL, "CLIP pooler_output differs by {diff}");
}

/// Preprocessing follows preprocessor_config.json and resizes with Pillow's arithmetic, so it
/// reproduces transformers' PIL image processors exactly (up to float rounding).
#[test]
fn preprocessing_matches_transformers_pil_processors() {
    let d = device();
    for name in ["vit", "clip_vision", "vit_gpt2"] {
        let dir = fixture(name);
        let cfg = PreprocessorConfig::load(&dir.join("preprocessor_config.json")).unwrap();
        let img = open_rgb(&dir.join("image.png")).unwrap();
        let ours = cfg.batch(&[img], &d).unwrap();
        let theirs = reference(name).tensor::<4>("image_pixels", &d).unwrap();
        assert_eq!(ours.dims(), theirs.dims(), "{name}: preprocessed shape");
        let diff = max_abs_diff(ours, theirs);
        assert!(diff <= 1e-5, "{name}: preprocessed pixels differ by {diff}");
    }
}

fn gpt2_parity(name: &str, cross: bool) {
    let d = device();
    let loaded = load_gpt2(&fixture(name), false, &d).unwrap();
    assert!(loaded.fresh.is_empty());
    let model = loaded.model;
    assert_eq!(model.has_cross_attention(), cross);
    let r = reference(name);
    let ids = r.int_tensor::<2>("input_ids", &d).unwrap();
    let mask = r.int_tensor::<2>("attention_mask", &d).unwrap();
    let enc = cross.then(|| r.tensor::<3>("encoder_hidden_states", &d).unwrap());
    let logits = model.forward(ids, Some(mask.clone()), enc.clone());
    let expected = r.tensor::<3>("logits", &d).unwrap();
    // Padded positions are free to differ; compare the real ones.
    let m = ints(mask);
    let (a, b) = (values(logits), values(expected));
    let v = model.vocab_size();
    let mut max = 0f32;
    for (pos, keep) in m.iter().enumerate() {
        if *keep == 1 {
            for k in 0..v {
                max = max.max((a[pos * v + k] - b[pos * v + k]).abs());
            }
        }
    }
    assert!(max <= TOL, "{name}: logits differ by {max}");

    // Greedy generation with the KV cache, token for token.
    let prompt = r.int_tensor::<2>("prompt", &d).unwrap();
    let want = ints(r.int_tensor::<2>("generated", &d).unwrap());
    let [b, p] = prompt.dims();
    let steps = want.len() / b;
    let cross_kv = enc.map(|e| model.cross_kv(e));
    let mut cache = DecoderCache::default();
    let mut x = model.embed_tokens(prompt);
    let mut got = vec![Vec::new(); b];
    for _ in 0..steps {
        let t = x.dims()[1];
        let h = model.forward_hidden(x, None, cross_kv.as_deref(), Some(&mut cache));
        let next = model.lm_head(h.narrow(1, t - 1, 1)).argmax(2).reshape([b]);
        for (i, tok) in ints(next.clone()).into_iter().enumerate() {
            got[i].push(tok);
        }
        x = model.embed_tokens(next.reshape([b, 1]));
    }
    assert_eq!(cache.len, p + steps - 1);
    assert_eq!(
        got.concat(),
        want,
        "{name}: greedy generation differs from transformers"
    );
}

#[test]
fn gpt2_matches_transformers() {
    gpt2_parity("gpt2", false);
}

#[test]
fn gpt2_with_cross_attention_matches_transformers() {
    gpt2_parity("gpt2_cross", true);
}

/// Tokens up to and including the end token (transformers pads finished rows).
fn until_end(tokens: &[i64], end: i64) -> Vec<i64> {
    match tokens.iter().position(|&t| t == end) {
        Some(i) => tokens[..=i].to_vec(),
        None => tokens.to_vec(),
    }
}

#[test]
fn vision_encoder_decoder_matches_transformers() {
    let d = device();
    let model = Captioner::load(&fixture("vit_gpt2"), &d).unwrap();
    assert!(
        model.enc_to_dec_proj.is_some(),
        "encoder 24 wide, decoder 32: transformers adds enc_to_dec_proj"
    );
    let r = reference("vit_gpt2");
    let pixels = r.tensor::<4>("pixel_values", &d).unwrap();
    let enc = model.encoder.forward(pixels.clone());
    let diff = max_abs_diff(enc, r.tensor("encoder_last_hidden_state", &d).unwrap());
    assert!(diff <= TOL, "encoder states differ by {diff}");
    let logits = model.forward(
        pixels.clone(),
        None,
        r.int_tensor::<2>("decoder_input_ids", &d).unwrap(),
        None,
    );
    let diff = max_abs_diff(logits, r.tensor("logits", &d).unwrap());
    assert!(diff <= TOL, "logits differ by {diff}");

    let end = model.config.eos_token_id.unwrap() as i64;
    let want = ints(r.int_tensor::<2>("generated", &d).unwrap());
    let opts = DecodeOptions {
        strategy: Strategy::Greedy,
        max_new_tokens: 16,
        seed: 0,
    };
    let got = generate(&model, pixels.clone(), None, &opts).unwrap();
    for (i, g) in got.iter().enumerate() {
        let g: Vec<i64> = g.tokens.iter().map(|&t| t as i64).collect();
        assert_eq!(
            g,
            until_end(&want[i * 16..(i + 1) * 16], end),
            "greedy caption {i} differs"
        );
    }

    let want = ints(r.int_tensor::<2>("beam_generated", &d).unwrap());
    let opts = DecodeOptions {
        strategy: Strategy::Beam {
            num_beams: 3,
            length_penalty: 1.0,
        },
        max_new_tokens: 8,
        seed: 0,
    };
    let got = generate(&model, pixels.narrow(0, 0, 1), None, &opts).unwrap();
    let g: Vec<i64> = got[0].tokens.iter().map(|&t| t as i64).collect();
    assert_eq!(
        g,
        until_end(&want, end),
        "beam search differs from transformers"
    );
}
