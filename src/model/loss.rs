//! Cross-entropy, composed of burn's differentiable ops.
//!
//! [`cross_entropy`] is the teacher-forced loss of captions. Training uses its fused form,
//! [`crate::model::lm_head::cross_entropy`], which never materialises the logits on the
//! autodiff tape; this composed form is its reference in the tests.
//! [`classification_cross_entropy`] is the critic's loss over styles.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean cross-entropy of `logits` `[B, T, V]` predicting `targets` `[B, T]`, counting only
/// positions where `mask` `[B, T]` is 1. Targets are the inputs shifted by one (the caller
/// builds them), so position t predicts token t+1.
pub fn cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let picked = log_softmax(logits, 2)
        .gather(2, targets.reshape([b, t, 1]))
        .reshape([b, t]);
    let n = mask.clone().sum().clamp_min(1.0);
    (picked * mask).sum().neg() / n
}

/// Mean cross-entropy of class `logits` `[B, C]` against `labels` `[B]`.
pub fn classification_cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let b = logits.dims()[0];
    log_softmax(logits, 1)
        .gather(1, labels.reshape([b, 1]))
        .mean()
        .neg()
}
