//! The update, apart from generating and scoring: rewards with the KL penalty, advantages
//! (each algorithm's baseline), and the loss of each algorithm minimised with the trainer's
//! AdamW over the sampled tokens, in one pass (REINFORCE family, GRPO) or PPO's epochs of
//! minibatches.

use anyhow::{bail, Result};
use burn::prelude::*;
use rayon::prelude::*;

use super::advantage::{group_normalised, leave_one_out, self_critical, Algo, MovingBaseline};
use super::config::AlignConfig;
use super::loss::{k3_loss, pg_loss, ppo_loss};
use super::reward::RunningStats;
use super::rollout::{shards_of, token_logprobs, Rollout};
use crate::model::Captioner;
use crate::optim::grads::{native_gradients, NamedGrads};
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
            let Some(b) = batch_gradients(&policy, u, mb, device, optim.loss_factor()) else {
                log.skipped += 1;
                continue;
            };
            log.entropy = b.entropy;
            if let Some((clip, kl)) = b.ppo {
                clipped += clip;
                approx_kl += kl;
                counted += 1.0;
            }
            if let Some(ce) = b.ptx {
                ptx_sum += ce;
                ptx_count += 1.0;
            }
            let (value, acc) = (b.value, b.acc);
            let applied = value.is_finite() && {
                let lr = c.lr;
                let (updated, stats) = optim.update(policy, acc, |_| lr);
                policy = updated;
                // With f16's loss scaling an overflow halves the scale: not a bad batch.
                stats.applied || optim.loss_scale.is_some()
            };
            if !applied {
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
        }
    }
    let mean = |sum: f32, count: f32| if count > 0.0 { sum / count } else { 0.0 };
    log.loss = loss_sum / (epochs * minibatches) as f32;
    log.ptx_loss = mean(ptx_sum, ptx_count);
    log.clip_fraction = mean(clipped, counted);
    log.approx_kl = mean(approx_kl, counted);
    Ok((policy, log))
}

/// The gradient of one update batch and what the log reads from it.
pub struct BatchGradients {
    /// The loss (the anchor's term included) and its gradient.
    pub value: f32,
    pub acc: Accumulated,
    /// The mean entropy of the batch's tokens.
    pub entropy: f32,
    /// PPO: the share of tokens clipped and the KL estimate.
    pub ppo: Option<(f32, f32)>,
    /// The supervised anchor's cross-entropy.
    pub ptx: Option<f32>,
}

/// The loss of the batch `rows` and its gradient, from `data_parallel` shards whose passes run
/// in parallel; None when PPO's importance ratio is out of bounds (the batch is skipped). The
/// backward pass starts from the loss times `loss_scale` (f16's loss scaling; 1 otherwise) and
/// the gradient is divided by it again.
pub fn batch_gradients(
    policy: &Captioner,
    u: &Update,
    rows: &[usize],
    device: &Device,
    loss_scale: f32,
) -> Option<BatchGradients> {
    let c = u.config;
    let passes: Vec<ShardPass> = shards_of(u.rollout, rows, c.data_parallel)
        .par_iter()
        .enumerate()
        .map(|(s, rows)| shard_pass(policy, u, rows, s == 0, device))
        .collect();
    let tokens: f32 = passes.iter().map(|p| p.tokens).sum::<f32>().max(1.0);
    let share = |p: &ShardPass| p.tokens / tokens;
    let entropy = passes.iter().map(|p| p.entropy * share(p)).sum();
    let ppo = (c.algo == Algo::Ppo).then(|| {
        (
            passes.iter().map(|p| p.clipped * share(p)).sum::<f32>(),
            passes.iter().map(|p| p.approx_kl * share(p)).sum::<f32>(),
        )
    });
    if ppo.is_some() {
        // A NaN ratio is skipped too.
        let max_ratio = passes.iter().map(|p| p.max_ratio).fold(0.0, f32::max);
        if passes.iter().any(|p| p.max_ratio.is_nan()) || max_ratio > c.max_ratio {
            return None;
        }
    }
    // Each shard's loss is its tokens' mean: weighted by its share of the batch's tokens, the
    // shards' gradients add up to the batch's. The shards are summed in order, so the result
    // does not depend on which finishes first.
    let results: Vec<(f32, Option<f32>, NamedGrads)> = passes
        .into_par_iter()
        .map(|p| {
            let mut loss = p.loss * (p.tokens / tokens);
            let ptx = p.ptx.map(|ce| {
                let value = ce.clone().into_scalar::<f32>();
                loss = loss.clone() + ce * c.ptx_coef;
                value
            });
            let value = loss.clone().into_scalar::<f32>();
            let named = native_gradients(&p.local, loss.mul_scalar(loss_scale).backward());
            (value, ptx, named)
        })
        .collect();
    let mut acc = Accumulated::default();
    let (mut value, mut ptx) = (0f32, None);
    for (v, ce, named) in results {
        value += v;
        ptx = ptx.or(ce);
        acc.add_named(named, 1.0 / loss_scale);
    }
    Some(BatchGradients {
        value,
        acc,
        entropy,
        ppo,
        ptx,
    })
}

