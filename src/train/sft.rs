//! The supervised trainer (`stylecap train`): one explicit loop, as in nanoGPT.
//!
//! Each step trains on a batch of image + factual caption rows (style `factual`) and style-text
//! rows (their style, with a blank image or an unrelated one), teacher-forced. The run folder
//! holds `config.json` (the resolved configuration), `metrics.jsonl`, `checkpoint/` (model,
//! tokenizer, optimizer state, step: replaced atomically) and, at the end, `model/` (a
//! captioner folder for `stylecap caption`) and `eval.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

use super::batches::{RowSource, StepRows};
use super::config::TrainConfig;
use super::data::{CaptionSource, TrainData};
use super::grads::native_gradients;
use super::optim::{Accumulated, AdamW};
use super::schedule::warmup_cosine;
use super::step::{batch_loss, caption_batch, teacher_forcing, CaptionBatch};
use crate::data::image::PreprocessorConfig;
use crate::data::tokenizer::TextTokenizer;
use crate::data::world::{content_fidelity, Lexicon};
use crate::eval::text_metrics::{bleu4, cider_d};
use crate::model::gpt2::Gpt2Config;
use crate::model::pretrained::{load_gpt2, load_vision, resolve};
use crate::model::vision::VisionConfig;
use crate::model::vit::ViTConfig;
use crate::model::weights::{freeze_named, replace_named, StoredTensor};
use crate::model::{generate, Captioner, CaptionerConfig, DecodeOptions, StyleConfig};
use crate::util::{progress_bar, read_json, write_json};

pub const FACTUAL: &str = "factual";

/// Gradients by parameter name (None where a parameter got none).
type NamedGrads = Vec<(String, Option<Vec<f32>>)>;
/// The rows of (step, micro-batch), being made on another thread.
type RowsAhead = ((usize, usize), JoinHandle<Result<StepRows>>);
const CHECKPOINT: &str = "checkpoint";
const LOG_EVERY: usize = 10;

/// How to run (not part of the configuration: it does not change the result).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue the run in the folder from its last checkpoint.
    pub resume: bool,
    pub show_progress: bool,
    /// Stop after this step as if killed (after its checkpoint, if one is due): for tests.
    pub stop_after: Option<usize>,
}

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

/// Where the run is: checkpoint name → path helpers.
fn checkpoint_dir(run: &Path) -> PathBuf {
    run.join(CHECKPOINT)
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
    pub run: PathBuf,
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
    device: Device,
    plain: Device,
}

fn style_names(data: &TrainData) -> Vec<String> {
    let mut names: Vec<String> = data.styles.iter().map(|t| t.style.clone()).collect();
    names.push(FACTUAL.to_string());
    names.sort();
    names.dedup();
    names
}

