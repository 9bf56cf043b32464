//! The supervised trainer (`stylecap train`): one explicit loop, as in nanoGPT.
//!
//! Each step trains on a batch of image + factual caption rows (style `factual`) and style-text
//! rows (their style, with a blank image or an unrelated one), teacher-forced. The run folder
//! is `crate::run`'s: its checkpoint holds a captioner folder, the optimizer state and the
//! step; at the end `model/` is the captioner folder for `stylecap caption`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use burn::prelude::*;
use image::RgbImage;
use serde::Serialize;

use super::batches::{RowSource, StepRows};
use super::config::TrainConfig;
use super::features::FeatureCache;
use super::step::{batch_loss, micro_step, teacher_forcing, CaptionBatch};
use crate::data::image::PreprocessorConfig;
use crate::data::sources::{CaptionSource, TrainData};
use crate::data::text_metrics::{bleu4, cider_d};
use crate::data::tokenizer::TextTokenizer;
use crate::model::autocast::Autocast;
use crate::model::folder;
use crate::model::gpt2::Gpt2Config;
use crate::model::pretrained::{load_gpt2, load_vision, resolve};
use crate::model::style::{style_names, FACTUAL};
use crate::model::vision::VisionConfig;
use crate::model::vit::ViTConfig;
use crate::model::weights::{freeze_named, replace_named, StoredTensor};
use crate::model::{generate, Captioner, CaptionerConfig, DecodeOptions, StyleConfig};
use crate::optim::adamw::{Accumulated, AdamW};
use crate::optim::schedule::warmup_cosine;
use crate::run::{RunFolder, RunOptions};
use crate::tensor::index_tensor;
use crate::util::progress_bar;
use crate::world::{content_fidelity, Lexicon};

/// The rows of (step, micro-batch), being made on another thread.
type RowsAhead = ((usize, usize), JoinHandle<Result<StepRows>>);
const LOG_EVERY: usize = 10;

/// Validation figures at one step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EvalResult {
    pub split: String,
    pub loss: f32,
    pub images: usize,
    /// Mean content fidelity of greedy factual captions (scene-world data only).
    pub content_fidelity: Option<f32>,
    pub bleu4: f64,
    pub cider_d: f64,
    pub samples: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TrainSummary {
    pub steps: usize,
    pub seconds: f64,
    pub final_loss: f32,
    pub evals: Vec<EvalResult>,
}

/// The learning rate group of a parameter: the encoder, the bridge (projection and
/// cross-attention), or the decoder (and style prefixes).
pub fn lr_group(name: &str) -> &'static str {
    if name.starts_with("encoder.") {
        "encoder"
    } else if name.starts_with("enc_to_dec_proj.")
        || name.contains(".crossattention.")
        || name.contains(".ln_cross_attn.")
    {
        "cross"
    } else {
        "decoder"
    }
}

/// Whether a vision parameter stays trainable when only the top `k` of `layers` layers train.
fn vision_trainable(name: &str, layers: usize, k: usize) -> bool {
    let Some(rest) = name.strip_prefix("encoder.") else {
        return true;
    };
    let layer = rest
        .strip_prefix("encoder.layer.")
        .or_else(|| rest.strip_prefix("encoder.layers."))
        .and_then(|r| r.split('.').next())
        .and_then(|i| i.parse::<usize>().ok());
    match layer {
        Some(i) => i + k >= layers && k > 0,
        // The final LayerNorm trains with the top layers; embeddings only with all of them.
        None => {
            let top = rest.starts_with("layernorm.") || rest.starts_with("post_layernorm.");
            (top && k > 0) || k >= layers
        }
    }
}

pub struct Trainer {
    pub config: TrainConfig,
    pub run: RunFolder,
    pub model: Captioner,
    pub tokenizer: TextTokenizer,
    pub preprocess: PreprocessorConfig,
    pub optim: AdamW,
    /// Steps completed.
    pub step: usize,
    data: Arc<TrainData>,
    style_ids: BTreeMap<String, usize>,
    rows: Arc<RowSource>,
    /// The rows of the next micro-batch, being prepared on another thread while the
    /// optimizer applies this step (they depend only on the seed and the step).
    ahead: Option<RowsAhead>,
    /// The frozen encoder's output per picture (with `train_vision_layers = 0`).
    features: Option<FeatureCache>,
    device: Device,
    plain: Device,
}

