//! The captioner trains correctly: gradients reach every parameter and agree with finite
//! differences, a tiny model overfits, decoding with the KV cache equals full recomputation,
//! checkpoints round-trip, and the same seed gives the same run.

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use common::*;
use stylecap::data::tokenizer::TextTokenizer;
use stylecap::model::captioner::EncodedImages;
use stylecap::model::gpt2::KeyValue;
use stylecap::model::lora::{self, LoraConfig};
use stylecap::model::repeats::Repeats;
use stylecap::model::weights::{read_named, replace_named, StoredTensor, Values};
use stylecap::model::{generate, Captioner, DecodeOptions, Strategy};
use stylecap::optim::grads::named_gradients;
use stylecap::optim::{Accumulated, AdamW, AdamWConfig};
use stylecap::sft::step::{batch_loss, teacher_forcing, CaptionBatch};
use stylecap::tensor::index_tensor;

fn batch(model: &Captioner, device: &Device, styled: bool) -> CaptionBatch {
    let captions = vec![vec![5, 9, 12, 7], vec![3, 3, 20], vec![40, 2, 11, 6, 8]];
    let (input_ids, targets, mask) = teacher_forcing(&captions, 0, 1, 1, device);
    let styles = (styled && model.style_prefix.is_some())
        .then(|| Tensor::from_data(TensorData::new(vec![0i64, 1, 0], [3]), device));
    CaptionBatch {
        pixel_values: Tensor::random([3, 3, 16, 16], Distribution::Normal(0.0, 1.0), device),
        encoder_states: None,
        pictures: vec![0, 1, 2],
        styles,
        input_ids,
        targets,
        mask,
    }
}

fn assert_all_params_learn(encoder: &str, exempt: &[&str]) {
    let device = Device::flex().autodiff();
    let model = tiny_captioner(encoder, &["factual", "noir"], &device);
    let b = batch(&model, &device, true);
    let grads = batch_loss(&model, &b).backward();
    let named = named_gradients(&model, &grads);
    assert!(
        named.len() > 40,
        "expected many parameters, got {}",
        named.len()
    );
    for (name, grad) in named {
        if exempt.contains(&name.as_str()) {
            continue;
        }
        let g = grad.unwrap_or_else(|| panic!("{name} received no gradient"));
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{name} has a non-finite gradient"
        );
        let norm: f32 = g.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(norm > 0.0, "{name} has an all-zero gradient");
    }
}

#[test]
fn every_parameter_of_a_vit_captioner_gets_a_gradient() {
    let _turn = serial();
    assert_all_params_learn("vit", &[]);
}

/// CLIP's `post_layernorm` only feeds the pooled output, which a captioner does not use
/// (as in transformers), so it is the one parameter without a gradient here.
#[test]
fn every_parameter_of_a_clip_captioner_gets_a_gradient() {
    let _turn = serial();
    assert_all_params_learn(
        "clip_vision_model",
        &[
            "encoder.post_layernorm.weight",
            "encoder.post_layernorm.bias",
        ],
    );
}

/// Central differences against autodiff for entries of every kind of parameter: patch
/// convolution and its shape channel, CLS token, position embeddings, attention projections, layer norms,
/// cross-attention, the encoder-decoder projection, the style prefix and the tied embedding.
#[test]
fn gradients_match_finite_differences() {
    let _turn = serial();
    let ad = Device::flex().autodiff();
    let model = tiny_captioner("vit", &["factual", "noir"], &ad);
    let b = batch(&model, &ad, true);
    let checks = [
        "encoder.embeddings.patch_embeddings.projection.weight",
        "encoder.embeddings.patch_embeddings.shape_projection.weight",
        "encoder.embeddings.cls_token",
        "encoder.embeddings.position_embeddings",
        "encoder.encoder.layer.0.attention.attention.query.weight",
        "encoder.encoder.layer.1.layernorm_after.weight",
        "encoder.layernorm.bias",
        "enc_to_dec_proj.weight",
        "style_prefix",
        "decoder.transformer.wte.weight",
        "decoder.transformer.wpe.weight",
        "decoder.transformer.h.0.attn.c_attn.weight",
        "decoder.transformer.h.1.crossattention.q_attn.weight",
        "decoder.transformer.h.0.crossattention.c_attn.bias",
        "decoder.transformer.h.1.ln_cross_attn.weight",
        "decoder.transformer.h.1.mlp.c_fc.weight",
        "decoder.transformer.ln_f.bias",
    ];
    assert_matches_finite_differences(&model, &b, &checks);
}

