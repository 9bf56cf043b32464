//! The policy-gradient losses, over teacher-forced log-probabilities of sampled tokens
//! `logp` `[N, T]` (zero where `mask` is 0) and one advantage per caption `adv` `[N, 1]`.

use burn::prelude::*;

/// REINFORCE-family loss: −Σ A·log π(token) over the batch's tokens, divided by their count.
/// Its gradient is the policy-gradient estimate ∇ E[A] (advantages held constant).
pub fn pg_loss(logp: Tensor<2>, mask: Tensor<2>, adv: Tensor<2>) -> Tensor<1> {
    let tokens = mask.sum().clamp_min(1.0).detach();
    (logp * adv).sum().neg() / tokens
}

/// PPO's clipped surrogate per token: −min(ρA, clip(ρ, 1−ε, 1+ε)A), ρ = π/π_old, averaged
/// over tokens. Outside the trust region on the side the advantage pushes toward, the
/// gradient is zero.
pub fn ppo_loss(
    logp: Tensor<2>,
    old: Tensor<2>,
    mask: Tensor<2>,
    adv: Tensor<2>,
    clip: f32,
) -> Tensor<1> {
    let tokens = mask.clone().sum().clamp_min(1.0).detach();
    let ratio = ((logp - old) * mask.clone()).exp();
    let unclipped = ratio.clone() * adv.clone();
    let clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * adv;
    (unclipped.min_pair(clipped) * mask).sum().neg() / tokens
}

/// GRPO's KL term: k3 = (r − 1) − log r, r = π_ref/π, per token, averaged over tokens;
/// differentiable in the policy's log-probabilities.
pub fn k3_loss(logp: Tensor<2>, ref_logp: Tensor<2>, mask: Tensor<2>) -> Tensor<1> {
    let tokens = mask.clone().sum().clamp_min(1.0).detach();
    let log_r = (ref_logp - logp) * mask.clone();
    ((log_r.clone().exp() - 1.0 - log_r) * mask).sum() / tokens
}
