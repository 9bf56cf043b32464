//! The update, apart from generating and scoring: rewards with the KL penalty, advantages
//! (each algorithm's baseline), and the loss of each algorithm minimised with the trainer's
//! AdamW over the sampled tokens, in one pass (REINFORCE family, GRPO) or PPO's epochs of
//! minibatches.

use anyhow::{bail, Result};
use burn::prelude::*;

use super::advantage::{group_normalised, leave_one_out, self_critical, Algo, MovingBaseline};
use super::config::AlignConfig;
use super::loss::{k3_loss, pg_loss, ppo_loss};
use super::reward::RunningStats;
use super::rollout::{encode_rollout, token_logprobs, Rollout};
use crate::model::Captioner;
use crate::optim::{Accumulated, AdamW};
use crate::rng::{streams, Rng};
use crate::sft::step::{batch_loss, CaptionBatch};

/// Each caption's reward: its total score, less β·KL when the algorithm puts the KL in the
/// reward, standardised by running statistics when configured, and clipped.
pub fn rewards(
    c: &AlignConfig,
    scores: &[f32],
    kls: &[f32],
    beta: f64,
    stats: &mut RunningStats,
) -> Vec<f32> {
    let mut rewards: Vec<f32> = scores
        .iter()
        .zip(kls)
        .map(|(&r, &kl)| {
            if c.algo.kl_in_reward() {
                r - beta as f32 * kl
            } else {
                r
            }
        })
        .collect();
    if c.normalize_rewards {
        stats.push_all(&rewards);
        let (m, s) = (stats.mean as f32, stats.std() as f32);
        rewards.iter_mut().for_each(|r| *r = (*r - m) / s);
    }
    rewards
        .iter_mut()
        .for_each(|r| *r = r.clamp(-c.reward_clip, c.reward_clip));
    rewards
}

/// Each caption's advantage under `algo`, for rewards of groups of `k` samples. SCST's
/// baseline is the reward of each group's greedy caption (`greedy`, one per group).
pub fn advantages(
    c: &AlignConfig,
    rewards: &[f32],
    baseline: &mut MovingBaseline,
    greedy: Option<&[f32]>,
) -> Vec<f32> {
    let k = c.samples.max(1);
    match c.algo {
        Algo::Reinforce => rewards.to_vec(),
        Algo::ReinforceBaseline => baseline.advantages(rewards, c.baseline_decay),
        Algo::Rloo | Algo::Ppo => leave_one_out(rewards, k),
        Algo::Grpo => group_normalised(rewards, k),
        Algo::Scst => self_critical(
            rewards,
            greedy.expect("SCST needs the greedy captions' rewards"),
            k,
        ),
    }
}

/// What one update measured.
#[derive(Clone, Debug, Default)]
pub struct UpdateLog {
    /// Mean loss over the minibatches.
    pub loss: f32,
    /// Mean entropy of the policy over the last minibatch's tokens.
    pub entropy: f32,
    /// The supervised anchor's mean cross-entropy (0 when off).
    pub ptx_loss: f32,
    /// PPO: share of tokens outside the clip range, and the approximate KL to the sampling
    /// policy, averaged over the minibatches.
    pub clip_fraction: f32,
    pub approx_kl: f32,
    /// Minibatches skipped (PPO ratio past `max_ratio`, or a non-finite loss or gradient).
    pub skipped: usize,
}

/// The inputs of one update.
pub struct Update<'a> {
    pub config: &'a AlignConfig,
    pub rollout: &'a Rollout,
    pub advantages: &'a [f32],
    /// The reference's per-token log-probabilities (GRPO's KL term).
    pub ref_logprobs: &'a [Vec<f32>],
    /// The supervised anchor's batch, when on.
    pub anchor: Option<&'a CaptionBatch>,
    pub beta: f64,
    /// The alignment step (seeds PPO's minibatch shuffle).
    pub step: usize,
}