/// Central differences against autodiff for the three entries with the largest gradient of
/// each parameter in `checks` (well above float noise).
fn assert_matches_finite_differences(model: &Captioner, b: &CaptionBatch, checks: &[&str]) {
    let plain = Device::flex();
    let grads = batch_loss(model, b).backward();
    let named = named_gradients(model, &grads);
    let plain_model = model.clone().to_device(&plain);
    let plain_batch = CaptionBatch {
        pixel_values: b.pixel_values.clone().to_device(&plain),
        encoder_states: None,
        pictures: b.pictures.clone(),
        styles: b.styles.clone().map(|s| s.to_device(&plain)),
        input_ids: b.input_ids.clone().to_device(&plain),
        targets: b.targets.clone().to_device(&plain),
        mask: b.mask.clone().to_device(&plain),
    };
    let base: std::collections::HashMap<String, StoredTensor> =
        read_named(&plain_model, "", &mut Values)
            .into_iter()
            .map(|(n, t)| (n, t.unwrap()))
            .collect();
    let loss_with = |name: &str, index: usize, delta: f32| -> f64 {
        let m = replace_named(plain_model.clone(), "", |n, _| {
            (n == name).then(|| {
                let mut t = base[name].clone();
                t.values[index] += delta;
                t
            })
        });
        batch_loss(&m, &plain_batch).into_scalar::<f32>() as f64
    };
    let eps = 5e-3f32;
    for &name in checks {
        let grad = named
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no parameter {name}"))
            .1
            .clone()
            .unwrap();
        let mut order: Vec<usize> = (0..grad.len()).collect();
        order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
        for &i in order.iter().take(3) {
            let numeric = (loss_with(name, i, eps) - loss_with(name, i, -eps)) / (2.0 * eps as f64);
            let analytic = grad[i] as f64;
            let err = (numeric - analytic).abs();
            assert!(
                err <= 2e-3 + 0.03 * analytic.abs(),
                "{name}[{i}]: autodiff {analytic:.6}, finite difference {numeric:.6}"
            );
        }
    }
}

/// LoRA on the decoder: with the base frozen, every adapter parameter and nothing else gets a
/// gradient (finite, non-zero, agreeing with finite differences); fresh adapters leave the
/// output unchanged, and merged ones give the logits of base + adapters.
#[test]
fn lora_adapters_train_alone_and_merge_exactly() {
    let _turn = serial();
    let ad = Device::flex().autodiff();
    let base = tiny_captioner("vit", &["factual", "noir"], &ad);
    let b = batch(&base, &ad, true);
    let config = LoraConfig {
        rank: 3,
        alpha: 6.0,
        mlp: true,
    };
    let model = lora::add_adapters(base.clone(), &config, &ad);
    assert_eq!(lora::config_of(&model), Some(config));
    let (l0, l1) = (batch_loss(&base, &b), batch_loss(&model, &b));
    let d = (l0 - l1).abs().into_scalar::<f32>();
    assert!(d < 1e-6, "fresh adapters changed the loss by {d}");
    // B starts at zero, where A's gradient vanishes: give B values so both are exercised.
    let model = replace_named(model, "", |name, shape| {
        name.contains(".lora_B.").then(|| StoredTensor {
            shape: shape.to_vec(),
            values: (0..shape.iter().product::<usize>())
                .map(|i| ((i * 7919 + name.len()) % 101) as f32 / 250.0 - 0.2)
                .collect(),
        })
    });
    let model = lora::freeze_base(model);
    let grads = batch_loss(&model, &b).backward();
    let named = named_gradients(&model, &grads);
    let adapters = named
        .iter()
        .filter(|(n, _)| lora::is_adapter_param(n))
        .count();
    // 2 blocks × (2 self-attention + 3 cross-attention + 2 MLP projections) × (A, B).
    assert_eq!(adapters, 28);
    for (name, grad) in &named {
        match (lora::is_adapter_param(name), grad) {
            (true, Some(g)) => assert!(
                g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0),
                "{name}: gradient not finite and non-zero"
            ),
            (true, None) => panic!("adapter {name} received no gradient"),
            (false, Some(_)) => panic!("frozen {name} received a gradient"),
            (false, None) => {}
        }
    }
    assert_matches_finite_differences(
        &model,
        &b,
        &[
            "decoder.transformer.h.0.attn.c_attn.lora_A.weight",
            "decoder.transformer.h.1.attn.c_proj.lora_B.weight",
            "decoder.transformer.h.0.crossattention.q_attn.lora_A.weight",
            "decoder.transformer.h.1.crossattention.c_attn.lora_B.weight",
            "decoder.transformer.h.1.mlp.c_fc.lora_A.weight",
            "decoder.transformer.h.0.mlp.c_proj.lora_B.weight",
        ],
    );
    let plain = Device::flex();
    let model = model.to_device(&plain);
    let merged = lora::merge_adapters(model.clone());
    assert_eq!(lora::config_of(&merged), None);
    let b = CaptionBatch {
        pixel_values: b.pixel_values.to_device(&plain),
        encoder_states: None,
        pictures: b.pictures,
        styles: b.styles.map(|s| s.to_device(&plain)),
        input_ids: b.input_ids.to_device(&plain),
        targets: b.targets.to_device(&plain),
        mask: b.mask.to_device(&plain),
    };
    let logits = |m: &Captioner| {
        m.forward(
            b.pixel_values.clone(),
            b.styles.clone(),
            b.input_ids.clone(),
            None,
        )
    };
    let (with_adapters, folded) = (logits(&model), logits(&merged));
    let effect = max_abs_diff(with_adapters.clone(), logits(&base.to_device(&plain)));
    assert!(
        effect > 1e-2,
        "the adapters change the logits by only {effect}"
    );
    let diff = max_abs_diff(with_adapters, folded);
    assert!(
        diff < 1e-5,
        "merged logits differ from base + adapters by {diff}"
    );
}

