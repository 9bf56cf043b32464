//! Training a critic (or a judge): cross-entropy over the styles on a labelled corpus, with a
//! seeded held-out split, the same AdamW and schedule as the captioner.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::bert::BertConfig;
use super::metrics::{evaluate, CriticReport};
use super::model::{Critic, CriticInfo};
use crate::data::records::{LoadOptions, StyleText};
use crate::data::sources::{builtin_style_texts, load_styles, CaptionSplits, DataSpec, EpochOrder};
use crate::data::tokenizer::TextTokenizer;
use crate::model::autocast::Autocast;
use crate::model::loss::classification_cross_entropy;
use crate::model::pretrained::resolve;
use crate::model::style::FACTUAL;
use crate::optim::adamw::{Accumulated, AdamW, AdamWConfig};
use crate::optim::schedule::warmup_cosine;
use crate::rng::{streams, Rng};
use crate::run::RunFolder;
use crate::tensor::index_tensor;
use crate::util::{check, progress_bar, Precision};
use crate::world::{Split, World, WorldConfig};

/// Which texts of the corpus a critic trains and tests on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CorpusPart {
    /// Every text.
    #[default]
    All,
    /// One half of the corpus, by a fixed seeded shuffle ([`corpus_half`]).
    Critic,
    /// The other half: a judge that never saw a text the critic learnt from.
    Judge,
}

/// The indices of `part` of a corpus of `n` texts: a shuffle under a fixed key, the critic
/// taking even positions and the judge odd ones.
pub fn corpus_half(n: usize, part: CorpusPart) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::keyed(0, streams::KEY_CORPUS_HALVES).shuffle(&mut order);
    let mut ids: Vec<usize> = match part {
        CorpusPart::All => return (0..n).collect(),
        CorpusPart::Critic => order.into_iter().step_by(2).collect(),
        CorpusPart::Judge => order.into_iter().skip(1).step_by(2).collect(),
    };
    ids.sort_unstable();
    ids
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriticTrainConfig {
    /// Labelled texts (JSONL {"text","style"} or a folder of STYLE.txt). None: the built-in
    /// styles, with factual captions of the built-in world added to `factual`.
    pub data: Option<PathBuf>,
    /// The part of `data` used (its held-out share included): the demo gives the critic and
    /// the judge disjoint halves of a user's corpus.
    pub corpus_part: CorpusPart,
    /// A pretrained BERT / MiniLM folder (or Hub id) to fine-tune instead of a small encoder.
    pub pretrained: Option<String>,
    pub seed: u64,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub vocab_size: usize,
    pub max_tokens: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    /// Share of texts held out for evaluation.
    pub held_out: f32,
    /// Built-in corpus: sentences per style, and world captions added to `factual`.
    pub texts_per_style: usize,
    /// How many pictures' captions (one each) are added to `factual`: of the built-in world
    /// with the built-in corpus, of `factual_captions` with a corpus of `data`.
    pub world_captions: usize,
    /// A caption dataset (any format `train --data` reads) whose training pictures'
    /// captions join `data`'s `factual` texts: the captioner's own factual captions, which
    /// a critic that knew only the corpus's other styles would take for one of them (gothic
    /// novels describe scenes in such words). The demo sets it to its `--data`.
    pub factual_captions: Option<PathBuf>,
    /// Seed of `factual_captions`' held-out slices, which are left out (as `train`'s).
    pub split_seed: u64,
    pub optimizer: AdamWConfig,
    pub skip_bad: bool,
    /// Mixed precision (`model::autocast`), as the captioner trainer's `mixed_precision`:
    /// the matrix products in f16 or bf16 (f16 with loss scaling), the rest in f32; the
    /// held-out evaluation runs in f32.
    pub mixed_precision: Precision,
}

impl Default for CriticTrainConfig {
    fn default() -> Self {
        CriticTrainConfig {
            data: None,
            corpus_part: CorpusPart::All,
            pretrained: None,
            seed: 0,
            hidden: 128,
            layers: 2,
            heads: 4,
            vocab_size: 4096,
            max_tokens: 64,
            steps: 500,
            batch_size: 64,
            lr: 1e-3,
            warmup_steps: 50,
            held_out: 0.1,
            texts_per_style: 5000,
            world_captions: 2500,
            factual_captions: None,
            split_seed: 0,
            optimizer: AdamWConfig::default(),
            skip_bad: false,
            mixed_precision: Precision::F32,
        }
    }
}