impl Trainer {
    /// Prepares a new run in `run` (which must not hold one), or resumes the one there.
    pub fn new(config: TrainConfig, run: &Path, resume: bool, device: &Device) -> Result<Self> {
        let resumed = if resume {
            Some(RunFolder::resume::<TrainConfig>(run)?)
        } else {
            None
        };
        let config = match &resumed {
            Some(r) => r.config.clone(),
            None => config,
        };
        config
            .validate()
            .context("invalid training configuration")?;
        crate::model::autocast::check(config.mixed_precision, device)?;
        if let Some(r) = &resumed {
            r.check_step(config.steps)?;
        }
        device.seed(config.seed);
        let plain = device.clone();
        let device = device.clone().autodiff();
        let data = TrainData::load(&config.data_spec())?;
        for s in &data.skipped {
            eprintln!("skipped: {s}");
        }
        let styles = style_names(data.styles.iter().map(|t| t.style.as_str()));
        let style_ids: BTreeMap<String, usize> = styles
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();

        let (run, model, tokenizer, preprocess, optim, step) = match resumed {
            Some(r) => {
                let ckpt = r.run.checkpoint_dir();
                let loaded = folder::LoadedCaptioner::load(&ckpt, &device)?;
                // Style rows are indexed by name order: another corpus would shift them.
                anyhow::ensure!(
                    loaded.model.config.style.styles == styles,
                    "{}: the run was trained on the styles {}; the style corpus now gives {}. \
                     Resume with the data the run started with, or start a new run",
                    ckpt.display(),
                    loaded.model.config.style.styles.join(", "),
                    styles.join(", ")
                );
                let optim = AdamW::load(
                    config.optimizer.clone(),
                    &ckpt.join("optimizer.safetensors"),
                )?;
                (
                    r.run,
                    loaded.model,
                    loaded.tokenizer,
                    loaded.preprocess,
                    optim,
                    r.step,
                )
            }
            None => {
                let run = RunFolder::create(run, &config)?;
                let (model, tokenizer, preprocess) = build_model(&config, &data, styles, &device)?;
                (
                    run,
                    model,
                    tokenizer,
                    preprocess,
                    AdamW::new(config.optimizer.clone()),
                    0,
                )
            }
        };
        let model = match config.train_vision_layers {
            None => model,
            Some(k) => {
                let layers = match &model.config.encoder {
                    VisionConfig::Vit(c) => c.num_hidden_layers,
                    VisionConfig::Clip(c) => c.num_hidden_layers,
                };
                freeze_named(model, "", |name| !vision_trainable(name, layers, k))
            }
        };
        let data = Arc::new(data);
        let rows = Arc::new(RowSource::new(
            config.clone(),
            data.clone(),
            tokenizer.clone(),
            style_ids.clone(),
            model.config.encoder.image_size() as u32,
        ));
        let features = (config.train_vision_layers == Some(0)
            && (config.feature_cache_mb > 0 || config.feature_cache_disk_mb > 0))
            .then(|| {
                FeatureCache::new(config.feature_cache_mb).spilling_to(
                    run.dir().join("feature-cache.bin"),
                    config.feature_cache_disk_mb,
                )
            });
        let optim = optim.with_mixed_precision(config.mixed_precision);
        Ok(Trainer {
            rows,
            ahead: None,
            features,
            config,
            run,
            model,
            tokenizer,
            preprocess,
            optim,
            step,
            data,
            style_ids,
            device,
            plain,
        })
    }

    fn eot(&self) -> u32 {
        self.model.config.decoder_start_token_id
    }

    /// The rows of micro-batch `micro` of `step`: those prepared ahead if they are these.
    fn take_rows(&mut self, step: usize, micro: usize) -> Result<StepRows> {
        match self.ahead.take() {
            Some((key, handle)) if key == (step, micro) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            _ => self.rows.rows(step, micro),
        }
    }

    /// The learning rate of a group (see `lr_group`) at `step`.
    fn group_lr(&self, group: &str, step: usize) -> f64 {
        let c = &self.config;
        let base = match group {
            "encoder" => c.lr_encoder,
            "cross" => c.lr_cross,
            _ => c.lr,
        };
        base * warmup_cosine(step, c.steps, c.warmup_steps, c.min_lr_ratio)
    }