/// Eight images and eight captions: a from-scratch captioner must learn them by heart.
#[test]
fn tiny_captioner_overfits_eight_pairs() {
    let _turn = serial();
    let device = Device::flex().autodiff();
    let sentences = [
        "a red car beside a house",
        "two birds over a tower",
        "a boat under the moon",
        "the sun above a tree",
        "a cat near a lamp post",
        "snow on the mountain",
        "a purple flower at dusk",
        "fog around the tower",
    ];
    let tok = TextTokenizer::train_bpe(sentences.iter().map(|s| s.to_string()), 300).unwrap();
    let eot = tok.end_of_text().unwrap();
    device.seed(3);
    let mut cfg = tiny_config("vit", &[], tok.vocab_size());
    cfg = stylecap::model::CaptionerConfig::new(cfg.encoder, cfg.decoder, eot, eot, cfg.style);
    let mut model = Captioner::new(cfg, &device);
    let captions: Vec<Vec<u32>> = sentences.iter().map(|s| tok.encode(s).unwrap()).collect();
    let (input_ids, targets, mask) = teacher_forcing(&captions, eot, eot, eot, &device);
    let pixels = Tensor::<4>::random([8, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let b = CaptionBatch {
        pixel_values: pixels.clone(),
        encoder_states: None,
        pictures: (0..8).collect(),
        styles: None,
        input_ids,
        targets,
        mask,
    };
    let mut optim = optimizer();
    let mut loss = f32::MAX;
    for _ in 0..400 {
        let (m, l) = train_step(model, &mut optim, &b, 3e-3);
        model = m;
        loss = l;
        if loss < 0.02 {
            break;
        }
    }
    assert!(loss < 0.05, "final training loss {loss}");
    let out = generate(
        &model,
        pixels,
        None,
        &DecodeOptions {
            max_new_tokens: 20,
            ..Default::default()
        },
    )
    .unwrap();
    for (g, s) in out.iter().zip(sentences) {
        assert_eq!(tok.decode(&g.tokens).unwrap().trim(), s);
    }
}

/// Rows that share pictures (samples or beams of each) attend to each picture's keys and values
/// as they are: the same logits, gradients and decoded captions as with the keys repeated for
/// every row, and rows in any other order still gathered.
#[test]
fn rows_sharing_pictures_match_repeated_pictures() {
    let _turn = serial();
    let device = Device::flex().autodiff();
    let mut model = tiny_captioner("vit", &["factual", "noir"], &device);
    model.config.eos_token_id = None;
    let pixels = Tensor::<4>::random([3, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let rows = [0usize, 0, 1, 1, 2, 2];
    let repeat = |enc: &EncodedImages| EncodedImages {
        cross: enc
            .cross
            .iter()
            .map(|kv| KeyValue {
                k: kv.k.clone().select(0, index_tensor(&rows, &device)),
                v: kv.v.clone().select(0, index_tensor(&rows, &device)),
            })
            .collect(),
    };
    let styles = || index_tensor(&[1, 0, 0, 1, 1, 0], &device);
    let ids: Vec<i64> = (0..6 * 7).map(|i| (i * 13 % 49 + 1) as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [6, 7]), &device);
    let weights = Tensor::<3>::random([6, 7, 50], Distribution::Normal(0.0, 1.0), &device);

    let mut results = Vec::new();
    for shared in [true, false] {
        let enc = model.encode(pixels.clone());
        let enc = if shared {
            enc.for_rows(&rows)
        } else {
            repeat(&enc)
        };
        assert_eq!(enc.cross[0].k.dims()[0], if shared { 3 } else { 6 });
        let logits = model.forward_encoded(&enc, Some(styles()), ids.clone(), None);
        let grads = (logits.clone() * weights.clone()).sum().backward();
        results.push((values(logits), named_gradients(&model, &grads)));
    }
    let ((shared_logits, shared_grads), (repeated_logits, repeated_grads)) =
        (&results[0], &results[1]);
    let diff = max_diff(shared_logits, repeated_logits);
    assert!(diff <= 1e-5, "logits differ by {diff}");
    assert_eq!(shared_grads.len(), repeated_grads.len());
    let mut compared = 0;
    for ((name, a), (_, b)) in shared_grads.iter().zip(repeated_grads) {
        let (a, b) = (a.as_ref(), b.as_ref());
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "{name}: a gradient on one side only"
        );
        if let (Some(a), Some(b)) = (a, b) {
            let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let diff = max_diff(a, b);
            assert!(
                diff <= 1e-5 * scale,
                "{name}: gradients differ by {diff} (scale {scale})"
            );
            compared += 1;
        }
    }
    assert!(compared > 40, "only {compared} gradients compared");

    // Decoding: each picture's captions from its shared keys, sampled and greedy.
    let model = model.valid();
    let pixels = pixels.inner();
    let enc = model.encode(pixels);
    for strategy in [
        Strategy::Greedy,
        Strategy::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        },
    ] {
        let opts = DecodeOptions {
            strategy,
            max_new_tokens: 10,
            seed: 3,
            ..DecodeOptions::default()
        };
        let styles = [1usize, 0, 0, 1, 1, 0];
        let shared =
            generate::sample_or_greedy(&model, &enc.for_rows(&rows), Some(&styles), 6, &opts);
        let repeated = generate::sample_or_greedy(&model, &repeat(&enc), Some(&styles), 6, &opts);
        for (a, b) in shared.iter().zip(&repeated) {
            assert_eq!(a.tokens, b.tokens);
            assert!(max_diff(&a.logprobs, &b.logprobs) <= 1e-5);
        }
    }
    // Any other order of rows is gathered.
    assert_eq!(enc.for_rows(&[2, 0, 1, 1]).cross[0].k.dims()[0], 4);
    assert_eq!(enc.for_rows(&[0, 1, 2, 0, 1, 2]).cross[0].k.dims()[0], 6);
}

/// Incremental decoding with the KV cache gives the tokens and log-probs of recomputing the
/// whole sequence at every step.
#[test]
fn kv_cache_matches_full_recomputation() {
    let _turn = serial();
    let device = Device::flex();
    let mut model = tiny_captioner("vit", &["factual", "noir"], &device);
    // No end token, so that every caption runs all 12 steps through the cache.
    model.config.eos_token_id = None;
    let pixels = Tensor::<4>::random([3, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let styles = [1usize, 0, 1];
    for strategy in [
        Strategy::Greedy,
        Strategy::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.9,
        },
    ] {
        let opts = DecodeOptions {
            strategy: strategy.clone(),
            max_new_tokens: 12,
            seed: 5,
            ..DecodeOptions::default()
        };
        let cached = generate(&model, pixels.clone(), Some(&styles), &opts).unwrap();
        for (i, g) in cached.iter().enumerate() {
            let px = pixels.clone().narrow(0, i, 1);
            let style = Some(Tensor::<1, Int>::from_data(
                TensorData::new(vec![styles[i] as i64], [1]),
                &device,
            ));
            let mut ids = vec![0i64];
            for (step, &tok) in g.tokens.iter().enumerate() {
                let t = ids.len();
                let input =
                    Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, t]), &device);
                let logits = model
                    .forward(px.clone(), style.clone(), input, None)
                    .narrow(1, t - 1, 1)
                    .reshape([1, 50]);
                let lp = values(burn::tensor::activation::log_softmax(logits, 1));
                if strategy == Strategy::Greedy {
                    assert_eq!(
                        stylecap::model::generate::argmax(&lp),
                        tok as usize,
                        "caption {i} step {step}"
                    );
                }
                let diff = (lp[tok as usize] - g.logprobs[step]).abs();
                assert!(
                    diff <= 1e-5,
                    "caption {i} step {step}: log-prob differs by {diff}"
                );
                ids.push(tok as i64);
            }
            assert_eq!(g.tokens.len(), 12, "caption {i} stopped early");
        }
    }
}