impl CriticTrainConfig {
    /// The judge: trained independently of the critic, with another seed (so another
    /// held-out split and initialisation) and another architecture.
    pub fn judge() -> Self {
        CriticTrainConfig {
            seed: 1001,
            hidden: 96,
            layers: 3,
            heads: 4,
            vocab_size: 3000,
            ..Self::default()
        }
    }
}

impl CriticTrainConfig {
    /// Checks every setting against its allowed range, naming the field of the first that
    /// is out of it.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
        ] {
            check::within(field, v, 1, 1 << 16)?;
        }
        anyhow::ensure!(
            self.hidden.is_multiple_of(self.heads),
            "hidden and heads: the width {} must be a multiple of the heads {}",
            self.hidden,
            self.heads
        );
        check::within(
            "vocab_size",
            self.vocab_size,
            TextTokenizer::MIN_BPE_VOCAB,
            1 << 20,
        )?;
        check::within("max_tokens", self.max_tokens, 2, 4096)?;
        check::within("steps", self.steps, 1, 100_000_000)?;
        check::within("batch_size", self.batch_size, 1, 1 << 16)?;
        check::within("lr", self.lr, 1e-9, 10.0)?;
        check::within("held_out", self.held_out, 0.001, 0.9)?;
        check::within("texts_per_style", self.texts_per_style, 1, 100_000_000)?;
        check::within("world_captions", self.world_captions, 1, 100_000_000)?;
        self.optimizer.validate("optimizer")
    }
}

/// The peak learning rate of a critic fine-tuned from a pretrained encoder (`--pretrained`
/// without `--lr`): much smaller than training from scratch wants.
pub const FINE_TUNE_LR: f64 = 5e-5;

/// The built-in labelled corpus: style sentences, plus factual captions of the world.
pub fn builtin_corpus(config: &CriticTrainConfig) -> Vec<StyleText> {
    let mut texts = builtin_style_texts(config.texts_per_style, 0);
    let world = World::new(WorldConfig::default());
    let source = crate::data::records::Source::file(Path::new("<built-in world captions>"));
    let mut rng = Rng::keyed(config.seed, streams::KEY_CRITIC_WORLD_CAPTIONS);
    for i in 0..config.world_captions {
        let e = world.example(Split::Train, i as u64);
        texts.push(StyleText {
            text: rng.pick(&e.captions).clone(),
            style: FACTUAL.into(),
            source: source.clone(),
        });
    }
    texts
}

/// Captions of `config.world_captions` training pictures of `config.factual_captions` (one
/// each, pictures and captions drawn by the seed), labelled `factual`.
fn dataset_factual_captions(path: &Path, config: &CriticTrainConfig) -> Result<Vec<StyleText>> {
    let mut skipped = Vec::new();
    let spec = DataSpec {
        data: Some(path),
        val_data: None,
        test_data: None,
        styles: None,
        skip_bad: config.skip_bad,
        split_seed: config.split_seed,
        world_seed: 0,
        world_train: 0,
        world_val: 0,
        image_size: 0,
        style_texts: 0,
    };
    let train = CaptionSplits::load(&spec, &mut skipped)
        .with_context(|| format!("factual_captions {}", path.display()))?
        .train;
    for p in &skipped {
        eprintln!("skipped: {p}");
    }
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = Rng::keyed(config.seed, streams::KEY_CRITIC_WORLD_CAPTIONS);
    rng.shuffle(&mut order);
    let source = crate::data::records::Source::file(path);
    Ok(order
        .into_iter()
        .take(config.world_captions)
        .filter_map(|i| {
            let refs = train.references(i);
            (!refs.is_empty()).then(|| StyleText {
                text: rng.pick(&refs).clone(),
                style: FACTUAL.into(),
                source: source.clone(),
            })
        })
        .collect())
}

