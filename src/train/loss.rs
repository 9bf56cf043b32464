//! Teacher-forced cross-entropy for captions.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::IndexingUpdateOp;

/// Mean cross-entropy of `logits` `[B, T, V]` predicting `targets` `[B, T]`, counting only
/// positions where `mask` `[B, T]` is 1. Targets are the inputs shifted by one (the caller
/// builds them), so position t predicts token t+1.
///
/// The value is computed off the autodiff tape; the gradient comes from the surrogate
/// `sum(logits · g)` with the closed form `g = mask · (softmax − onehot) / n`. Same value, same
/// gradient as differentiating log_softmax + gather, without taping the vocabulary-sized
/// intermediates (the largest tensors of a training step).
pub fn caption_loss(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let targets = targets.reshape([b, t, 1]);
    let logp = log_softmax(logits.clone().detach(), 2);
    let n = mask.clone().sum().clamp_min(1.0).detach();
    let picked = logp.clone().gather(2, targets.clone()).reshape([b, t]);
    let value = (picked * mask.clone()).sum().neg() / n.clone();
    let weight = mask.reshape([b, t, 1]) / n.reshape([1, 1, 1]);
    let g = (logp.exp() * weight.clone()).scatter(2, targets, weight.neg(), IndexingUpdateOp::Add);
    let surrogate = (logits * g.detach()).sum();
    surrogate.clone() - surrogate.detach() + value.detach()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Same value and same gradient as differentiating log_softmax + gather directly.
    #[test]
    fn surrogate_equals_plain_cross_entropy() {
        let device = Device::flex().autodiff();
        let raw = Tensor::<3>::random([2, 3, 7], Distribution::Normal(0.0, 2.0), &device);
        let targets = Tensor::<2, Int>::from_data(
            TensorData::new(vec![1i64, 6, 0, 3, 3, 2], [2, 3]),
            &device,
        );
        let mask = Tensor::<2>::from_data(
            TensorData::new(vec![1f32, 1., 0., 1., 1., 1.], [2, 3]),
            &device,
        );
        let a = raw.clone().detach().require_grad();
        let fast = caption_loss(a.clone(), targets.clone(), mask.clone());
        let ga = a.grad(&fast.backward()).unwrap();
        let b = raw.detach().require_grad();
        let picked = log_softmax(b.clone(), 2)
            .gather(2, targets.reshape([2, 3, 1]))
            .reshape([2, 3]);
        let plain = (picked * mask.clone()).sum().neg() / mask.sum();
        let gb = b.grad(&plain.backward()).unwrap();
        let (fv, pv) = (fast.into_scalar::<f32>(), plain.into_scalar::<f32>());
        assert!((fv - pv).abs() < 1e-6, "{fv} vs {pv}");
        let diff = (ga - gb).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "gradients differ by {diff}");
    }
}