/// The tiny styled captioner without an end token, four random pictures and their encoding.
fn four_pictures_to_decode() -> (Captioner, Tensor<4>, EncodedImages) {
    let device = Device::flex();
    let mut model = tiny_captioner("vit", &["factual", "noir"], &device);
    model.config.eos_token_id = None;
    let pixels = Tensor::<4>::random([4, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let encoded = model.encode(pixels.clone());
    (model, pixels, encoded)
}

/// Decoding with every choice on the device (the GPU path, run here on the CPU backend):
/// greedy rows give the host path's tokens and log-probabilities, rows end at the end token
/// or their own limit, and sampled tokens carry the model's log-probabilities.
#[test]
fn device_decoding_matches_the_host_path() {
    let _turn = serial();
    let (mut model, pixels, encoded) = four_pictures_to_decode();
    let styles = [1usize, 0, 1, 0];
    let limits = [12usize, 5, 0, 9];
    let off = [Repeats::default(); 4];
    let greedy = |_| generate::Choice::Greedy;
    let host = generate::decode_rows(&model, &encoded, Some(&styles), &limits, &off, greedy);
    // An end token that one row reaches mid-caption, so that rows end at it too.
    let eos = host[0].tokens[4];
    model.config.eos_token_id = Some(eos);
    let host = generate::decode_rows(&model, &encoded, Some(&styles), &limits, &off, greedy);
    let on_device =
        generate::decode_rows_on_device(&model, &encoded, Some(&styles), &limits, &off, greedy);
    assert!(host[0].tokens.len() <= 5 && host[0].tokens.last() == Some(&eos));
    for (i, (h, d)) in host.iter().zip(&on_device).enumerate() {
        assert_eq!(h.tokens, d.tokens, "row {i}");
        assert!(h.tokens.len() <= limits[i]);
        for (a, b) in h.logprobs.iter().zip(&d.logprobs) {
            assert!((a - b).abs() <= 1e-5, "row {i}: log-prob {a} against {b}");
        }
    }
    // Sampled rows: each token's log-probability is the model's, by full recomputation.
    model.config.eos_token_id = None;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(4);
    let sampled =
        generate::decode_rows_on_device(&model, &encoded, Some(&styles), &[8; 4], &off, |_| {
            generate::Choice::draw(1.0, 0, 0.9, &mut rng)
        });
    for (i, g) in sampled.iter().enumerate() {
        assert_eq!(g.tokens.len(), 8, "row {i}");
        let own = model_logprobs(&model, pixels.clone().narrow(0, i, 1), styles[i], &g.tokens);
        for (step, (a, b)) in own.iter().zip(&g.logprobs).enumerate() {
            let diff = (a - b).abs();
            assert!(
                diff <= 1e-5,
                "row {i} step {step}: log-prob differs by {diff}"
            );
        }
    }
}

/// Whether some n-gram of `tokens` comes twice.
fn repeats_an_ngram(tokens: &[u32], n: usize) -> bool {
    let mut seen = std::collections::HashSet::new();
    tokens.windows(n).any(|g| !seen.insert(g.to_vec()))
}

/// The model's log-probability of each of `tokens` after the start token, by one teacher-forced
/// pass over the caption.
fn model_logprobs(model: &Captioner, pixels: Tensor<4>, style: usize, tokens: &[u32]) -> Vec<f32> {
    let device = pixels.device();
    let mut ids = vec![model.config.decoder_start_token_id as i64];
    ids.extend(tokens[..tokens.len() - 1].iter().map(|&t| t as i64));
    let t = ids.len();
    let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
    let style = Tensor::<1, Int>::from_data(TensorData::new(vec![style as i64], [1]), &device);
    let logits = model.forward(pixels, Some(style), input, None);
    let vocab = logits.dims()[2];
    let lp = values(burn::tensor::activation::log_softmax(
        logits.reshape([t, vocab]),
        1,
    ));
    tokens
        .iter()
        .enumerate()
        .map(|(i, &tok)| lp[i * vocab + tok as usize])
        .collect()
}

/// Limits on repetition: greedy, sampled and beam-searched captions keep them, on the host
/// and the device path alike (greedy: the same tokens), and every caption reports the model's
/// own log-probabilities, not the limited ones.
#[test]
fn repetition_limits_hold_on_every_path() {
    let _turn = serial();
    let (model, pixels, encoded) = four_pictures_to_decode();
    let styles = [1usize, 0, 1, 0];
    let limits = [16usize; 4];
    let greedy = |_| generate::Choice::Greedy;
    let free = generate::decode_rows(
        &model,
        &encoded,
        Some(&styles),
        &limits,
        &[Repeats::default(); 4],
        greedy,
    );
    assert!(
        free.iter().all(|g| repeats_an_ngram(&g.tokens, 2)),
        "the random model's greedy captions should repeat, for the limits to change them"
    );
    let rows = [
        Repeats {
            penalty: 1.0,
            no_repeat_ngram: 2,
        },
        Repeats {
            penalty: 3.0,
            no_repeat_ngram: 0,
        },
        Repeats {
            penalty: 1.5,
            no_repeat_ngram: 3,
        },
        Repeats::default(),
    ];
    let host = generate::decode_rows(&model, &encoded, Some(&styles), &limits, &rows, greedy);
    let on_device =
        generate::decode_rows_on_device(&model, &encoded, Some(&styles), &limits, &rows, greedy);
    for (i, (h, d)) in host.iter().zip(&on_device).enumerate() {
        assert_eq!(h.tokens, d.tokens, "row {i}");
        assert_eq!(h.tokens.len(), 16, "row {i}");
        for (a, b) in h.logprobs.iter().zip(&d.logprobs) {
            assert!((a - b).abs() <= 1e-5, "row {i}: log-prob {a} against {b}");
        }
        let own = model_logprobs(&model, pixels.clone().narrow(0, i, 1), styles[i], &h.tokens);
        for (step, (a, b)) in own.iter().zip(&h.logprobs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4,
                "row {i} step {step}: {a} against {b}"
            );
        }
    }
    assert!(!repeats_an_ngram(&host[0].tokens, 2));
    assert!(!repeats_an_ngram(&host[2].tokens, 3));
    assert_ne!(
        host[1].tokens, free[1].tokens,
        "the penalty changed nothing"
    );
    assert_eq!(
        host[3], free[3],
        "a row without limits is decoded as before"
    );
    let free_on_device = generate::decode_rows_on_device(
        &model,
        &encoded,
        Some(&styles),
        &limits,
        &[Repeats::default(); 4],
        greedy,
    );
    assert_eq!(
        on_device[3], free_on_device[3],
        "likewise on the device path"
    );

    // Sampled rows (the two paths draw differently) and beam search keep the n-gram limit.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let sampled = |rng: &mut rand::rngs::StdRng| generate::Choice::draw(1.0, 0, 1.0, rng);
    let two = [Repeats {
        penalty: 1.0,
        no_repeat_ngram: 2,
    }; 4];
    for g in generate::decode_rows(&model, &encoded, Some(&styles), &limits, &two, |_| {
        sampled(&mut rng)
    })
    .iter()
    .chain(&generate::decode_rows_on_device(
        &model,
        &encoded,
        Some(&styles),
        &limits,
        &two,
        |_| sampled(&mut rng),
    )) {
        assert!(!repeats_an_ngram(&g.tokens, 2), "{:?}", g.tokens);
    }
    let beams = DecodeOptions {
        strategy: Strategy::Beam {
            num_beams: 3,
            length_penalty: 1.0,
        },
        max_new_tokens: 16,
        seed: 0,
        repeats: two[0],
    };
    let searched = generate::generate(&model, pixels.clone(), Some(&styles), &beams).unwrap();
    for (i, g) in searched.iter().enumerate() {
        assert_eq!(g.tokens.len(), 16, "row {i}");
        assert!(!repeats_an_ngram(&g.tokens, 2), "row {i}: {:?}", g.tokens);
        let own = model_logprobs(&model, pixels.clone().narrow(0, i, 1), styles[i], &g.tokens);
        for (a, b) in own.iter().zip(&g.logprobs) {
            assert!((a - b).abs() <= 1e-4, "beam row {i}: {a} against {b}");
        }
    }
}

#[test]
fn checkpoint_round_trips() {
    let _turn = serial();
    let device = Device::flex();
    let model = tiny_captioner("vit", &["factual", "noir"], &device);
    let dir = tempdir("roundtrip");
    model.save(&dir).unwrap();
    let loaded = Captioner::load(&dir, &device).unwrap();
    assert_eq!(loaded.config.style, model.config.style);
    let b = batch(&model, &device, true);
    let a = model.forward(
        b.pixel_values.clone(),
        b.styles.clone(),
        b.input_ids.clone(),
        None,
    );
    let c = loaded.forward(b.pixel_values, b.styles, b.input_ids, None);
    assert_eq!(max_abs_diff(a, c), 0.0);
    let _ = std::fs::remove_dir_all(dir);
}

/// Loading builds the modules without drawing the initial values the checkpoint replaces:
/// the random stream after a load is the one before it.
#[test]
fn loading_draws_no_initial_values() {
    let _turn = serial();
    let device = Device::flex();
    let model = tiny_captioner("vit", &["factual", "noir"], &device);
    let dir = tempdir("lazy_load");
    model.save(&dir).unwrap();
    let draw = || {
        let t = Tensor::<1>::random([8], Distribution::Default, &device);
        values(t)
    };
    device.seed(5);
    let expected = draw();
    device.seed(5);
    let loaded = Captioner::load(&dir, &device).unwrap();
    assert_eq!(draw(), expected, "loading drew random values");
    // Every parameter holds its value: none is left for a first use on some thread to draw.
    struct Pending(usize, usize);
    impl burn::module::ModuleVisitor for Pending {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            self.0 += usize::from(!p.is_initialized());
            self.1 += 1;
        }
    }
    let mut pending = Pending(0, 0);
    loaded.visit(&mut pending);
    assert_eq!(pending.0, 0, "of {} parameters", pending.1);
    assert!(pending.1 > 20);
    let _ = std::fs::remove_dir_all(dir);
}

