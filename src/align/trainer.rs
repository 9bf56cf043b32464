//! `stylecap align`: the loop, with the captioner as a policy. Each step draws pictures (of
//! the built-in world or any caption dataset) and target styles, samples K captions per
//! picture ([`rollout`]), scores them (the critic and the content reward in
//! [`super::reward`]; the KL to the frozen reference in [`rollout`]), and
//! updates the policy ([`update`]). The run folder is `crate::run`'s; its `model/` is the
//! policy with the best validation reward. A checkpoint holds the policy, the optimizer and
//! the loop's own state (KL coefficient, baselines, validations so far), so a resumed run
//! equals an uninterrupted one.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::advantage::{Algo, MovingBaseline};
use super::config::AlignConfig;
use super::kl::AdaptiveKl;
use super::reward::{ContentReward, ContentRewardKind, Picture, Rewarder, RunningStats, Terms};
use super::rollout::{self, Rollout};
use super::update::{self, Update};
use crate::critic::Critic;
use crate::data::image::PreprocessorConfig;
use crate::data::sources::{CaptionExample, CaptionSource, CaptionSplits, DataSpec, EpochOrder};
use crate::data::tokenizer::TextTokenizer;
use crate::model::autocast::Autocast;
use crate::model::folder::{self, model_dir, LoadedCaptioner};
use crate::model::generate::Strategy;
use crate::model::lora;
use crate::model::style::FACTUAL;
use crate::model::weights::{freeze_named, read_named, replace_named, StoredTensor, Values};
use crate::model::{Captioner, DecodeOptions};
use crate::optim::AdamW;
use crate::rng::streams;
use crate::run::Metrics;
use crate::run::{RunFolder, RunOptions};
use crate::sft::step::{caption_batch, CaptionBatch};
use crate::util::{progress_bar, read_json, write_json};

/// The sampling seed of validation captions (the same pictures and seed at every validation).
const VALIDATION_SEED: u64 = 7;
/// The checkpoint's files besides the policy's captioner folder.
const OPTIMIZER: &str = "optimizer.safetensors";
const LOOP_STATE: &str = "align_state.json";

/// A target style: its name, and its index among the captioner's and the critic's styles.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub captioner: usize,
    pub critic: usize,
}

/// What one step measured, logged to `metrics.jsonl`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepLog {
    pub step: usize,
    pub reward: f32,
    pub reward_std: f32,
    pub style: f32,
    pub style_prob: f32,
    pub content: f32,
    pub penalty: f32,
    pub kl: f32,
    pub beta: f64,
    pub entropy: f32,
    pub loss: f32,
    /// The supervised anchor's cross-entropy (0 when off).
    pub ptx_loss: f32,
    pub clip_fraction: f32,
    pub approx_kl: f32,
    pub skipped: usize,
    /// f16 mixed precision's loss scale after the step (halved at each overflow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f32>,
    pub tokens_per_s: f32,
    pub elapsed_s: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValResult {
    pub step: usize,
    pub reward: f32,
    pub style_prob: f32,
    pub content: f32,
    pub samples: Vec<String>,
}

pub struct Aligner {
    pub config: AlignConfig,
    pub run: RunFolder,
    pub policy: Captioner,
    pub reference: Captioner,
    pub tokenizer: TextTokenizer,
    preprocess: PreprocessorConfig,
    critic: Critic,
    critic_tokenizer: TextTokenizer,
    targets: Vec<Target>,
    /// Pictures alignment trains on, and those that validate it.
    train: CaptionSource,
    val: CaptionSource,
    content: Box<dyn ContentReward>,
    order: EpochOrder,
    ptx_order: EpochOrder,
    optim: AdamW,
    kl: AdaptiveKl,
    baseline: MovingBaseline,
    stats: RunningStats,
    pub step: usize,
    /// Validations so far, and the best validation reward (that of `model/`).
    vals: Vec<ValResult>,
    best: f32,
    /// Non-finite batches skipped in a row.
    bad_in_a_row: usize,
    device: Device,
    plain: Device,
}

