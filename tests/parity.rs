//! Parity with transformers: the fixtures in tests/fixtures were written by
//! tools/make_fixtures.py from tiny random transformers models, with their inputs and outputs.

mod common;

use burn::prelude::*;
use common::*;
use stylecap::data::image::{open_rgb, PreprocessorConfig};
use stylecap::model::folder::save_adapters;
use stylecap::model::generate::{generate, DecodeOptions, Strategy};
use stylecap::model::gpt2::DecoderCache;
use stylecap::model::lora::{self, LoraConfig, ADAPTER_WEIGHTS};
use stylecap::model::pretrained::{load_gpt2, load_vision};
use stylecap::model::vision::VisionEncoder;
use stylecap::model::weights::SafetensorsFile;
use stylecap::model::{Captioner, LoadedCaptioner};

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
        ..DecodeOptions::default()
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
        ..DecodeOptions::default()
    };
    let got = generate(&model, pixels.narrow(0, 0, 1), None, &opts).unwrap();
    let g: Vec<i64> = got[0].tokens.iter().map(|&t| t as i64).collect();
    assert_eq!(
        g,
        until_end(&want, end),
        "beam search differs from transformers"
    );
}

/// A PEFT LoRA adapter over the `vit_gpt2` fixture (rank 4, α 8, attention, cross-attention
/// and MLP projections, random A and B), as PEFT saved it: stylecap opens the folder,
/// computes PEFT's logits with the adapters and after `merge_and_unload`, and writes back the
/// file PEFT wrote (same names, shapes and values).
#[test]
fn lora_adapters_match_peft() {
    let d = device();
    let dir = fixture("vit_gpt2_lora");
    let loaded = LoadedCaptioner::load(&dir, &d).unwrap();
    assert_eq!(
        lora::config_of(&loaded.model),
        Some(LoraConfig {
            rank: 4,
            alpha: 8.0,
            mlp: true
        })
    );
    let base = reference("vit_gpt2");
    let r = reference("vit_gpt2_lora");
    let pixels = base.tensor::<4>("pixel_values", &d).unwrap();
    let ids = base.int_tensor::<2>("decoder_input_ids", &d).unwrap();
    let logits = loaded
        .model
        .forward(pixels.clone(), None, ids.clone(), None);
    let effect = max_abs_diff(logits.clone(), base.tensor("logits", &d).unwrap());
    assert!(
        effect > 0.1,
        "the adapters change the logits by only {effect}"
    );
    let diff = max_abs_diff(logits.clone(), r.tensor("logits", &d).unwrap());
    assert!(
        diff <= TOL,
        "logits with the adapters differ from PEFT's by {diff}"
    );

    let merged = lora::merge_adapters(loaded.model.clone());
    let out = merged.forward(pixels.clone(), None, ids.clone(), None);
    let diff = max_abs_diff(out, r.tensor("merged_logits", &d).unwrap());
    assert!(diff <= TOL, "merged logits differ from PEFT's by {diff}");

    let saved = scratch("parity", "lora_round_trip");
    save_adapters(
        &saved,
        &loaded.model,
        &fixture("vit_gpt2"),
        &loaded.tokenizer,
        &loaded.preprocess,
    )
    .unwrap();
    let ours = SafetensorsFile::open(&saved.join(ADAPTER_WEIGHTS)).unwrap();
    let peft = SafetensorsFile::open(&dir.join(ADAPTER_WEIGHTS)).unwrap();
    let names = |f: &SafetensorsFile| {
        f.names()
            .map(str::to_string)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        names(&ours),
        names(&peft),
        "tensor names differ from PEFT's"
    );
    for name in names(&peft) {
        assert_eq!(
            ours.get(&name),
            peft.get(&name),
            "tensor `{name}` differs from PEFT's"
        );
    }
    let again = LoadedCaptioner::load(&saved, &d).unwrap();
    let diff = max_abs_diff(again.model.forward(pixels, None, ids, None), logits);
    assert!(
        diff == 0.0,
        "the saved adapter folder reopens with logits {diff} apart"
    );
}