/// burn's balanced checkpointing (the alignment update's `gradient_checkpointing`)
/// recomputes memory-bound activations in the backward pass; the gradients are the same.
#[test]
fn balanced_checkpointing_gives_the_same_gradients() {
    let _turn = serial();
    let plain = Device::flex();
    let model = tiny_captioner("vit", &["factual", "noir"], &plain);
    let dir = tempdir("checkpointing");
    model.save(&dir).unwrap();
    let run = |checkpointing: bool| {
        let device = stylecap::tensor::autodiff_device(&plain, checkpointing);
        assert_eq!(
            device.gradient_checkpointing_strategy(),
            Some(if checkpointing {
                burn::tensor::GradientCheckpointingStrategy::Balanced
            } else {
                burn::tensor::GradientCheckpointingStrategy::Disabled
            })
        );
        let m = Captioner::load(&dir, &device).unwrap();
        plain.seed(11);
        let b = batch(&m, &device, true);
        let loss = batch_loss(&m, &b);
        let value = loss.clone().into_scalar::<f32>();
        (value, named_gradients(&m, &loss.backward()))
    };
    let (loss_a, a) = run(false);
    let (loss_b, b) = run(true);
    assert_eq!(loss_a, loss_b);
    let mut compared = 0;
    for ((name, ga), (_, gb)) in a.iter().zip(&b) {
        let (ga, gb) = (ga.as_ref().unwrap(), gb.as_ref().unwrap());
        let diff = max_diff(ga, gb);
        assert!(diff <= 1e-5, "{name}: gradients differ by {diff}");
        compared += 1;
    }
    assert!(compared > 20);
    let _ = std::fs::remove_dir_all(dir);
}

