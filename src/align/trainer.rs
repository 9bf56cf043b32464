//! `stylecap align`: the captioner as a policy. Each step samples K captions per image and
//! target style with the KV cache and no gradient, scores them (style, content, penalties, KL
//! to the frozen reference), and updates the policy from one batched teacher-forced pass over
//! the sampled tokens. Gradients never flow through sampling (what broke the seed system).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use image::RgbImage;
use serde::Serialize;

use super::advantage::{group_normalised, leave_one_out, self_critical, Algo, MovingBaseline};
use super::config::AlignConfig;
use super::kl::{kl_token, AdaptiveKl, KlEstimator};
use super::loss::{k3_loss, pg_loss, ppo_loss};
use super::reward::{Rewarder, RunningStats, Terms};
use crate::critic::Critic;
use crate::data::rng::Rng;
use crate::data::tokenizer::TextTokenizer;
use crate::data::world::{Lexicon, Scene, Split, World, WorldConfig};
use crate::eval::captioner::LoadedCaptioner;
use crate::model::captioner::EncodedImages;
use crate::model::generate::{sample_or_greedy, Strategy};
use crate::model::score;
use crate::model::weights::freeze_named;
use crate::model::{Captioner, DecodeOptions};
use crate::train::data::EpochOrder;
use crate::train::optim::{Accumulated, AdamW};
use crate::train::sft::FACTUAL;
use crate::train::step::{batch_loss, caption_batch, CaptionBatch};
use crate::util::{model_dir, progress_bar, write_json};

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
    pub tokens_per_s: f32,
    pub elapsed_s: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ValResult {
    pub step: usize,
    pub reward: f32,
    pub style_prob: f32,
    pub content: f32,
    pub samples: Vec<String>,
}

/// A rollout: sampled captions and everything the update needs.
struct Rollout {
    /// Encoder input for the policy pass (one row per image).
    pixels: Tensor<4>,
    /// The same on the plain device, for the reference.
    plain_pixels: Tensor<4>,
    /// Row → image index (each image repeated K times).
    image_of_row: Vec<usize>,
    styles: Vec<usize>,
    tokens: Vec<Vec<u32>>,
    /// Per-token log-probabilities when sampled (the policy before this update).
    old_logprobs: Vec<Vec<f32>>,
    texts: Vec<String>,
}

pub struct Aligner {
    pub config: AlignConfig,
    pub run: PathBuf,
    pub policy: Captioner,
    pub reference: Captioner,
    pub tokenizer: TextTokenizer,
    preprocess: crate::data::image::PreprocessorConfig,
    critic: Critic,
    critic_tokenizer: TextTokenizer,
    /// Target styles as captioner indices and critic indices.
    styles: Vec<(String, usize, usize)>,
    world: World,
    order: EpochOrder,
    ptx_order: EpochOrder,
    optim: AdamW,
    kl: AdaptiveKl,
    baseline: MovingBaseline,
    stats: RunningStats,
    pub step: usize,
    device: Device,
    plain: Device,
}