/// What the loop carries from step to step besides the policy and the optimizer.
#[derive(Serialize, Deserialize)]
struct LoopState {
    beta: f64,
    baseline: MovingBaseline,
    stats: RunningStats,
    vals: Vec<ValResult>,
    best: f32,
    bad_in_a_row: usize,
}

impl Aligner {
    /// Prepares a new run in `run` (which must not hold one), or resumes the one there from
    /// its checkpoint, with its saved configuration.
    pub fn new(config: AlignConfig, run: &Path, resume: bool, device: &Device) -> Result<Self> {
        let resumed = if resume {
            Some(RunFolder::resume::<AlignConfig>(run)?)
        } else {
            None
        };
        let mut config = match &resumed {
            Some(r) => {
                r.check_step(r.config.steps)?;
                r.config.clone()
            }
            None => config,
        };
        config
            .validate()
            .context("invalid alignment configuration")?;
        crate::model::autocast::check(config.mixed_precision, device)?;
        device.seed(config.seed);
        let plain = device.clone();
        let ad = crate::tensor::autodiff_device(device, config.gradient_checkpointing);
        let base = LoadedCaptioner::load(&model_dir(&config.base), &plain)
            .with_context(|| format!("loading the base captioner {}", config.base.display()))?;
        let (critic, critic_tokenizer) = Critic::load(&config.critic, &plain)
            .with_context(|| format!("loading the critic {}", config.critic.display()))?;
        let names: Vec<String> = if config.styles.is_empty() {
            base.model
                .config
                .style
                .styles
                .iter()
                .filter(|s| *s != FACTUAL)
                .cloned()
                .collect()
        } else {
            config.styles.clone()
        };
        if names.is_empty() {
            bail!("no target styles: the base captioner has none besides factual");
        }
        let targets = names
            .iter()
            .map(|s| {
                Ok(Target {
                    name: s.clone(),
                    captioner: base.model.config.style_index(s)?,
                    critic: critic.style_index(s)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut base = base;
        if config.prefix_blend != 1.0 {
            base.model = blend_prefixes(base.model, config.prefix_blend, &targets)?;
        }
        let mut skipped = Vec::new();
        let data = CaptionSplits::load(
            &DataSpec {
                data: config.data.as_deref(),
                val_data: config.val_data.as_deref(),
                test_data: None,
                styles: None,
                skip_bad: false,
                split_seed: config.split_seed,
                world_seed: config.world_seed,
                world_train: config.world_train,
                world_val: config.eval_images,
                image_size: base.model.config.encoder.image_size(),
                style_texts: 0,
            },
            &mut skipped,
        )?;
        let kind = config.content_reward.unwrap_or(
            if data.train.has_scene_graphs() && data.val.has_scene_graphs() {
                ContentRewardKind::Scene
            } else {
                ContentRewardKind::Concepts
            },
        );
        // The run's config.json records the reward chosen, and its weight.
        config.content_reward = Some(kind);
        config.w_content = Some(config.content_weight());
        let content = kind.build(
            &data.train,
            &data.val,
            config.content_encoder.as_deref(),
            config.clip.as_deref(),
            config.cider_cap,
            &plain,
        )?;
        let lora = config.lora();
        let (run, policy, optim, state, step) = match resumed {
            Some(r) => {
                let ckpt = r.run.checkpoint_dir();
                // With LoRA the checkpoint holds the adapters: over the base already loaded,
                // so that the policy and the reference share its weights.
                let policy = match &lora {
                    Some(_) => lora::load_adapters(base.model.clone(), &ckpt, &plain)?,
                    None => LoadedCaptioner::load(&ckpt, &plain)?.model,
                };
                let optim = AdamW::load(config.optimizer.clone(), &ckpt.join(OPTIMIZER))?;
                let state: LoopState = read_json(&ckpt.join(LOOP_STATE))?;
                (r.run, policy, optim, Some(state), r.step)
            }
            None => (
                RunFolder::create(run, &config)?,
                match &lora {
                    Some(l) => lora::add_adapters(base.model.clone(), l, &plain),
                    None => base.model.clone(),
                },
                AdamW::new(config.optimizer.clone()),
                None,
                0,
            ),
        };
        let policy = policy.to_device(&ad).train();
        let policy = if lora.is_some() {
            lora::freeze_base(policy)
        } else if config.train_encoder {
            policy
        } else {
            freeze_named(policy, "", |n| n.starts_with("encoder."))
        };
        Ok(Aligner {
            order: EpochOrder::new(config.seed, streams::ALIGN_IMAGE_ORDER, data.train.len()),
            ptx_order: EpochOrder::new(config.seed, streams::ALIGN_ANCHOR_ORDER, data.train.len()),
            optim: optim.with_mixed_precision(config.mixed_precision),
            kl: AdaptiveKl {
                beta: state.as_ref().map_or(config.beta, |s| s.beta),
                target: config.target_kl.unwrap_or(1.0),
                horizon: config.kl_horizon,
            },
            baseline: state
                .as_ref()
                .map(|s| s.baseline.clone())
                .unwrap_or_default(),
            stats: state.as_ref().map(|s| s.stats.clone()).unwrap_or_default(),
            vals: state.as_ref().map(|s| s.vals.clone()).unwrap_or_default(),
            best: state.as_ref().map_or(f32::NEG_INFINITY, |s| s.best),
            bad_in_a_row: state.as_ref().map_or(0, |s| s.bad_in_a_row),
            reference: base.model,
            tokenizer: base.tokenizer,
            preprocess: base.preprocess,
            policy,
            critic,
            critic_tokenizer,
            targets,
            train: data.train,
            val: data.val,
            content,
            config,
            run,
            step,
            device: ad,
            plain,
        })
    }

    fn rewarder(&self) -> Rewarder<'_> {
        Rewarder {
            config: &self.config,
            critic: &self.critic,
            tokenizer: &self.critic_tokenizer,
            content: self.content.as_ref(),
            device: self.plain.clone(),
        }
    }

    fn decode_texts(&self, tokens: &[Vec<u32>]) -> Result<Vec<String>> {
        tokens
            .iter()
            .map(|t| Ok(self.tokenizer.decode(t)?.trim().to_string()))
            .collect()
    }

    /// Samples `k` captions per image with the current policy (no gradient), and decodes them.
    fn rollout(
        &self,
        images: &[RgbImage],
        styles: &[usize],
        k: usize,
        strategy: Strategy,
        seed: u64,
    ) -> Result<(Rollout, Vec<String>)> {
        let pixels = self.preprocess.batch(images, &self.plain)?;
        let opts = DecodeOptions {
            strategy,
            max_new_tokens: self.config.max_new_tokens,
            seed,
            ..DecodeOptions::default()
        };
        let frozen_encoder = !self.config.train_encoder;
        let rollout = rollout::sample(&self.policy, pixels, Some(styles), k, &opts, frozen_encoder);
        let texts = self.decode_texts(&rollout.tokens)?;
        Ok((rollout, texts))
    }

    fn sampling(&self) -> Strategy {
        Strategy::Sample {
            temperature: self.config.temperature,
            top_k: 0,
            top_p: self.config.top_p,
        }
    }

    /// One alignment step: sample K captions per picture and target style, score them (style,
    /// content, penalties, KL to the reference), and update the policy from the advantages.
    pub fn train_step(&mut self) -> Result<StepLog> {
        let c = self.config.clone();
        let _mixed = Autocast::enter(c.mixed_precision);
        let started = Instant::now();
        let (b, k) = (c.images_per_step, c.samples.max(1));
        let ids: Vec<usize> = (0..b).map(|i| self.order.at(self.step * b + i)).collect();
        let examples = self.train.get_many(&ids)?;
        let images: Vec<RgbImage> = examples.iter().map(|e| e.image.clone()).collect();
        let pictures = pictures(&examples);
        let targets: Vec<&Target> = (0..b)
            .map(|i| &self.targets[(self.step * b + i) % self.targets.len()])
            .collect();
        let cap_styles: Vec<usize> = targets.iter().map(|t| t.captioner).collect();
        let seed = c
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(self.step as u64);
        let (rollout, texts) = self.rollout(&images, &cap_styles, k, self.sampling(), seed)?;
        let n = rollout.len();
        let critic_targets: Vec<usize> = rollout
            .image_of_row
            .iter()
            .map(|&i| targets[i].critic)
            .collect();
        let row_pictures: Vec<Picture> =
            rollout.image_of_row.iter().map(|&i| pictures[i]).collect();
        let terms: Vec<Terms> = self
            .rewarder()
            .terms(&texts, &critic_targets, &row_pictures)?;

        let ref_lp =
            rollout::reference_logprobs(&self.reference, &rollout, self.config.data_parallel);
        let kls = rollout::caption_kls(c.kl_estimator, &rollout.old_logprobs, &ref_lp);
        let beta = self.kl.beta;
        let scores: Vec<f32> = terms.iter().map(|t| t.total(&c)).collect();
        let rewards = update::rewards(&c, &scores, &kls, beta, &mut self.stats);
        let greedy = if c.algo == Algo::Scst {
            let (_, greedy) = self.rollout(&images, &cap_styles, 1, Strategy::Greedy, seed)?;
            let gt: Vec<usize> = targets.iter().map(|t| t.critic).collect();
            let gterms = self.rewarder().terms(&greedy, &gt, &pictures)?;
            Some(gterms.iter().map(|t| t.total(&c)).collect::<Vec<f32>>())
        } else {
            None
        };
        let advantages = update::advantages(&c, &rewards, &mut self.baseline, greedy.as_deref());

        let anchor = self.ptx_batch()?;
        let (policy, u) = update::update_policy(
            self.policy.clone(),
            &mut self.optim,
            &Update {
                config: &c,
                rollout: &rollout,
                advantages: &advantages,
                ref_logprobs: &ref_lp,
                anchor: anchor.as_ref(),
                beta,
                step: self.step,
            },
            &mut self.bad_in_a_row,
            &self.device,
        )?;
        self.policy = policy;
        let mean_kl = kls.iter().sum::<f32>() / n as f32;
        if c.target_kl.is_some() {
            self.kl.update(mean_kl as f64, n);
        }
        self.step += 1;
        let mean = |f: &dyn Fn(&Terms) -> f32| terms.iter().map(f).sum::<f32>() / n as f32;
        let rmean = rewards.iter().sum::<f32>() / n as f32;
        let rstd = (rewards.iter().map(|r| (r - rmean).powi(2)).sum::<f32>() / n as f32).sqrt();
        let ntok: usize = rollout.tokens.iter().map(Vec::len).sum();
        Ok(StepLog {
            step: self.step,
            reward: rmean,
            reward_std: rstd,
            style: mean(&|t| t.style),
            style_prob: mean(&|t| t.style_prob),
            content: mean(&|t| t.content),
            penalty: mean(&|t| t.penalty),
            kl: mean_kl,
            beta,
            entropy: u.entropy,
            loss: u.loss,
            ptx_loss: u.ptx_loss,
            clip_fraction: u.clip_fraction,
            approx_kl: u.approx_kl,
            skipped: u.skipped,
            loss_scale: self.optim.loss_scale.map(|s| s.scale),
            tokens_per_s: ntok as f32 / started.elapsed().as_secs_f32(),
            elapsed_s: 0.0,
        })
    }

    /// The supervised anchor's batch for this step: training pictures (their own epoch
    /// order) with their plain captions, in the factual style. None when the anchor is off.
    fn ptx_batch(&self) -> Result<Option<CaptionBatch>> {
        let c = &self.config;
        if c.ptx_coef == 0.0 || c.ptx_images == 0 {
            return Ok(None);
        }
        let ids: Vec<usize> = (0..c.ptx_images)
            .map(|i| self.ptx_order.at(self.step * c.ptx_images + i))
            .collect();
        let examples = self.train.get_many(&ids)?;
        let images: Vec<RgbImage> = examples.iter().map(|e| e.image.clone()).collect();
        let captions = examples
            .iter()
            .map(|e| {
                let mut ids = self.tokenizer.encode(&e.captions[0])?;
                ids.truncate(c.max_new_tokens);
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        let factual = self.policy.config.style_index(FACTUAL)?;
        Ok(Some(caption_batch(
            self.preprocess.batch(&images, &self.device)?,
            &vec![factual; images.len()],
            &captions,
            self.policy.config.decoder_start_token_id,
            &self.device,
        )))
    }

    /// Mean reward terms of sampled captions on fixed validation images (each in one style).
    pub fn validate(&self) -> Result<ValResult> {
        let n = self.config.eval_images.min(self.val.len());
        let examples = self.val.get_many(&(0..n).collect::<Vec<_>>())?;
        let images: Vec<RgbImage> = examples.iter().map(|e| e.image.clone()).collect();
        let targets: Vec<&Target> = (0..n)
            .map(|i| &self.targets[i % self.targets.len()])
            .collect();
        let (_, texts) = self.rollout(
            &images,
            &targets.iter().map(|t| t.captioner).collect::<Vec<_>>(),
            1,
            self.sampling(),
            VALIDATION_SEED,
        )?;
        let terms = self.rewarder().terms(
            &texts,
            &targets.iter().map(|t| t.critic).collect::<Vec<_>>(),
            &pictures(&examples),
        )?;
        let m = |f: &dyn Fn(&Terms) -> f32| terms.iter().map(f).sum::<f32>() / n.max(1) as f32;
        Ok(ValResult {
            step: self.step,
            reward: m(&|t| t.total(&self.config)),
            style_prob: m(&|t| t.style_prob),
            content: m(&|t| t.content),
            samples: texts
                .iter()
                .zip(&targets)
                .take(self.targets.len())
                .map(|(text, t)| format!("[{}] {text}", t.name))
                .collect(),
        })
    }

    /// A captioner folder, or with LoRA an adapter folder over the base.
    fn save_policy(&self, dir: &Path) -> Result<()> {
        let policy = self.policy.clone().valid();
        match self.config.lora() {
            Some(_) => folder::save_adapters(
                dir,
                &policy,
                &self.config.base,
                &self.tokenizer,
                &self.preprocess,
            ),
            None => folder::save(dir, &policy, &self.tokenizer, &self.preprocess),
        }
    }

    /// Saves the policy, the optimizer and the loop's state as the run's checkpoint.
    fn save_checkpoint(&self) -> Result<()> {
        let state = LoopState {
            beta: self.kl.beta,
            baseline: self.baseline.clone(),
            stats: self.stats.clone(),
            vals: self.vals.clone(),
            best: self.best,
            bad_in_a_row: self.bad_in_a_row,
        };
        self.run.save_checkpoint(self.step, |dir| {
            self.save_policy(dir)?;
            self.optim.save(&dir.join(OPTIMIZER))?;
            write_json(&dir.join(LOOP_STATE), &state)
        })
    }

    /// Validates at the current step; a new best validation reward saves the policy as
    /// `model/`.
    fn validate_and_keep(&mut self, metrics: &mut Metrics) -> Result<ValResult> {
        let v = self.validate()?;
        metrics.log(&serde_json::json!({"step": self.step, "validation": v}))?;
        if v.reward > self.best {
            self.best = v.reward;
            self.save_policy(&self.run.model_dir())?;
        }
        self.vals.push(v.clone());
        Ok(v)
    }

    /// Runs to the configured number of steps (from wherever the run is); keeps the policy
    /// with the best validation reward as `model/`, and the validations as the run's
    /// `eval.json`.
    pub fn run(&mut self, options: &RunOptions) -> Result<Vec<ValResult>> {
        let c = self.config.clone();
        let bar = progress_bar(
            c.steps as u64,
            &format!("align {}", c.algo.name()),
            options.show_progress,
        );
        bar.set_position(self.step as u64);
        let mut metrics = self.run.metrics()?;
        let start = Instant::now();
        if self.vals.is_empty() {
            self.validate_and_keep(&mut metrics)?;
        }
        while self.step < c.steps {
            let mut log = self.train_step()?;
            log.elapsed_s = start.elapsed().as_secs_f64();
            metrics.log(&log)?;
            bar.inc(1);
            bar.set_message(format!(
                "reward {:.3} style {:.3} content {:.3} KL {:.2}",
                log.reward, log.style_prob, log.content, log.kl
            ));
            if self.step.is_multiple_of(c.eval_every) || self.step == c.steps {
                let v = self.validate_and_keep(&mut metrics)?;
                bar.println(format!(
                    "step {}: validation reward {:.3} (style {:.3}, content {:.3}); {}",
                    v.step,
                    v.reward,
                    v.style_prob,
                    v.content,
                    v.samples.first().cloned().unwrap_or_default()
                ));
            }
            if self.step.is_multiple_of(c.checkpoint_every) || self.step == c.steps {
                metrics.flush()?;
                self.save_checkpoint()?;
            }
            // No checkpoint here: a run resumed from an earlier one stops at this step again.
            if log.kl as f64 > c.kl_limit {
                bar.println(format!(
                    "step {}: mean KL {:.2} passed the limit {}; stopping",
                    self.step, log.kl, c.kl_limit
                ));
                break;
            }
            if options.stop_after == Some(self.step) {
                bar.abandon();
                return Ok(self.vals.clone());
            }
        }
        bar.finish_and_clear();
        if !folder::holds_captioner(&self.run.model_dir()) {
            self.save_policy(&self.run.model_dir())?;
        }
        self.run.write_eval(&self.vals)?;
        Ok(self.vals.clone())
    }
}

/// What the content reward and the repetition penalty may read of each example.
fn pictures(examples: &[CaptionExample]) -> Vec<Picture<'_>> {
    examples
        .iter()
        .map(|e| Picture {
            references: &e.captions,
            scene: e.scene.as_ref(),
            image: &e.image,
        })
        .collect()
}

/// The starting policy (and so the reference): each target style's prefix blended with the
/// factual one.
fn blend_prefixes(model: Captioner, alpha: f32, targets: &[Target]) -> Result<Captioner> {
    let factual = model.config.style_index(FACTUAL)?;
    let targets: Vec<usize> = targets.iter().map(|t| t.captioner).collect();
    Ok(blend_values(model, alpha, factual, &targets))
}

fn blend_values(model: Captioner, alpha: f32, factual: usize, targets: &[usize]) -> Captioner {
    let values = read_named(&model, "", &mut Values);
    let Some((_, Some(prefix))) = values.into_iter().find(|(n, _)| n == "style_prefix") else {
        return model;
    };
    let per = prefix.values.len() / prefix.shape[0];
    let mut v = prefix.values.clone();
    for &s in targets {
        for j in 0..per {
            v[s * per + j] = alpha * prefix.values[s * per + j]
                + (1.0 - alpha) * prefix.values[factual * per + j];
        }
    }
    replace_named(model, "", |name, shape| {
        (name == "style_prefix").then(|| StoredTensor {
            shape: shape.to_vec(),
            values: v.clone(),
        })
    })
}