    /// One optimisation step (all micro-batches); returns the mean loss and target tokens.
    ///
    /// Each micro-batch is split into `data_parallel` shards of similar length
    /// (`shards::by_length`) whose forward and backward passes run on their own threads: the
    /// CPU backend keeps about one core busy on matrices this small, so shards use the others.
    /// Shard gradients are weighted by their share of target tokens, which gives the gradient
    /// of the whole micro-batch's mean loss. The next micro-batch's rows are made (pictures
    /// drawn, texts tokenized) while this one's gradients are summed and applied, which runs
    /// mostly on one core.
    pub fn train_step(&mut self) -> Result<(f32, usize, f64)> {
        let _mixed = Autocast::enter(self.config.mixed_precision);
        let loss_scale = self.optim.loss_factor();
        let step = self.step;
        let mut acc = Accumulated::default();
        let (mut loss_sum, mut tokens) = (0f32, 0usize);
        let accum = self.config.grad_accum.max(1);
        let shards = self.config.data_parallel.max(1);
        for micro in 0..accum {
            let rows = self.take_rows(step, micro)?;
            let next = match micro + 1 < accum {
                true => (step, micro + 1),
                false => (step + 1, 0),
            };
            let (value, total) = micro_step(
                &self.model,
                &rows,
                (shards, self.config.gradient_checkpointing),
                &self.preprocess,
                self.eot(),
                &self.device,
                (&mut acc, accum, loss_scale),
                self.features.as_ref(),
                || self.ahead = rows_ahead(&self.rows, self.config.steps, next),
            )?;
            tokens += total;
            if !value.is_finite() {
                bail!(
                    "step {}: the loss is {value}; stopped without saving (the last checkpoint, \
                     if any, is in {})",
                    step + 1,
                    self.run.checkpoint_dir().display()
                );
            }
            loss_sum += value;
        }
        let lrs: BTreeMap<&str, f64> = ["encoder", "cross", "decoder"]
            .into_iter()
            .map(|g| (g, self.group_lr(g, step)))
            .collect();
        let model = self.model.clone();
        let (model, stats) = self.optim.update(model, acc, |name| lrs[lr_group(name)]);
        if !stats.applied {
            // f16's loss scaling skips the step and halves the scale; without it, a
            // non-finite gradient is the end of the run.
            ensure!(
                self.optim.loss_scale.is_some(),
                "step {}: the gradient norm is {}; stopped without saving (the last \
                 checkpoint, if any, is in {})",
                step + 1,
                stats.grad_norm,
                self.run.checkpoint_dir().display()
            );
        }
        self.model = model;
        self.step += 1;
        Ok((loss_sum / accum as f32, tokens, lrs["decoder"]))
    }

    /// Saves the captioner folder, the optimizer state and the step as the run's checkpoint.
    pub fn save_checkpoint(&self) -> Result<()> {
        self.run.save_checkpoint(self.step, |dir| {
            self.save_model(dir)?;
            self.optim.save(&dir.join("optimizer.safetensors"))
        })
    }