/// Splits indices into (train, held-out) by a seeded shuffle.
pub fn split(n: usize, held_out: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::keyed(seed, streams::KEY_CRITIC_SPLIT).shuffle(&mut order);
    let k = ((n as f32 * held_out).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let held = order[..k].to_vec();
    (order[k..].to_vec(), held)
}

/// Trains a critic in the run folder `out` (the critic in `model/`); returns its held-out
/// report (also the run's `eval.json`).
pub fn train_critic(
    config: &CriticTrainConfig,
    out: &Path,
    show_progress: bool,
    device: &Device,
) -> Result<CriticReport> {
    config.validate().context("invalid critic configuration")?;
    crate::model::autocast::check(config.mixed_precision, device)?;
    let mut texts = match &config.data {
        Some(path) => {
            let loaded = load_styles(
                path,
                LoadOptions {
                    skip_bad: config.skip_bad,
                },
            )?;
            for p in &loaded.skipped {
                eprintln!("skipped: {p}");
            }
            let mut texts = loaded.records;
            if let Some(captions) = &config.factual_captions {
                texts.extend(dataset_factual_captions(captions, config)?);
            }
            texts
        }
        None => builtin_corpus(config),
    };
    if config.corpus_part != CorpusPart::All {
        let keep = corpus_half(texts.len(), config.corpus_part);
        texts = keep.into_iter().map(|i| texts[i].clone()).collect();
    }
    let mut styles: Vec<String> = texts.iter().map(|t| t.style.clone()).collect();
    styles.sort();
    styles.dedup();
    if styles.len() < 2 {
        bail!(
            "a critic needs texts of at least two styles (found: {})",
            styles.join(", ")
        );
    }
    let labels: Vec<usize> = texts
        .iter()
        .map(|t| {
            styles
                .iter()
                .position(|s| *s == t.style)
                .expect("collected")
        })
        .collect();
    let (train_ids, held_ids) = split(texts.len(), config.held_out, config.seed);
    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let (mut critic, tokenizer) = match &config.pretrained {
        Some(id) => Critic::from_pretrained(&resolve(id)?, styles.clone(), &ad)?,
        None => {
            let tokenizer = TextTokenizer::train_bpe(
                train_ids
                    .iter()
                    .map(|&i| texts[i].text.clone())
                    .collect::<Vec<_>>()
                    .into_iter(),
                config.vocab_size,
            )?;
            let mut bert = BertConfig::new(
                tokenizer.vocab_size(),
                config.hidden,
                config.layers,
                config.heads,
                config.max_tokens,
            );
            bert.pad_token_id = tokenizer.end_of_text()?;
            let info = CriticInfo {
                styles: styles.clone(),
                special_tokens: false,
                max_tokens: config.max_tokens,
            };
            (Critic::new(bert, info, &ad), tokenizer)
        }
    };
    let run = RunFolder::create(out, config)?;
    let mut metrics = run.metrics()?;
    let mut optim =
        AdamW::new(config.optimizer.clone()).with_mixed_precision(config.mixed_precision);
    let order = EpochOrder::new(config.seed, streams::CRITIC_ORDER, train_ids.len());
    let bar = progress_bar(config.steps as u64, "critic", show_progress);
    for step in 0..config.steps {
        let batch: Vec<usize> = (0..config.batch_size)
            .map(|j| train_ids[order.at(step * config.batch_size + j)])
            .collect();
        let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i].text.as_str()).collect();
        let mixed = Autocast::enter(config.mixed_precision);
        let (ids, mask) = critic.encode(&tokenizer, &batch_texts, &ad)?;
        let y: Vec<usize> = batch.iter().map(|&i| labels[i]).collect();
        let y = index_tensor(&y, &ad);
        let loss = classification_cross_entropy(critic.forward(ids, mask), y);
        // f16's loss scaling: the backward pass starts from the scaled loss, and the
        // gradients are divided by the scale again as they are summed.
        let factor = optim.loss_factor();
        let grads = loss.clone().mul_scalar(factor).backward();
        drop(mixed);
        let value = loss.into_scalar::<f32>();
        if !value.is_finite() {
            bail!(
                "critic step {}: the loss is {value}; stopped without saving",
                step + 1
            );
        }
        let mut acc = Accumulated::default();
        acc.add(&critic, grads, 1.0 / factor);
        let lr = config.lr * warmup_cosine(step, config.steps, config.warmup_steps, 0.05);
        let (updated, stats) = optim.update(critic, acc, |_| lr);
        // With loss scaling an overflow skips the step (and halves the scale); without
        // it, a non-finite gradient ends the run.
        if !stats.applied && optim.loss_scale.is_none() {
            bail!(
                "critic step {}: the gradient norm is {}; stopped without saving",
                step + 1,
                stats.grad_norm
            );
        }
        critic = updated;
        bar.inc(1);
        if (step + 1) % 10 == 0 {
            bar.set_message(format!("loss {value:.3}"));
            let mut record = serde_json::json!({"step": step + 1, "loss": value, "lr": lr});
            if let Some(scale) = optim.loss_scale {
                record["loss_scale"] = scale.scale.into();
            }
            metrics.log(&record)?;
        }
    }
    bar.finish_and_clear();
    // `valid` drops autodiff; `to_device` would keep taping every op of the evaluation
    // (15 GB for MiniLM's held-out pass).
    let plain_critic = critic.valid();
    plain_critic.save(&run.model_dir(), &tokenizer)?;
    let held_texts: Vec<&str> = held_ids.iter().map(|&i| texts[i].text.as_str()).collect();
    let probs = plain_critic.probabilities(&tokenizer, &held_texts, device)?;
    let held_labels: Vec<usize> = held_ids.iter().map(|&i| labels[i]).collect();
    let report = evaluate(&styles, &probs, &held_labels);
    run.write_eval(&report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caption_dataset_adds_one_caption_of_each_of_its_training_pictures_to_factual() {
        let dir = std::env::temp_dir().join(format!("stylecap-factual-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = dir.join("captions.jsonl");
        let n = 40;
        let lines: Vec<String> = (0..n)
            .map(|i| {
                image::RgbImage::new(2, 2)
                    .save(dir.join(format!("p{i}.png")))
                    .unwrap();
                serde_json::json!({
                    "id": format!("p{i}"),
                    "image": format!("p{i}.png"),
                    "captions": [format!("picture {i} first"), format!("picture {i} second")],
                })
                .to_string()
            })
            .collect();
        std::fs::write(&manifest, lines.join("\n")).unwrap();
        let (val, test) = crate::data::sources::held_out_slices(n, 3);
        let training = n - val.len() - test.len();
        let picture =
            |t: &StyleText| -> usize { t.text.split(' ').nth(1).unwrap().parse().unwrap() };
        for (wanted, got) in [(10, 10), (100, training)] {
            let config = CriticTrainConfig {
                factual_captions: Some(manifest.clone()),
                world_captions: wanted,
                split_seed: 3,
                ..CriticTrainConfig::default()
            };
            let texts = dataset_factual_captions(&manifest, &config).unwrap();
            assert_eq!(texts.len(), got);
            let mut pictures: Vec<usize> = texts.iter().map(picture).collect();
            pictures.sort_unstable();
            pictures.dedup();
            assert_eq!(pictures.len(), got, "one caption per picture");
            for t in &texts {
                assert_eq!(t.style, FACTUAL);
                let p = picture(t);
                assert!(
                    !val.contains(&p) && !test.contains(&p),
                    "held out: {}",
                    t.text
                );
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_critic_and_judge_halves_of_a_corpus_are_disjoint_and_cover_it() {
        let critic = corpus_half(101, CorpusPart::Critic);
        let judge = corpus_half(101, CorpusPart::Judge);
        assert_eq!((critic.len(), judge.len()), (51, 50));
        let mut all: Vec<usize> = critic.iter().chain(&judge).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..101).collect::<Vec<_>>());
        // Not simply the first and second halves of the file.
        assert!(critic.iter().any(|&i| i > 60) && judge.iter().any(|&i| i < 40));
        assert_eq!(corpus_half(5, CorpusPart::All), vec![0, 1, 2, 3, 4]);
    }
}