/// Minimises the algorithm's loss over the rollout: one pass, or PPO's epochs over shuffled
/// minibatches. `bad_in_a_row` counts consecutive non-finite minibatches across steps; the
/// run stops at `max_bad_batches`.
pub fn update_policy(
    mut policy: Captioner,
    optim: &mut AdamW,
    u: &Update,
    bad_in_a_row: &mut usize,
    device: &Device,
) -> Result<(Captioner, UpdateLog)> {
    let c = u.config;
    let n = u.rollout.len();
    let (epochs, minibatches) = if c.algo == Algo::Ppo {
        (c.ppo_epochs.max(1), c.ppo_minibatches.max(1))
    } else {
        (1, 1)
    };
    let mut log = UpdateLog::default();
    let (mut loss_sum, mut clipped, mut counted, mut approx_kl) = (0f32, 0f32, 0f32, 0f32);
    let (mut ptx_sum, mut ptx_count) = (0f32, 0f32);
    let mut order: Vec<usize> = (0..n).collect();
    for epoch in 0..epochs {
        if epoch > 0 {
            let item = (u.step * epochs + epoch) as u64;
            Rng::for_item(c.seed, streams::ALIGN_PPO_SHUFFLE, item).shuffle(&mut order);
        }
        for mb in order.chunks(n.div_ceil(minibatches)) {
            let rows = mb.to_vec();
            // Encoded afresh each time: every update changes the cross-attention keys.
            let encoded = encode_rollout(&policy, u.rollout, device);
            let (logp, mask, ent) =
                token_logprobs(&policy, &encoded, &rows, u.rollout, true, device);
            log.entropy = ent;
            let [m, _] = logp.dims();
            let adv: Vec<f32> = rows.iter().map(|&r| u.advantages[r]).collect();
            let adv = Tensor::<2>::from_data(TensorData::new(adv, [m, 1]), device);
            let loss = match c.algo {
                Algo::Ppo => {
                    let old = padded(&u.rollout.old_logprobs, &rows, logp.dims(), device);
                    let tokens = mask.clone().sum().clamp_min(1.0).detach();
                    let log_ratio = (logp.clone() - old.clone()) * mask.clone();
                    let ratio = log_ratio.clone().detach().exp();
                    let max_ratio = ratio.clone().max().into_scalar::<f32>();
                    // A NaN ratio is skipped too.
                    if max_ratio.is_nan() || max_ratio > c.max_ratio {
                        log.skipped += 1;
                        continue;
                    }
                    let outside =
                        (ratio - 1.0).abs().greater_elem(c.ppo_clip).float() * mask.clone();
                    clipped += (outside.sum() / tokens.clone()).into_scalar::<f32>();
                    approx_kl += ((log_ratio.detach().neg() * mask.clone()).sum() / tokens)
                        .into_scalar::<f32>();
                    counted += 1.0;
                    ppo_loss(logp, old, mask, adv, c.ppo_clip)
                }
                // KL as a loss term (k3, differentiable in the policy's log-probs).
                Algo::Grpo => {
                    let rp = padded(u.ref_logprobs, &rows, logp.dims(), device);
                    pg_loss(logp.clone(), mask.clone(), adv) + k3_loss(logp, rp, mask) * u.beta
                }
                _ => pg_loss(logp, mask, adv),
            };
            let loss = match u.anchor {
                Some(batch) => {
                    let ce = batch_loss(&policy, batch);
                    ptx_sum += ce.clone().into_scalar::<f32>();
                    ptx_count += 1.0;
                    loss + ce * c.ptx_coef
                }
                None => loss,
            };
            let value = loss.clone().into_scalar::<f32>();
            let grads = loss.backward();
            let mut acc = Accumulated::default();
            acc.add(&policy, grads, 1.0);
            let norm = acc.global_norm();
            if !value.is_finite() || !norm.is_finite() {
                log.skipped += 1;
                *bad_in_a_row += 1;
                if *bad_in_a_row >= c.max_bad_batches {
                    bail!(
                        "step {}: {} batches in a row had a non-finite loss or gradient; \
                         stopped (lower --lr, or raise --beta)",
                        u.step + 1,
                        bad_in_a_row
                    );
                }
                continue;
            }
            *bad_in_a_row = 0;
            loss_sum += value;
            let lr = c.lr;
            policy = optim.update(policy, acc, |_| lr).0;
        }
    }
    let mean = |sum: f32, count: f32| if count > 0.0 { sum / count } else { 0.0 };
    log.loss = loss_sum / (epochs * minibatches) as f32;
    log.ptx_loss = mean(ptx_sum, ptx_count);
    log.clip_fraction = mean(clipped, counted);
    log.approx_kl = mean(approx_kl, counted);
    Ok((policy, log))
}

/// Per-token values of `rows` as a zero-padded `[m, t]` tensor.
fn padded(values: &[Vec<f32>], rows: &[usize], [m, t]: [usize; 2], device: &Device) -> Tensor<2> {
    let mut out = vec![0f32; m * t];
    for (i, &r) in rows.iter().enumerate() {
        for (j, &v) in values[r].iter().enumerate() {
            out[i * t + j] = v;
        }
    }
    Tensor::<2>::from_data(TensorData::new(out, [m, t]), device)
}
