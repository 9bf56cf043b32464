//! The style critic: BERT parity with transformers, gradients, training, scores, and a judge
//! that is not the critic.

mod common;

use burn::prelude::*;
use common::*;
use stylecap::critic::model::{Critic, CriticInfo};
use stylecap::critic::sentence::SentenceEncoder;
use stylecap::critic::train::{train_critic, CriticTrainConfig};
use stylecap::data::tokenizer::TextTokenizer;
use stylecap::optim::grads::named_gradients;
use stylecap::util::Precision;

#[test]
fn bert_matches_transformers() {
    let _turn = common::serial();
    let device = Device::flex();
    let dir = fixture("bert");
    let (critic, tokenizer) =
        Critic::from_pretrained(&dir, vec!["a".into(), "b".into()], &device).unwrap();
    let reference = reference("bert");
    let ids = reference.int_tensor::<2>("input_ids", &device).unwrap();
    let mask = reference
        .int_tensor::<2>("attention_mask", &device)
        .unwrap();
    let expected = reference.tensor::<3>("last_hidden_state", &device).unwrap();
    let got = critic.bert.forward(ids.clone(), mask.clone());
    let diff = max_abs_diff(got, expected);
    assert!(diff < 1e-4, "last_hidden_state differs by {diff}");

    // The tokenizer (WordPiece with [CLS] ... [SEP]) gives transformers' ids.
    let texts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("texts.json")).unwrap()).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (our_ids, our_mask) = critic.encode(&tokenizer, &refs, &device).unwrap();
    assert_eq!(ints(our_ids), ints(ids));
    assert_eq!(ints(our_mask), ints(mask));
}

/// The sentence encoder on the BERT fixture, as sentence-transformers computes
/// all-MiniLM-L6-v2's embeddings: transformers' `last_hidden_state` averaged over the attention
/// mask, L2-normalised; the `similarity` reward is the highest dot product with a reference.
#[test]
fn sentence_embeddings_are_the_normalised_mask_mean_of_transformers_states() {
    let _turn = common::serial();
    let device = Device::flex();
    let dir = fixture("bert");
    let reference = reference("bert");
    let hidden = values(reference.tensor::<3>("last_hidden_state", &device).unwrap());
    let mask = ints(
        reference
            .int_tensor::<2>("attention_mask", &device)
            .unwrap(),
    );
    let (b, d) = (2, 32);
    let t = mask.len() / b;
    let expected: Vec<Vec<f32>> = (0..b)
        .map(|i| {
            let n = (0..t).filter(|&j| mask[i * t + j] == 1).count() as f32;
            let mean: Vec<f32> = (0..d)
                .map(|k| {
                    (0..t)
                        .filter(|&j| mask[i * t + j] == 1)
                        .map(|j| hidden[(i * t + j) * d + k])
                        .sum::<f32>()
                        / n
                })
                .collect();
            let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
            mean.iter().map(|x| x / norm).collect()
        })
        .collect();
    let texts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("texts.json")).unwrap()).unwrap();
    let encoder = SentenceEncoder::load(&dir, &device).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let got = encoder.embed(&refs).unwrap();
    for (g, e) in got.iter().zip(&expected) {
        let diff = max_diff(g, e);
        assert!(diff < 1e-4, "embedding differs by {diff}");
    }
    // The reward: the caption's best cosine over its references.
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let cross = cos(&expected[0], &expected[1]);
    assert!(cross < 0.99, "the fixture's two texts embed alike: {cross}");
    let one = [texts[1].clone()];
    let both = [texts[1].clone(), texts[0].clone()];
    let s = encoder
        .max_similarity(&[refs[0], refs[0]], &[&one[..], &both[..]])
        .unwrap();
    assert!((s[0] - cross).abs() < 1e-4, "{} vs {cross}", s[0]);
    assert!(
        (s[1] - 1.0).abs() < 1e-4,
        "a caption among its references: {}",
        s[1]
    );
}

fn tiny_critic(device: &Device) -> (Critic, TextTokenizer) {
    let tokenizer =
        TextTokenizer::load(&fixture("gpt2").join("../vit_gpt2/tokenizer.json")).unwrap();
    let mut bert = stylecap::critic::bert::BertConfig::new(tokenizer.vocab_size(), 16, 2, 2, 32);
    bert.initializer_range = 0.2;
    let info = CriticInfo {
        styles: vec!["x".into(), "y".into(), "z".into()],
        special_tokens: false,
        max_tokens: 32,
    };
    (Critic::new(bert, info, device), tokenizer)
}