/// A tiny `CLIPModel` folder (tokenizer, image processor, both towers and projections):
/// token ids, pixels, `get_image_features` and `get_text_features` as transformers gives them,
/// and CLIPScore / RefCLIPScore computed from transformers' features.
#[test]
fn clip_model_scores_match_transformers() {
    use stylecap::model::clip_score::ClipScorer;
    let d = device();
    let dir = fixture("clip_model");
    let r = reference("clip_model");
    let scorer = ClipScorer::load(&dir, &d).unwrap();
    let texts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("texts.json")).unwrap()).unwrap();
    let captions: Vec<String> = serde_json::from_value(texts["captions"].clone()).unwrap();
    let references: Vec<Vec<String>> = serde_json::from_value(texts["references"].clone()).unwrap();
    let caps: Vec<&str> = captions.iter().map(String::as_str).collect();

    // Token ids: transformers' padded rows (padding is the end token) cut to each text's own.
    let ids = ints(r.int_tensor::<2>("input_ids", &d).unwrap());
    let mask = ints(r.int_tensor::<2>("attention_mask", &d).unwrap());
    let t = ids.len() / caps.len();
    let max_positions = scorer.config.text.max_position_embeddings;
    for (i, c) in caps.iter().enumerate() {
        let theirs: Vec<i64> = (0..t)
            .filter(|&j| mask[i * t + j] == 1)
            .map(|j| ids[i * t + j])
            .collect();
        let ours: Vec<i64> = scorer
            .token_ids(c)
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(ours, theirs, "token ids of {c:?}");
        assert!(ours.len() <= max_positions);
    }
    assert!(
        (0..caps.len()).any(|i| mask[i * t..(i + 1) * t].iter().all(|&m| m == 1)),
        "no caption of the fixture is long enough to be truncated"
    );

    // Pixels by CLIP's image processor, whose single `size` is the short side.
    let images = [
        open_rgb(&dir.join("image.png")).unwrap(),
        open_rgb(&dir.join("image2.png")).unwrap(),
    ];
    let refs: Vec<&image::RgbImage> = images.iter().collect();
    let diff = max_abs_diff(
        scorer.pixels(&refs),
        r.tensor::<4>("image_pixels", &d).unwrap(),
    );
    assert!(diff <= 1e-5, "CLIP pixels differ by {diff}");

    let flat = |rows: Vec<Vec<f32>>| rows.into_iter().flatten().collect::<Vec<f32>>();
    let close = |ours: &[f32], theirs: &[f32], what: &str| {
        assert_eq!(ours.len(), theirs.len(), "{what}: length");
        let diff = max_diff(ours, theirs);
        eprintln!("{what}: max difference {diff:e}");
        assert!(diff <= TOL, "{what} differs by {diff}");
    };
    let image_embeds = values(r.tensor::<2>("image_embeds", &d).unwrap());
    close(
        &flat(scorer.image_features(&refs)),
        &image_embeds,
        "image features",
    );
    let text_embeds = values(r.tensor::<2>("text_embeds", &d).unwrap());
    close(
        &flat(scorer.text_features(&caps).unwrap()),
        &text_embeds,
        "text features",
    );

    // CLIP-S of every caption with each picture, and RefCLIP-S of caption i with picture
    // i % 2 (NaN in the reference where the caption has no references).
    let clip = values(r.tensor::<2>("clip_score", &d).unwrap());
    for (k, img) in refs.iter().enumerate() {
        let ours = scorer.clip_score(&caps, &vec![*img; caps.len()]).unwrap();
        let theirs: Vec<f32> = (0..caps.len()).map(|i| clip[i * 2 + k]).collect();
        close(&ours, &theirs, &format!("CLIP-S with picture {k}"));
    }
    let own: Vec<&image::RgbImage> = (0..caps.len()).map(|i| refs[i % 2]).collect();
    let lists: Vec<&[String]> = references.iter().map(Vec::as_slice).collect();
    let ours = scorer.ref_clip_score(&caps, &own, &lists).unwrap();
    let theirs = values(r.tensor::<1>("ref_clip_score", &d).unwrap());
    for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
        match o {
            None => assert!(
                t.is_nan(),
                "caption {i}: no RefCLIP-S, transformers gives {t}"
            ),
            Some(o) => assert!((o - t).abs() <= TOL, "caption {i}: RefCLIP-S {o} vs {t}"),
        }
    }
    assert!(
        theirs.iter().filter(|t| **t > 0.0).count() >= 2,
        "the fixture's RefCLIP-S are degenerate: {theirs:?}"
    );
}

/// A CLIP folder missing a part is refused, naming the file.
#[test]
fn clip_folder_without_a_part_is_refused_naming_it() {
    use stylecap::model::clip_score::ClipScorer;
    let d = device();
    let src = fixture("clip_model");
    for missing in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        let dir = scratch("parity", &format!("clip-without-{missing}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap();
            if f.file_name() != missing {
                std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
            }
        }
        let e = format!("{:#}", ClipScorer::load(&dir, &d).err().unwrap());
        assert!(e.contains(missing), "without {missing}: {e}");
    }
}