impl Trainer {
    /// Prepares a new run in `run` (which must not hold one), or resumes the one there.
    pub fn new(config: TrainConfig, run: &Path, resume: bool, device: &Device) -> Result<Self> {
        let ckpt = checkpoint_dir(run);
        let config = if resume {
            if !ckpt.join("state.json").is_file() {
                bail!("{}: no checkpoint to resume from", run.display());
            }
            let saved: TrainConfig = read_json(&run.join("config.json"))?;
            saved
        } else {
            if run.join("config.json").exists() {
                bail!(
                    "{} already holds a run: pass --resume to continue it, or choose another --out",
                    run.display()
                );
            }
            config
        };
        device.seed(config.seed);
        let plain = device.clone();
        let device = device.clone().autodiff();
        let data = TrainData::load(&config)?;
        for s in &data.skipped {
            eprintln!("skipped: {s}");
        }
        let styles = style_names(&data);
        let style_ids: BTreeMap<String, usize> = styles
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();

        let (model, tokenizer, preprocess, optim, step) = if resume {
            let model = Captioner::load(&ckpt, &device)?;
            let tokenizer = TextTokenizer::load(&ckpt.join("tokenizer.json"))?;
            let preprocess = PreprocessorConfig::load(&ckpt.join("preprocessor_config.json"))?;
            let optim = AdamW::load(
                config.optimizer.clone(),
                &ckpt.join("optimizer.safetensors"),
            )?;
            let state: serde_json::Value = read_json(&ckpt.join("state.json"))?;
            let step = state["step"].as_u64().context("state.json: no step")? as usize;
            truncate_metrics(&run.join("metrics.jsonl"), step)?;
            (model, tokenizer, preprocess, optim, step)
        } else {
            std::fs::create_dir_all(run)
                .with_context(|| format!("cannot create {}", run.display()))?;
            write_json(&run.join("config.json"), &config)?;
            let (model, tokenizer, preprocess) = build_model(&config, &data, styles, &device)?;
            (
                model,
                tokenizer,
                preprocess,
                AdamW::new(config.optimizer.clone()),
                0,
            )
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
        Ok(Trainer {
            rows,
            ahead: None,
            config,
            run: run.to_path_buf(),
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

    fn to_batch(
        &self,
        images: &[RgbImage],
        tokens: &[Vec<u32>],
        styles: &[usize],
    ) -> Result<CaptionBatch> {
        Ok(caption_batch(
            self.preprocess.batch(images, &self.device)?,
            styles,
            tokens,
            self.eot(),
            &self.device,
        ))
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

    /// Starts preparing the rows of micro-batch `micro` of `step` on another thread.
    fn prepare_rows(&mut self, step: usize, micro: usize) {
        self.ahead = (step < self.config.steps).then(|| {
            let rows = self.rows.clone();
            let handle = std::thread::spawn(move || rows.rows(step, micro));
            ((step, micro), handle)
        });
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
        let step = self.step;
        let mut acc = Accumulated::default();
        let (mut loss_sum, mut tokens) = (0f32, 0usize);
        let accum = self.config.grad_accum.max(1);
        let shards = self.config.data_parallel.max(1);
        for micro in 0..accum {
            let StepRows {
                images,
                tokens: rows,
                styles,
            } = self.take_rows(step, micro)?;
            let lengths: Vec<usize> = rows.iter().map(|r| r.len() + 1).collect();
            let total: usize = lengths.iter().sum();
            let batches = super::shards::by_length(&lengths, shards)
                .into_iter()
                .map(|shard| {
                    let share =
                        shard.iter().map(|&i| lengths[i]).sum::<usize>() as f32 / total as f32;
                    let im: Vec<RgbImage> = shard.iter().map(|&i| images[i].clone()).collect();
                    let ro: Vec<Vec<u32>> = shard.iter().map(|&i| rows[i].clone()).collect();
                    let st: Vec<usize> = shard.iter().map(|&i| styles[i]).collect();
                    Ok((self.to_batch(&im, &ro, &st)?, share))
                })
                .collect::<Result<Vec<_>>>()?;
            let (model, device) = (&self.model, &self.device);
            // Each shard works on its own fork of the model: burn's autodiff graph cannot run
            // two backward passes through shared parameter nodes at once. The shards run as
            // tasks of rayon's pool, which the CPU backend's own parallel ops also use, so the
            // two levels share the cores instead of oversubscribing them.
            let results: Vec<(f32, f32, NamedGrads)> = batches
                .par_iter()
                .map(|(batch, share)| {
                    let local = model.clone().fork(device);
                    let loss = batch_loss(&local, batch);
                    let grads = loss.backward();
                    let named = native_gradients(&local, &grads);
                    (loss.into_scalar::<f32>(), *share, named)
                })
                .collect();
            match micro + 1 < accum {
                true => self.prepare_rows(step, micro + 1),
                false => self.prepare_rows(step + 1, 0),
            }
            tokens += total;
            let mut value = 0f32;
            for (loss, share, named) in results {
                value += loss * share;
                acc.add_named(named, share / accum as f32);
            }
            if !value.is_finite() {
                bail!(
                    "step {}: the loss is {value}; stopped without saving (the last checkpoint, \
                     if any, is in {})",
                    step + 1,
                    checkpoint_dir(&self.run).display()
                );
            }
            loss_sum += value;
        }
        let norm = acc.global_norm();
        if !norm.is_finite() {
            bail!(
                "step {}: the gradient norm is {norm}; stopped without saving (the last \
                 checkpoint, if any, is in {})",
                step + 1,
                checkpoint_dir(&self.run).display()
            );
        }
        let lrs: BTreeMap<&str, f64> = ["encoder", "cross", "decoder"]
            .into_iter()
            .map(|g| (g, self.group_lr(g, step)))
            .collect();
        let model = self.model.clone();
        let (model, _) = self.optim.update(model, acc, |name| lrs[lr_group(name)]);
        self.model = model;
        self.step += 1;
        Ok((loss_sum / accum as f32, tokens, lrs["decoder"]))
    }

    /// Saves model, tokenizer, preprocessing, optimizer state and step into `checkpoint/`,
    /// replacing the previous one only once the new one is complete.
    pub fn save_checkpoint(&self) -> Result<()> {
        let final_dir = checkpoint_dir(&self.run);
        let tmp = self
            .run
            .join(format!(".{CHECKPOINT}.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        self.save_model(&tmp)?;
        self.optim.save(&tmp.join("optimizer.safetensors"))?;
        write_json(
            &tmp.join("state.json"),
            &serde_json::json!({"step": self.step}),
        )?;
        let old = self.run.join(format!("{CHECKPOINT}.old"));
        let _ = std::fs::remove_dir_all(&old);
        if final_dir.exists() {
            std::fs::rename(&final_dir, &old)?;
        }
        std::fs::rename(&tmp, &final_dir)
            .with_context(|| format!("cannot move the checkpoint into {}", final_dir.display()))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// A captioner folder: what `stylecap caption --model DIR` opens.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        self.model.save(dir)?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        write_json(&dir.join("preprocessor_config.json"), &self.preprocess)
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
            let styles = Tensor::from_data(
                TensorData::new(vec![factual as i64; ids.len()], [ids.len()]),
                &self.plain,
            );
            let batch = CaptionBatch {
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
        let metrics_path = self.run.join("metrics.jsonl");
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("cannot open {}", metrics_path.display()))?;
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
                let record = serde_json::json!({
                    "step": step,
                    "loss": loss,
                    "lr": lr,
                    "tokens_per_s": window_tokens as f64 / secs,
                    "elapsed_s": start.elapsed().as_secs_f64(),
                });
                writeln!(metrics, "{record}")?;
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
                writeln!(metrics, "{record}")?;
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
        self.save_model(&self.run.join("model"))?;
        let summary = TrainSummary {
            steps: self.step,
            seconds: start.elapsed().as_secs_f64(),
            final_loss: last_loss,
            evals,
        };
        write_json(&self.run.join("eval.json"), &summary)?;
        Ok(summary)
    }
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

/// Drops metrics logged after `step` (by a run killed after its last checkpoint).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    crate::util::write_atomic(path, out.as_bytes())
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