#[test]
fn every_critic_parameter_gets_a_gradient_that_matches_finite_differences() {
    let _turn = common::serial();
    let ad = Device::flex().autodiff();
    ad.seed(3);
    let (critic, tokenizer) = tiny_critic(&ad);
    let texts = ["a red car parked beside a tall house", "snow falls"];
    let (ids, mask) = critic.encode(&tokenizer, &texts, &ad).unwrap();
    let target = Tensor::<2>::from_data(
        TensorData::new(vec![0.3f32, -1.0, 2.0, 1.0, 0.5, -0.2], [2, 3]),
        &ad,
    );
    let loss_of = |c: &Critic| (c.forward(ids.clone(), mask.clone()) * target.clone()).sum();
    let loss = loss_of(&critic);
    let grads = loss.backward();
    let named = named_gradients(&critic, &grads);
    assert!(named.len() > 20);
    for (name, g) in &named {
        let g = g.as_ref().unwrap_or_else(|| panic!("{name}: no gradient"));
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{name}: non-finite gradient"
        );
        assert!(g.iter().any(|&x| x != 0.0), "{name}: zero gradient");
    }
    // Central differences on the first entry of every parameter, in f32 on the plain device.
    let plain = Device::flex();
    let base = critic.clone().to_device(&plain);
    let (pids, pmask) = (
        ids.clone().to_device(&plain),
        mask.clone().to_device(&plain),
    );
    let ptarget = target.clone().to_device(&plain);
    let value = |c: &Critic| {
        (c.forward(pids.clone(), pmask.clone()) * ptarget.clone())
            .sum()
            .into_scalar::<f32>() as f64
    };
    let values: std::collections::HashMap<String, Vec<f32>> =
        stylecap::model::weights::read_named(&base, "", &mut stylecap::model::weights::Values)
            .into_iter()
            .map(|(n, v)| (n, v.unwrap().values))
            .collect();
    let eps = 1e-2f32;
    for (name, g) in named {
        let analytic = g.unwrap()[0] as f64;
        let shifted = |delta: f32| {
            let c = stylecap::model::weights::replace_named(base.clone(), "", |n, shape| {
                (n == name).then(|| {
                    let mut v = values[n].clone();
                    v[0] += delta;
                    stylecap::model::weights::StoredTensor {
                        shape: shape.to_vec(),
                        values: v,
                    }
                })
            });
            value(&c)
        };
        let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
        let tol = 2e-2 * (1.0 + analytic.abs());
        assert!(
            (analytic - numeric).abs() < tol,
            "{name}[0]: autodiff {analytic:.5}, finite difference {numeric:.5}"
        );
    }
}

fn quick(seed: u64, judge: bool) -> CriticTrainConfig {
    let base = if judge {
        CriticTrainConfig::judge()
    } else {
        CriticTrainConfig::default()
    };
    CriticTrainConfig {
        seed,
        texts_per_style: 300,
        world_captions: 150,
        steps: 80,
        batch_size: 32,
        vocab_size: 1500,
        hidden: base.hidden / 2,
        ..base
    }
}

