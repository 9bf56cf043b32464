//! Teacher-forced cross-entropy for captions.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean cross-entropy of `logits` `[B, T, V]` predicting `targets` `[B, T]`, counting only
/// positions where `mask` `[B, T]` is 1. Targets are the inputs shifted by one (the caller
/// builds them), so position t predicts token t+1.
pub fn caption_loss(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let logp = log_softmax(logits, 2);
    let picked = logp.gather(2, targets.reshape([b, t, 1])).reshape([b, t]);
    let total = mask.clone().sum();
    (picked * mask).sum().neg() / total.clamp_min(1.0)
}