    /// A captioner folder: what `stylecap caption --model DIR` opens.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        folder::save(dir, &self.model, &self.tokenizer, &self.preprocess)
    }

    /// Validation on the first `limit` images of a caption source: teacher-forced loss on the
    /// first caption, greedy factual captions, content fidelity (with scene graphs), BLEU-4 and
    /// CIDEr-D.
    pub fn evaluate(&self, name: &str, source: &CaptionSource, limit: usize) -> Result<EvalResult> {
        let n = source.len().min(limit);
        if n == 0 {
            return Ok(EvalResult {
                split: name.to_string(),
                ..Default::default()
            });
        }
        // `valid` drops autodiff; `to_device` would keep taping every op of the evaluation.
        let model = self.model.clone().valid();
        let factual = self.style_ids[FACTUAL];
        let lexicon = Lexicon::new();
        let eot = self.eot();
        let (mut loss_sum, mut batches) = (0f32, 0);
        let (mut captions, mut refs, mut fidelity) = (Vec::new(), Vec::new(), Vec::new());
        for start in (0..n).step_by(50) {
            let ids: Vec<usize> = (start..(start + 50).min(n)).collect();
            let examples = source.get_many(&ids)?;
            let images: Vec<RgbImage> = examples.iter().map(|e| e.image.clone()).collect();
            let pixels = self.preprocess.batch(&images, &self.plain)?;
            let tokens = examples
                .iter()
                .map(|e| self.rows.encode_text(&e.captions[0]))
                .collect::<Result<Vec<_>>>()?;
            let (input_ids, targets, mask) = teacher_forcing(&tokens, eot, eot, eot, &self.plain);
            let styles = index_tensor(&vec![factual; ids.len()], &self.plain);
            let batch = CaptionBatch {
                encoder_states: None,
                pictures: (0..ids.len()).collect(),
                pixel_values: pixels.clone(),
                styles: Some(styles),
                input_ids,
                targets,
                mask,
            };
            loss_sum += batch_loss(&model, &batch).into_scalar::<f32>();
            batches += 1;
            let opts = DecodeOptions {
                max_new_tokens: self.config.max_caption_tokens,
                ..Default::default()
            };
            let out = generate(&model, pixels, Some(&vec![factual; ids.len()]), &opts)?;
            for (g, e) in out.iter().zip(&examples) {
                let text = self.tokenizer.decode(&g.tokens)?.trim().to_string();
                if let Some(scene) = &e.scene {
                    fidelity.push(content_fidelity(&lexicon, &text, scene));
                }
                captions.push(text);
                refs.push(e.captions.clone());
            }
        }
        Ok(EvalResult {
            split: name.to_string(),
            loss: loss_sum / batches as f32,
            images: n,
            content_fidelity: (!fidelity.is_empty())
                .then(|| fidelity.iter().sum::<f32>() / fidelity.len() as f32),
            bleu4: bleu4(&captions, &refs),
            cider_d: cider_d(&captions, &refs).0,
            samples: captions.into_iter().take(4).collect(),
        })
    }

    /// Trains to the configured number of steps (from wherever the run is).
    pub fn run(&mut self, options: &RunOptions) -> Result<TrainSummary> {
        let c = self.config.clone();
        let bar = progress_bar(c.steps as u64, "train", options.show_progress);
        bar.set_position(self.step as u64);
        let mut metrics = self.run.metrics()?;
        let start = Instant::now();
        let (mut window_loss, mut window_tokens, mut window_steps) = (0f32, 0usize, 0usize);
        let mut window_start = Instant::now();
        let mut last_loss = f32::NAN;
        let mut evals = Vec::new();
        while self.step < c.steps {
            let (loss, tokens, lr) = self.train_step()?;
            last_loss = loss;
            window_loss += loss;
            window_tokens += tokens;
            window_steps += 1;
            bar.inc(1);
            let step = self.step;
            if step.is_multiple_of(LOG_EVERY) || step == c.steps {
                let secs = window_start.elapsed().as_secs_f64();
                // The step's own loss (not a window mean), so a resumed run logs the same.
                let mut record = serde_json::json!({
                    "step": step,
                    "loss": loss,
                    "lr": lr,
                    "tokens_per_s": window_tokens as f64 / secs,
                    "elapsed_s": start.elapsed().as_secs_f64(),
                });
                if let Some(s) = self.optim.loss_scale {
                    // Halved at each skipped step (overflowed f16 gradients).
                    record["loss_scale"] = s.scale.into();
                }
                metrics.log(&record)?;
                bar.set_message(format!(
                    "loss {:.3} lr {lr:.1e} {:.0} tok/s",
                    window_loss / window_steps as f32,
                    window_tokens as f64 / secs
                ));
                (window_loss, window_tokens, window_steps) = (0.0, 0, 0);
                window_start = Instant::now();
            }
            if step.is_multiple_of(c.eval_every) || step == c.steps {
                let e = self.evaluate("val", &self.data.val, c.eval_images)?;
                let mut record = serde_json::to_value(&e)?;
                record["step"] = step.into();
                metrics.log(&record)?;
                bar.println(format!(
                    "step {step}: val loss {:.3}, content fidelity {}, BLEU-4 {:.3}, CIDEr-D {:.3}; \"{}\"",
                    e.loss,
                    e.content_fidelity.map_or("-".into(), |f| format!("{f:.3}")),
                    e.bleu4,
                    e.cider_d,
                    e.samples.first().cloned().unwrap_or_default()
                ));
                evals.push(e);
            }
            if step.is_multiple_of(c.checkpoint_every) || step == c.steps {
                metrics.flush()?;
                self.save_checkpoint()?;
            }
            if options.stop_after == Some(step) {
                bar.abandon();
                return Ok(TrainSummary {
                    steps: step,
                    seconds: start.elapsed().as_secs_f64(),
                    final_loss: last_loss,
                    evals,
                });
            }
        }
        bar.finish_and_clear();
        for (name, source) in &self.data.tests {
            evals.push(self.evaluate(name, source, c.test_images)?);
        }
        self.save_model(&self.run.model_dir())?;
        let summary = TrainSummary {
            steps: self.step,
            seconds: start.elapsed().as_secs_f64(),
            final_loss: last_loss,
            evals,
        };
        self.run.write_eval(&summary)?;
        Ok(summary)
    }
}

/// Starts making the rows of `(step, micro)` on another thread (none past the last step).
fn rows_ahead(rows: &Arc<RowSource>, steps: usize, at: (usize, usize)) -> Option<RowsAhead> {
    (at.0 < steps).then(|| {
        let rows = rows.clone();
        let handle = std::thread::spawn(move || rows.rows(at.0, at.1));
        (at, handle)
    })
}