/// One shard's forward pass of an update batch, on its own fork of the policy (burn's
/// autodiff graph cannot run two backward passes through shared parameter nodes at once).
struct ShardPass {
    local: Captioner,
    /// The algorithm's loss, a mean over this shard's tokens.
    loss: Tensor<1>,
    tokens: f32,
    entropy: f32,
    /// PPO: the largest importance ratio, the share of tokens clipped, and the KL estimate.
    max_ratio: f32,
    clipped: f32,
    approx_kl: f32,
    /// The supervised anchor's cross-entropy (on the first shard).
    ptx: Option<Tensor<1>>,
}

fn shard_pass(
    policy: &Captioner,
    u: &Update,
    rows: &[usize],
    first: bool,
    device: &Device,
) -> ShardPass {
    let c = u.config;
    let local = policy.clone().fork(device);
    // Encoded afresh for each batch: every update changes the cross-attention keys.
    let (logp, mask, entropy) = token_logprobs(&local, rows, u.rollout, true, device);
    let [m, _] = logp.dims();
    let tokens = mask.clone().sum().into_scalar::<f32>();
    let adv: Vec<f32> = rows.iter().map(|&r| u.advantages[r]).collect();
    let adv = Tensor::<2>::from_data(TensorData::new(adv, [m, 1]), device);
    let (mut max_ratio, mut clipped, mut approx_kl) = (0.0, 0.0, 0.0);
    let loss = match c.algo {
        Algo::Ppo => {
            let old = padded(&u.rollout.old_logprobs, rows, logp.dims(), device);
            let count = mask.clone().sum().clamp_min(1.0).detach();
            let log_ratio = (logp.clone() - old.clone()) * mask.clone();
            let ratio = log_ratio.clone().detach().exp();
            max_ratio = ratio.clone().max().into_scalar::<f32>();
            let outside = (ratio - 1.0).abs().greater_elem(c.ppo_clip).float() * mask.clone();
            clipped = (outside.sum() / count.clone()).into_scalar::<f32>();
            approx_kl =
                ((log_ratio.detach().neg() * mask.clone()).sum() / count).into_scalar::<f32>();
            ppo_loss(logp, old, mask, adv, c.ppo_clip)
        }
        // KL as a loss term (k3, differentiable in the policy's log-probs).
        Algo::Grpo => {
            let rp = padded(u.ref_logprobs, rows, logp.dims(), device);
            pg_loss(logp.clone(), mask.clone(), adv) + k3_loss(logp, rp, mask) * u.beta
        }
        _ => pg_loss(logp, mask, adv),
    };
    let ptx = u.anchor.filter(|_| first).map(|b| batch_loss(&local, b));
    ShardPass {
        local,
        loss,
        tokens,
        entropy,
        max_ratio,
        clipped,
        approx_kl,
        ptx,
    }
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