/// Four rows of a supervised step: two pictures (one shown twice) and a blank one, two
/// styles, captions of different lengths.
fn step_rows() -> stylecap::sft::batches::StepRows {
    use stylecap::sft::features::BLANK;
    let mut rng = stylecap::rng::Rng::new(3);
    let mut picture = || {
        image::RgbImage::from_fn(16, 16, |_, _| {
            image::Rgb([0, 0, 0].map(|_: u8| rng.below(256) as u8))
        })
    };
    let (a, b) = (picture(), picture());
    stylecap::sft::batches::StepRows {
        images: vec![a.clone(), b, image::RgbImage::new(16, 16), a],
        tokens: vec![
            vec![5, 9, 12],
            vec![3, 20],
            vec![40, 2, 11, 6],
            vec![7, 7, 8],
        ],
        styles: vec![0, 0, 1, 1],
        keys: vec![Some(0), Some(1), Some(BLANK), Some(0)],
    }
}

/// `micro_step` over [`step_rows`] in 2 shards, with blocks recomputed or not and encoder
/// features from `features` or not: the loss and the gradients.
fn sharded_step(
    model: &Captioner,
    recompute: bool,
    features: Option<&stylecap::sft::features::FeatureCache>,
) -> (f32, Accumulated) {
    let device = Device::flex().autodiff();
    let preprocess = stylecap::data::image::PreprocessorConfig::square(16);
    let mut acc = Accumulated::default();
    let (loss, _) = stylecap::sft::step::micro_step(
        model,
        &step_rows(),
        (2, recompute),
        &preprocess,
        0,
        &device,
        (&mut acc, 1, 1.0),
        features,
        || (),
    )
    .unwrap();
    (loss, acc)
}