impl Aligner {
    pub fn new(config: AlignConfig, run: &Path, device: &Device) -> Result<Self> {
        if run.join("config.json").exists() {
            bail!(
                "{} already holds a run; choose another --out",
                run.display()
            );
        }
        device.seed(config.seed);
        let plain = device.clone();
        let ad = device.clone().autodiff();
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
        let styles = names
            .iter()
            .map(|s| {
                Ok((
                    s.clone(),
                    base.model.config.style_index(s)?,
                    critic.style_index(s)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if config.samples < 2 && matches!(config.algo, Algo::Rloo | Algo::Grpo | Algo::Ppo) {
            bail!("{} needs at least 2 samples per image", config.algo.name());
        }
        let mut base = base;
        if config.prefix_blend != 1.0 {
            base.model = blend_prefixes(base.model, config.prefix_blend, &styles)?;
        }
        let policy = base.model.clone().to_device(&ad).train();
        let policy = if config.train_encoder {
            policy
        } else {
            freeze_named(policy, "", |n| n.starts_with("encoder."))
        };
        std::fs::create_dir_all(run)?;
        write_json(&run.join("config.json"), &config)?;
        let world = World::new(WorldConfig {
            seed: config.world_seed,
            image_size: base.model.config.encoder.image_size() as u32,
            ..WorldConfig::default()
        });
        Ok(Aligner {
            order: EpochOrder::new(config.seed, 31, config.world_train),
            ptx_order: EpochOrder::new(config.seed, 37, config.world_train),
            optim: AdamW::new(config.optimizer.clone()),
            kl: AdaptiveKl {
                beta: config.beta,
                target: config.target_kl.unwrap_or(1.0),
                horizon: config.kl_horizon,
            },
            baseline: MovingBaseline::default(),
            stats: RunningStats::default(),
            reference: base.model,
            tokenizer: base.tokenizer,
            preprocess: base.preprocess,
            policy,
            critic,
            critic_tokenizer,
            styles,
            world,
            config,
            run: run.to_path_buf(),
            step: 0,
            device: ad,
            plain,
        })
    }

    fn rewarder(&self) -> Rewarder<'_> {
        Rewarder {
            config: &self.config,
            critic: &self.critic,
            tokenizer: &self.critic_tokenizer,
            lexicon: Lexicon::new(),
            device: self.plain.clone(),
        }
    }

    fn decode_texts(&self, tokens: &[Vec<u32>]) -> Result<Vec<String>> {
        tokens
            .iter()
            .map(|t| Ok(self.tokenizer.decode(t)?.trim().to_string()))
            .collect()
    }

    /// Samples `k` captions per image with the current policy (no gradient).
    fn rollout(
        &self,
        images: &[RgbImage],
        styles: &[usize],
        k: usize,
        strategy: Strategy,
        seed: u64,
    ) -> Result<Rollout> {
        let policy = self.policy.clone().valid();
        let pixels = self.preprocess.batch(images, &self.plain)?;
        let encoded = policy.encode(pixels.clone());
        let image_of_row: Vec<usize> = (0..images.len())
            .flat_map(|i| std::iter::repeat_n(i, k))
            .collect();
        let encoded = encoded.select(index(&image_of_row, &self.plain));
        let row_styles: Vec<usize> = image_of_row.iter().map(|&i| styles[i]).collect();
        let opts = DecodeOptions {
            strategy,
            max_new_tokens: self.config.max_new_tokens,
            seed,
        };
        let gens = sample_or_greedy(
            &policy,
            &encoded,
            Some(&row_styles),
            row_styles.len(),
            &opts,
        );
        let tokens: Vec<Vec<u32>> = gens.iter().map(|g| g.tokens.clone()).collect();
        Ok(Rollout {
            pixels: pixels.clone().to_device(&self.device),
            plain_pixels: pixels,
            image_of_row,
            styles: row_styles,
            texts: self.decode_texts(&tokens)?,
            old_logprobs: gens.into_iter().map(|g| g.logprobs).collect(),
            tokens,
        })
    }

    /// Teacher-forced log-probabilities of the sampled tokens `[N, T]` under `model` (with
    /// gradient when `differentiable`; the model must then live on the autodiff device), the
    /// token mask, and the mean entropy.
    fn token_logprobs(
        model: &Captioner,
        encoded: &EncodedImages,
        rows: &[usize],
        rollout: &Rollout,
        differentiable: bool,
        device: &Device,
    ) -> (Tensor<2>, Tensor<2>, f32) {
        let styles: Vec<usize> = rows.iter().map(|&r| rollout.styles[r]).collect();
        let enc = encoded.select(index(
            &rows
                .iter()
                .map(|&r| rollout.image_of_row[r])
                .collect::<Vec<_>>(),
            device,
        ));
        let tokens: Vec<&[u32]> = rows.iter().map(|&r| rollout.tokens[r].as_slice()).collect();
        let (picked, mask, entropy) = score::token_logprobs(
            model,
            &enc,
            Some(index(&styles, device)),
            &tokens,
            differentiable,
            device,
        );
        let entropy = ((entropy * mask.clone()).sum() / mask.clone().sum().clamp_min(1.0))
            .into_scalar::<f32>();
        (picked, mask, entropy)
    }

    /// One alignment step.
    pub fn train_step(&mut self, bad_in_a_row: &mut usize) -> Result<StepLog> {
        let c = self.config.clone();
        let started = Instant::now();
        let (b, k) = (c.images_per_step, c.samples.max(1));
        let ids: Vec<usize> = (0..b).map(|i| self.order.at(self.step * b + i)).collect();
        let examples: Vec<_> = ids
            .iter()
            .map(|&i| self.world.example(Split::Train, i as u64))
            .collect();
        let images: Vec<RgbImage> = examples.iter().map(|e| e.image.clone()).collect();
        let scenes: Vec<&Scene> = examples.iter().map(|e| &e.scene).collect();
        let targets: Vec<&(String, usize, usize)> = (0..b)
            .map(|i| &self.styles[(self.step * b + i) % self.styles.len()])
            .collect();
        let cap_styles: Vec<usize> = targets.iter().map(|t| t.1).collect();
        let sample = Strategy::Sample {
            temperature: c.temperature,
            top_k: 0,
            top_p: c.top_p,
        };
        let seed = c
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(self.step as u64);
        let rollout = self.rollout(&images, &cap_styles, k, sample, seed)?;
        let n = rollout.tokens.len();
        let critic_targets: Vec<usize> =
            rollout.image_of_row.iter().map(|&i| targets[i].2).collect();
        let row_scenes: Vec<&Scene> = rollout.image_of_row.iter().map(|&i| scenes[i]).collect();
        let terms: Vec<Terms> =
            self.rewarder()
                .terms(&rollout.texts, &critic_targets, &row_scenes)?;

        // KL to the reference from the sampled tokens.
        let reference_encoded = self.reference.encode(rollout.plain_pixels.clone());
        let all: Vec<usize> = (0..n).collect();
        let (ref_lp, _, _) = Self::token_logprobs(
            &self.reference,
            &reference_encoded,
            &all,
            &rollout,
            false,
            &self.plain,
        );
        let refs: Vec<&[u32]> = rollout.tokens.iter().map(Vec::as_slice).collect();
        let ref_lp = score::to_rows(ref_lp, &refs);
        let kl_of = |est: KlEstimator, lp: &[f32], rp: &[f32]| -> f32 {
            lp.iter().zip(rp).map(|(&a, &r)| kl_token(est, a, r)).sum()
        };
        let kls: Vec<f32> = rollout
            .old_logprobs
            .iter()
            .zip(&ref_lp)
            .map(|(lp, rp)| kl_of(c.kl_estimator, lp, rp))
            .collect();
        let beta = self.kl.beta;
        let mut rewards: Vec<f32> = terms
            .iter()
            .zip(&kls)
            .map(|(t, &kl)| {
                let r = t.total(&c);
                if c.algo.kl_in_reward() {
                    r - beta as f32 * kl
                } else {
                    r
                }
            })
            .collect();
        if c.normalize_rewards {
            self.stats.push_all(&rewards);
            let (m, s) = (self.stats.mean as f32, self.stats.std() as f32);
            rewards.iter_mut().for_each(|r| *r = (*r - m) / s);
        }
        rewards
            .iter_mut()
            .for_each(|r| *r = r.clamp(-c.reward_clip, c.reward_clip));
        let advantages = match c.algo {
            Algo::Reinforce => rewards.clone(),
            Algo::ReinforceBaseline => self.baseline.advantages(&rewards, c.baseline_decay),
            Algo::Rloo | Algo::Ppo => leave_one_out(&rewards, k),
            Algo::Grpo => group_normalised(&rewards, k),
            Algo::Scst => {
                let greedy = self.rollout(&images, &cap_styles, 1, Strategy::Greedy, seed)?;
                let gt: Vec<usize> = (0..b).map(|i| targets[i].2).collect();
                let gterms = self.rewarder().terms(&greedy.texts, &gt, &scenes)?;
                let base: Vec<f32> = gterms.iter().map(|t| t.total(&c)).collect();
                self_critical(&rewards, &base, k)
            }
        };

        let ptx = self.ptx_batch()?;

        // The update: one pass (REINFORCE family, GRPO) or PPO epochs over minibatches.
        let (epochs, minibatches) = if c.algo == Algo::Ppo {
            (c.ppo_epochs.max(1), c.ppo_minibatches.max(1))
        } else {
            (1, 1)
        };
        let (mut loss_sum, mut entropy, mut clipped, mut counted, mut approx_kl) =
            (0f32, 0f32, 0f32, 0f32, 0f32);
        let mut skipped = 0;
        let (mut ptx_sum, mut ptx_count) = (0f32, 0f32);
        let mut order: Vec<usize> = (0..n).collect();
        for epoch in 0..epochs {
            if epoch > 0 {
                Rng::for_item(c.seed, 33 + epoch as u64, self.step as u64).shuffle(&mut order);
            }
            for mb in order.chunks(n.div_ceil(minibatches)) {
                let rows = mb.to_vec();
                // Encoded afresh each time: every update changes the cross-attention keys.
                let encoded = self.policy.encode(rollout.pixels.clone());
                let (logp, mask, ent) = Self::token_logprobs(
                    &self.policy,
                    &encoded,
                    &rows,
                    &rollout,
                    true,
                    &self.device,
                );
                entropy = ent;
                let [m, t] = logp.dims();
                let adv: Vec<f32> = rows.iter().map(|&r| advantages[r]).collect();
                let adv = Tensor::<2>::from_data(TensorData::new(adv, [m, 1]), &self.device);
                let tokens = mask.clone().sum().clamp_min(1.0).detach();
                let loss = if c.algo == Algo::Ppo {
                    let mut old = vec![0f32; m * t];
                    for (i, &r) in rows.iter().enumerate() {
                        for (j, &v) in rollout.old_logprobs[r].iter().enumerate() {
                            old[i * t + j] = v;
                        }
                    }
                    let old = Tensor::<2>::from_data(TensorData::new(old, [m, t]), &self.device);
                    let log_ratio = (logp.clone() - old.clone()) * mask.clone();
                    let ratio = log_ratio.clone().detach().exp();
                    let max_ratio = ratio.clone().max().into_scalar::<f32>();
                    // A NaN ratio is skipped too.
                    if max_ratio.is_nan() || max_ratio > c.max_ratio {
                        skipped += 1;
                        continue;
                    }
                    let outside =
                        (ratio - 1.0).abs().greater_elem(c.ppo_clip).float() * mask.clone();
                    clipped += (outside.sum() / tokens.clone()).into_scalar::<f32>();
                    approx_kl += ((log_ratio.detach().neg() * mask.clone()).sum() / tokens.clone())
                        .into_scalar::<f32>();
                    counted += 1.0;
                    ppo_loss(logp, old, mask, adv, c.ppo_clip)
                } else if c.algo == Algo::Grpo {
                    // KL as a loss term (k3, differentiable in the policy's log-probs).
                    let mut rp = vec![0f32; m * t];
                    for (i, &r) in rows.iter().enumerate() {
                        for (j, &v) in ref_lp[r].iter().enumerate() {
                            rp[i * t + j] = v;
                        }
                    }
                    let rp = Tensor::<2>::from_data(TensorData::new(rp, [m, t]), &self.device);
                    pg_loss(logp.clone(), mask.clone(), adv) + k3_loss(logp, rp, mask) * beta
                } else {
                    pg_loss(logp, mask, adv)
                };
                let loss = match &ptx {
                    Some(batch) => {
                        let ce = batch_loss(&self.policy, batch);
                        ptx_sum += ce.clone().into_scalar::<f32>();
                        ptx_count += 1.0;
                        loss + ce * c.ptx_coef
                    }
                    None => loss,
                };
                let value = loss.clone().into_scalar::<f32>();
                let grads = loss.backward();
                let mut acc = Accumulated::default();
                acc.add(&self.policy, &grads, 1.0);
                let norm = acc.global_norm();
                if !value.is_finite() || !norm.is_finite() {
                    skipped += 1;
                    *bad_in_a_row += 1;
                    if *bad_in_a_row >= c.max_bad_batches {
                        bail!(
                            "step {}: {} batches in a row had a non-finite loss or gradient; \
                             stopped (lower --lr, or raise --beta)",
                            self.step + 1,
                            bad_in_a_row
                        );
                    }
                    continue;
                }
                *bad_in_a_row = 0;
                loss_sum += value;
                let lr = c.lr;
                self.policy = self.optim.update(self.policy.clone(), acc, |_| lr).0;
            }
        }
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
            entropy,
            loss: loss_sum / (epochs * minibatches) as f32,
            ptx_loss: if ptx_count > 0.0 {
                ptx_sum / ptx_count
            } else {
                0.0
            },
            clip_fraction: if counted > 0.0 {
                clipped / counted
            } else {
                0.0
            },
            approx_kl: if counted > 0.0 {
                approx_kl / counted
            } else {
                0.0
            },
            skipped,
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
        let examples: Vec<_> = (0..c.ptx_images)
            .map(|i| {
                let id = self.ptx_order.at(self.step * c.ptx_images + i);
                self.world.example(Split::Train, id as u64)
            })
            .collect();
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
        let n = self.config.eval_images;
        let examples: Vec<_> = (0..n)
            .map(|i| self.world.example(Split::Val, i as u64))
            .collect();
        let images: Vec<RgbImage> = examples.iter().map(|e| e.image.clone()).collect();
        let styles: Vec<&(String, usize, usize)> = (0..n)
            .map(|i| &self.styles[i % self.styles.len()])
            .collect();
        let sample = Strategy::Sample {
            temperature: self.config.temperature,
            top_k: 0,
            top_p: self.config.top_p,
        };
        let r = self.rollout(
            &images,
            &styles.iter().map(|s| s.1).collect::<Vec<_>>(),
            1,
            sample,
            7,
        )?;
        let scenes: Vec<&Scene> = examples.iter().map(|e| &e.scene).collect();
        let terms = self.rewarder().terms(
            &r.texts,
            &styles.iter().map(|s| s.2).collect::<Vec<_>>(),
            &scenes,
        )?;
        let m = |f: &dyn Fn(&Terms) -> f32| terms.iter().map(f).sum::<f32>() / n.max(1) as f32;
        Ok(ValResult {
            step: self.step,
            reward: m(&|t| t.total(&self.config)),
            style_prob: m(&|t| t.style_prob),
            content: m(&|t| t.content),
            samples: r
                .texts
                .iter()
                .zip(&styles)
                .take(self.styles.len())
                .map(|(t, s)| format!("[{}] {t}", s.0))
                .collect(),
        })
    }

    fn save_policy(&self, dir: &Path) -> Result<()> {
        self.policy.clone().valid().save(dir)?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        write_json(&dir.join("preprocessor_config.json"), &self.preprocess)
    }

    /// Runs all steps; keeps the policy with the best validation reward as `model/`.
    pub fn run(&mut self, show_progress: bool) -> Result<Vec<ValResult>> {
        let c = self.config.clone();
        let bar = progress_bar(
            c.steps as u64,
            &format!("align {}", c.algo.name()),
            show_progress,
        );
        let path = self.run.join("metrics.jsonl");
        let mut metrics = std::fs::File::create(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let start = Instant::now();
        let mut vals = Vec::new();
        let mut best = f32::NEG_INFINITY;
        let mut bad = 0;
        let first = self.validate()?;
        writeln!(metrics, "{}", serde_json::json!({"validation": first}))?;
        vals.push(first);
        while self.step < c.steps {
            let mut log = self.train_step(&mut bad)?;
            log.elapsed_s = start.elapsed().as_secs_f64();
            writeln!(metrics, "{}", serde_json::to_string(&log)?)?;
            bar.inc(1);
            bar.set_message(format!(
                "reward {:.3} style {:.3} content {:.3} KL {:.2}",
                log.reward, log.style_prob, log.content, log.kl
            ));
            if self.step.is_multiple_of(c.eval_every) || self.step == c.steps {
                let v = self.validate()?;
                writeln!(metrics, "{}", serde_json::json!({"validation": v}))?;
                if v.reward > best {
                    best = v.reward;
                    self.save_policy(&self.run.join("model"))?;
                }
                bar.println(format!(
                    "step {}: validation reward {:.3} (style {:.3}, content {:.3}); {}",
                    v.step,
                    v.reward,
                    v.style_prob,
                    v.content,
                    v.samples.first().cloned().unwrap_or_default()
                ));
                vals.push(v);
            }
            if log.kl as f64 > c.kl_limit {
                bar.println(format!(
                    "step {}: mean KL {:.2} passed the limit {}; stopping",
                    self.step, log.kl, c.kl_limit
                ));
                break;
            }
        }
        bar.finish_and_clear();
        if !self.run.join("model").join("config.json").is_file() {
            self.save_policy(&self.run.join("model"))?;
        }
        write_json(&self.run.join("validation.json"), &vals)?;
        Ok(vals)
    }
}

/// The starting policy (and so the reference): each target style's prefix blended with the
/// factual one.
fn blend_prefixes(
    model: Captioner,
    alpha: f32,
    styles: &[(String, usize, usize)],
) -> Result<Captioner> {
    let factual = model.config.style_index(FACTUAL)?;
    let targets: Vec<usize> = styles.iter().map(|s| s.1).collect();
    Ok(blend_values(model, alpha, factual, &targets))
}

fn blend_values(model: Captioner, alpha: f32, factual: usize, targets: &[usize]) -> Captioner {
    let values = crate::model::weights::read_named(&model, "", &mut crate::model::weights::Values);
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
    crate::model::weights::replace_named(model, "", |name, shape| {
        (name == "style_prefix").then(|| crate::model::weights::StoredTensor {
            shape: shape.to_vec(),
            values: v.clone(),
        })
    })
}

fn index(ids: &[usize], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(
        TensorData::new(
            ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
            [ids.len()],
        ),
        device,
    )
}