#[test]
fn trained_critic_scores_sum_to_one_and_the_judge_is_another_model() {
    let _turn = common::serial();
    let device = Device::flex();
    let (a, b) = (scratch("critic", "critic"), scratch("critic", "judge"));
    let report = train_critic(&quick(0, false), &a, false, &device).unwrap();
    assert!(report.accuracy > 0.5, "{report:?}");
    train_critic(&quick(1001, true), &b, false, &device).unwrap();
    let (critic, ct) = Critic::load(&a, &device).unwrap();
    let (judge, jt) = Critic::load(&b, &device).unwrap();
    assert_eq!(critic.info.styles.len(), 6);
    // Texts that mix styles' words, where independently trained models part ways.
    let texts = [
        "The detective sighed tenderly beside the crypt.",
        "A wobbly gargoyle waltzed near the jukebox.",
        "The melting sweetheart tailed the bourbon at the witching hour.",
        "A small red car low on the left at dusk.",
        "What a soggy phantom it was!",
        "Nobody painted the teacup; the raven danced sheepishly.",
        "The commuter kissed the piano after the last call.",
        "Somewhere inside the chapel, a greasy valentine hiccupped.",
    ];
    let pc = critic.probabilities(&ct, &texts, &device).unwrap();
    let pj = judge.probabilities(&jt, &texts, &device).unwrap();
    for p in pc.iter().chain(&pj) {
        let sum: f32 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{p:?}");
        assert!(p.iter().all(|&x| (0.0..=1.0).contains(&x)));
    }
    let argmax = |p: &Vec<f32>| (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
    let differ = pc
        .iter()
        .zip(&pj)
        .filter(|(x, y)| argmax(x) != argmax(y))
        .count();
    let gap: f32 = pc
        .iter()
        .zip(&pj)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(a, b)| (a - b).abs()))
        .fold(0.0, f32::max);
    assert!(
        differ > 0 || gap > 0.2,
        "critic and judge agree everywhere: {pc:?} {pj:?}"
    );
    // A saved critic reloads to the same scores.
    let (again, at) = Critic::load(&a, &device).unwrap();
    assert_eq!(again.probabilities(&at, &texts, &device).unwrap(), pc);
}

/// In f16 and bf16 mixed precision a critic trains as well (above chance), to other weights
/// than f32's, and f16 logs its loss scale. Every test of this file takes `serial()`: mixed
/// precision is the process's setting while a run lasts.
#[test]
fn a_critic_trains_in_mixed_precision() {
    let _turn = common::serial();
    let device = Device::flex();
    let trained = |precision: Precision| {
        let dir = scratch("critic", &format!("mixed-{precision}"));
        let _ = std::fs::remove_dir_all(&dir);
        let config = CriticTrainConfig {
            mixed_precision: precision,
            ..quick(0, false)
        };
        let report = train_critic(&config, &dir, false, &device).unwrap();
        let weights = std::fs::read(dir.join("model/model.safetensors")).unwrap();
        let log = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        (report, weights, log)
    };
    let (_, f32_weights, f32_log) = trained(Precision::F32);
    assert!(!f32_log.contains("loss_scale"));
    for precision in [Precision::F16, Precision::Bf16] {
        let (report, weights, log) = trained(precision);
        assert!(report.accuracy > 0.5, "{precision}: {report:?}");
        assert!(
            weights != f32_weights,
            "{precision}: the same weights as f32"
        );
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v.get("step").is_some())
            .collect();
        assert!(!lines.is_empty());
        for v in lines {
            assert!(v["loss"].as_f64().unwrap().is_finite(), "{v}");
            let scale = v.get("loss_scale").and_then(|s| s.as_f64());
            match precision {
                Precision::F16 => assert!(scale.is_some_and(|s| s >= 1.0), "{v}"),
                _ => assert!(scale.is_none(), "{v}"),
            }
        }
    }
}

/// A critic folder whose `critic.json` disagrees with its encoder (fewer than two styles,
/// more tokens than positions) is refused at load, naming the file and the range.
#[test]
fn critic_folders_out_of_range_are_refused_at_load() {
    let _turn = common::serial();
    let device = Device::flex();
    let (critic, tokenizer) = tiny_critic(&device);
    let positions = critic.bert_config.max_position_embeddings;
    let dir = common::scratch("critic", "damaged");
    critic.save(&dir, &tokenizer).unwrap();
    assert!(Critic::load(&dir, &device).is_ok());
    let info = dir.join("critic.json");
    let original = std::fs::read_to_string(&info).unwrap();
    let cases = [
        (
            serde_json::json!({"styles": ["x"]}),
            "lists 1 style(s)".to_string(),
        ),
        (
            serde_json::json!({"max_tokens": 0}),
            format!("`max_tokens` is 0; the encoder's positions allow 1 to {positions}"),
        ),
        (
            serde_json::json!({"max_tokens": positions + 1}),
            format!("`max_tokens` is {}", positions + 1),
        ),
    ];
    for (change, says) in cases {
        let mut v: serde_json::Value = serde_json::from_str(&original).unwrap();
        for (k, x) in change.as_object().unwrap() {
            v[k] = x.clone();
        }
        std::fs::write(&info, v.to_string()).unwrap();
        let e = format!("{:#}", Critic::load(&dir, &device).err().unwrap());
        assert!(e.contains(&says) && e.contains("critic.json"), "{e}");
    }
}