/// A supervised batch encodes each distinct picture once (`step::distinct_pictures`): its
/// loss and every gradient, encoder's included, are those of encoding every row's picture.
#[test]
fn rows_showing_one_picture_encode_it_once() {
    use stylecap::sft::step::{caption_batch, distinct_pictures};
    let _turn = serial();
    let device = Device::flex().autodiff();
    let model = tiny_captioner("vit", &["factual", "noir"], &device);
    let rows = step_rows();
    let (distinct, pictures) = distinct_pictures(&rows.images);
    assert_eq!(
        distinct,
        vec![0, 1, 2],
        "the fourth row shows the first picture"
    );
    assert_eq!(pictures, vec![0, 1, 2, 0]);
    let preprocess = stylecap::data::image::PreprocessorConfig::square(16);
    let shown: Vec<image::RgbImage> = distinct.iter().map(|&r| rows.images[r].clone()).collect();
    let once = CaptionBatch {
        pictures,
        ..caption_batch(
            preprocess.batch(&shown, &device).unwrap(),
            &rows.styles,
            &rows.tokens,
            0,
            &device,
        )
    };
    let every = caption_batch(
        preprocess.batch(&rows.images, &device).unwrap(),
        &rows.styles,
        &rows.tokens,
        0,
        &device,
    );
    assert_eq!(once.pixel_values.dims()[0], 3);
    assert_eq!(every.pixel_values.dims()[0], 4);
    let run = |b: &CaptionBatch| {
        let loss = batch_loss(&model, b);
        let grads = loss.backward();
        (loss.into_scalar::<f32>(), named_gradients(&model, &grads))
    };
    let ((loss_once, once), (loss_every, every)) = (run(&once), run(&every));
    assert!(
        (loss_once - loss_every).abs() <= 1e-6 * loss_every.abs(),
        "loss {loss_once} vs {loss_every}"
    );
    let mut compared = 0;
    for ((name, a), (_, b)) in once.iter().zip(&every) {
        let (a, b) = (a.as_ref().expect(name), b.as_ref().expect(name));
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = max_diff(a, b);
        assert!(diff <= 1e-5 * scale, "{name}: gradients differ by {diff}");
        assert!(a.iter().any(|&x| x != 0.0), "{name}: no gradient");
        compared += 1;
    }
    assert!(
        once.iter().any(|(n, _)| n.starts_with("encoder.")) && compared > 40,
        "only {compared} gradients compared"
    );
}

/// Activation checkpointing (`gradient_checkpointing`: each block recomputed in the backward
/// pass, its gradients taken part by part) gives the loss and gradients of the plain pass:
/// ViT and CLIP encoders, the whole model training, the encoder's lower part frozen, and a
/// frozen encoder's cached features.
#[test]
fn recomputed_blocks_give_the_same_gradients() {
    use stylecap::model::weights::freeze_named;
    use stylecap::sft::features::FeatureCache;
    let _turn = serial();
    let device = Device::flex().autodiff();
    let top_only = |name: &str| {
        name.starts_with("encoder.")
            && !name.starts_with("encoder.encoder.layer.1.")
            && !name.starts_with("encoder.layernorm.")
    };
    type Frozen = fn(&str) -> bool;
    let cases: [(&str, &str, Frozen, bool); 4] = [
        ("vit", "all trains", |_| false, false),
        ("clip_vision_model", "all trains", |_| false, false),
        ("vit", "top vision layer trains", top_only, false),
        (
            "vit",
            "cached features",
            |n| n.starts_with("encoder."),
            true,
        ),
    ];
    for (encoder, what, frozen, cached) in cases {
        let model = tiny_captioner(encoder, &["factual", "noir"], &device);
        let model = freeze_named(model, "", frozen);
        let trainable: Vec<String> = named_gradients(
            &model,
            &batch_loss(&model, &batch(&model, &device, true)).backward(),
        )
        .into_iter()
        .filter_map(|(name, g)| g.map(|_| name))
        .collect();
        let cache = FeatureCache::new(1);
        let features = cached.then_some(&cache);
        let (loss_a, a) = sharded_step(&model, false, features);
        let (loss_b, b) = sharded_step(&model, true, features);
        assert!(
            (loss_a - loss_b).abs() <= 1e-6 * loss_a.abs(),
            "{encoder}, {what}: loss {loss_b} vs {loss_a}"
        );
        let names: Vec<&String> = b.grads().keys().collect();
        assert_eq!(
            names,
            a.grads().keys().collect::<Vec<_>>(),
            "{encoder}, {what}: the same parameters get gradients"
        );
        let mut sorted = trainable.clone();
        sorted.sort();
        assert_eq!(
            names,
            sorted.iter().collect::<Vec<_>>(),
            "{encoder}, {what}"
        );
        for (name, ga) in a.grads() {
            let gb = &b.grads()[name];
            let diff = max_diff(ga, gb);
            assert!(
                diff <= 1e-5,
                "{encoder}, {what}: {name}: gradients differ by {diff}"
            );
            assert!(
                gb.iter().all(|x| x.is_finite()) && gb.iter().any(|&x| x != 0.0),
                "{encoder}, {what}: {name}"
            );
        }
    }
}