/// A ViT trained from scratch starts with 2-D sine-cosine position embeddings (as MAE
/// initialises them) instead of small random ones: the decoder can tell left from right, high
/// from low, from the first step, and grounding sets in sooner. Still learned; the class token's
/// position is zero.
fn with_sincos_positions(model: Captioner) -> Captioner {
    let VisionConfig::Vit(vit) = &model.config.encoder else {
        return model;
    };
    let (d, grid) = (vit.hidden_size, vit.image_size / vit.patch_size);
    if d % 4 != 0 {
        return model;
    }
    let mut values = vec![0f32; (grid * grid + 1) * d];
    let quarter = d / 4;
    for row in 0..grid {
        for col in 0..grid {
            let at = (1 + row * grid + col) * d;
            for (half, pos) in [(0, col), (1, row)] {
                for i in 0..quarter {
                    let omega = 1.0 / 10000f64.powf(i as f64 / quarter as f64);
                    let angle = pos as f64 * omega;
                    values[at + half * 2 * quarter + i] = angle.sin() as f32;
                    values[at + half * 2 * quarter + quarter + i] = angle.cos() as f32;
                }
            }
        }
    }
    replace_named(model, "", |name, shape| {
        (name == "encoder.embeddings.position_embeddings").then(|| StoredTensor {
            shape: shape.to_vec(),
            values: values.clone(),
        })
    })
}

/// A new captioner: from scratch with a BPE trained on the data, or from pretrained parts.
fn build_model(
    config: &TrainConfig,
    data: &TrainData,
    styles: Vec<String>,
    device: &Device,
) -> Result<(Captioner, TextTokenizer, PreprocessorConfig)> {
    let m = &config.model;
    let style = StyleConfig {
        styles,
        prefix_tokens: m.prefix_tokens,
    };
    let (encoder_cfg, encoder, preprocess) = match &config.vision {
        Some(id) => {
            let dir = resolve(id)?;
            let (cfg, enc) = load_vision(&dir, device)?;
            let pre_path = dir.join("preprocessor_config.json");
            let pre = if pre_path.is_file() {
                PreprocessorConfig::load(&pre_path)?
            } else {
                PreprocessorConfig::square(cfg.image_size())
            };
            (cfg, Some(enc), pre)
        }
        None => {
            let vit = ViTConfig {
                shape_channel: m.shape_channel,
                ..ViTConfig::new(
                    m.image_size,
                    m.patch_size,
                    m.vision_dim,
                    m.vision_layers,
                    m.vision_heads,
                )
            };
            vit.validate().context("config `model`")?;
            (
                VisionConfig::Vit(vit),
                None,
                PreprocessorConfig::square(m.image_size),
            )
        }
    };
    let (tokenizer, decoder_cfg, decoder) = match &config.decoder {
        Some(id) => {
            let dir = resolve(id)?;
            let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
            let loaded = load_gpt2(&dir, true, device)?;
            if !loaded.fresh.is_empty() {
                eprintln!(
                    "{}: {} cross-attention tensors are new (initialised fresh)",
                    dir.display(),
                    loaded.fresh.len()
                );
            }
            (tokenizer, loaded.config, Some(loaded.model))
        }
        None => {
            let mut texts: Vec<String> = Vec::new();
            let n = data.train.len().min(5000);
            for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
                for e in data.train.get_many(chunk)? {
                    texts.extend(e.captions);
                }
            }
            texts.extend(data.styles.iter().map(|t| t.text.clone()));
            let tokenizer = TextTokenizer::train_bpe(texts.into_iter(), m.vocab_size)?;
            let cfg = Gpt2Config::new(
                tokenizer.vocab_size(),
                m.max_positions,
                m.decoder_dim,
                m.decoder_layers,
                m.decoder_heads,
            );
            (tokenizer, cfg, None)
        }
    };
    let eot = tokenizer.end_of_text()?;
    let cfg = CaptionerConfig::new(encoder_cfg, decoder_cfg, eot, eot, style);
    let max_len = m.prefix_tokens + config.max_caption_tokens + 2;
    if max_len > cfg.decoder.n_positions {
        bail!(
            "captions of {} tokens plus a {}-token style prefix need {max_len} positions; the \
             decoder has {}",
            config.max_caption_tokens,
            m.prefix_tokens,
            cfg.decoder.n_positions
        );
    }
    let model = match (encoder, decoder) {
        (None, None) => with_sincos_positions(Captioner::new(cfg, device)),
        (enc, dec) => {
            let fresh = Captioner::new(cfg.clone(), device);
            Captioner::from_parts(
                cfg,
                enc.unwrap_or(fresh.encoder),
                dec.unwrap_or(fresh.decoder),
                device,
            )
        }
    };
    Ok((model, tokenizer, preprocess))
}