/// With a frozen encoder, a step from cached encoder features gives the loss and gradients
/// of encoding the pictures: when it encodes them, and when it reads them back.
#[test]
fn cached_encoder_features_give_the_same_step() {
    use stylecap::model::weights::freeze_named;
    use stylecap::sft::features::FeatureCache;
    let _turn = serial();
    let device = Device::flex().autodiff();
    let model = tiny_captioner("vit", &["factual", "noir"], &device);
    let model = freeze_named(model, "", |name| name.starts_with("encoder."));
    let step = |features: Option<&FeatureCache>| {
        let (loss, acc) = sharded_step(&model, false, features);
        (loss, acc.global_norm())
    };
    let encoded = step(None);
    let cache = FeatureCache::new(1);
    let first = step(Some(&cache));
    assert_eq!(cache.len(), 3, "three distinct pictures are kept");
    let hits = cache.hits();
    let second = step(Some(&cache));
    assert_eq!(
        cache.hits(),
        hits + 4,
        "the second step reads every picture back"
    );
    for (what, (loss, norm)) in [("encoding", first), ("reading back", second)] {
        assert!(
            (loss - encoded.0).abs() <= 1e-6 * encoded.0.abs(),
            "{what}: loss {loss} vs {}",
            encoded.0
        );
        assert!(
            (norm - encoded.1).abs() <= 1e-5 * encoded.1,
            "{what}: gradient norm {norm} vs {}",
            encoded.1
        );
    }
    assert!(encoded.1 > 0.0);
    // A budget too small for one picture keeps nothing and still gives the same step.
    let none = FeatureCache::new(0);
    let (loss, _) = step(Some(&none));
    assert!(none.is_empty() && (loss - encoded.0).abs() <= 1e-6 * encoded.0.abs());
    // With no memory, pictures spill to the file and come back from it bit for bit.
    let path = tempdir("feature-spill").join("features.bin");
    let disk = FeatureCache::new(0).spilling_to(path.clone(), 1);
    let first = step(Some(&disk));
    assert_eq!(disk.spilled(), 3, "three distinct pictures are spilled");
    assert!(path.is_file());
    let hits = disk.hits();
    let second = step(Some(&disk));
    assert_eq!(
        disk.hits(),
        hits + 4,
        "the second step reads every picture back"
    );
    for (what, (loss, norm)) in [("spilling", first), ("reading the file", second)] {
        assert!(
            (loss - encoded.0).abs() <= 1e-6 * encoded.0.abs()
                && (norm - encoded.1).abs() <= 1e-5 * encoded.1,
            "{what}: loss {loss}, norm {norm} vs {encoded:?}"
        );
    }
    drop(disk);
    assert!(!path.exists(), "the spill file is removed with the cache");
}

#[test]
fn same_seed_same_training_run() {
    let _turn = serial();
    let run = || {
        let device = Device::flex().autodiff();
        let mut model = tiny_captioner("vit", &["factual", "noir"], &device);
        device.seed(9);
        let b = batch(&model, &device, true);
        let mut optim = optimizer();
        let mut losses = Vec::new();
        for _ in 0..3 {
            let (m, l) = train_step(model, &mut optim, &b, 1e-3);
            model = m;
            losses.push(l);
        }
        losses
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert!(a[2] < a[0], "loss should fall: {a:?}");
}

/// The trainers' AdamW, without gradient clipping and with light weight decay.
fn optimizer() -> AdamW {
    AdamW::new(AdamWConfig {
        weight_decay: 1e-4,
        clip_norm: 0.0,
        ..AdamWConfig::default()
    })
}

/// Forward, backward and one AdamW update; the updated model and the loss.
fn train_step(model: Captioner, optim: &mut AdamW, b: &CaptionBatch, lr: f64) -> (Captioner, f32) {
    let loss = batch_loss(&model, b);
    let grads = loss.backward();
    let value = loss.into_scalar::<f32>();
    let mut acc = Accumulated::default();
    acc.add(&model, grads, 1.0);
    (optim.update(model, acc, |_| lr).0, value)
}

pub fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stylecap-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
