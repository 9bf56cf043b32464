//! The tied LM head fused with what training reads from it: the cross-entropy of the
//! supervised stage, and the log-probabilities of given tokens of the RL stage.
//!
//! The logits `[N, V]` (N = batch × positions, V = vocabulary) are the largest tensors of a
//! training step. Both ops compute them off the autodiff tape, reduce each row (in one host
//! pass on the CPU backend, with burn's ops on a GPU), and hand the gradient to `hidden`
//! `[N, D]` and `weight` `[V, D]` through closed forms: for any loss whose gradient with
//! respect to row n of the logits is `u_n · j_n`, the gradients are `(u ⊙ J) · weight` and
//! `(u ⊙ J)ᵀ · hidden`. That is three products of the vocabulary size, as in the composed
//! form, and none of the element-wise passes over `[N, V]` that `log_softmax`, `gather` and
//! their backward take. Each op is checked against the composed ops and against finite
//! differences.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::FloatDType;
use rayon::prelude::*;

use super::kernels;
use super::layers::{dense, on_cpu_backend};
use crate::tensor::{floats, indices};

/// Logits `hidden · weightᵀ` as a host buffer, rows of length V, computed off the tape.
fn logits_off_tape(hidden: &Tensor<2>, weight: &Tensor<2>) -> Vec<f32> {
    floats(
        hidden
            .clone()
            .detach()
            .matmul(weight.clone().detach().transpose()),
    )
}

/// Replaces a row of logits x by e = exp(x − max x) and returns (max x, Σ e, Σ e·x): one
/// exponential per element, the costliest part of the softmax. With [`kernels::exp`] and 8
/// running sums (a fixed order, whatever the CPU), the loop vectorizes: a libm call per
/// element made it several times slower.
fn exponentiate(row: &mut [f32]) -> (f32, f32, f32) {
    #[inline(always)]
    fn run(row: &mut [f32]) -> (f32, f32, f32) {
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (m, &x) in lanes.iter_mut().zip(c) {
                *m = if x > *m { x } else { *m };
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let (mut sum, mut dot) = ([0f32; 8], [0f32; 8]);
        let mut chunks = row.chunks_exact_mut(8);
        for c in &mut chunks {
            for (l, x) in c.iter_mut().enumerate() {
                let e = kernels::exp(*x - max);
                dot[l] += e * *x;
                sum[l] += e;
                *x = e;
            }
        }
        for (l, x) in chunks.into_remainder().iter_mut().enumerate() {
            let e = kernels::exp(*x - max);
            dot[l] += e * *x;
            sum[l] += e;
            *x = e;
        }
        (max, sum.iter().sum(), dot.iter().sum())
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn run_avx2(row: &mut [f32]) -> (f32, f32, f32) {
            run(row)
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { run_avx2(row) };
        }
    }
    run(row)
}

/// Where the rows of the logits are reduced: on the host, in one pass per row
/// ([`exponentiate`]), on the CPU backend; by burn's ops on the device elsewhere, where a host
/// copy of `[N, V]` would cost more than the ops it replaces (element-wise ops and row
/// reductions, which burn's fusion can join). Both give the same values and gradients
/// (checked in the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    Host,
    Device,
}

impl Rows {
    fn for_device(device: &Device) -> Self {
        if on_cpu_backend(device) {
            Self::Host
        } else {
            Self::Device
        }
    }

    /// `a · b`, a product of the gradient's closed form. On the device it goes through
    /// [`dense`], so that mixed precision computes it in half precision as it does the
    /// logits; the host path keeps its f32 logits and products.
    fn product(self, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Host => a.matmul(b),
            Self::Device => dense(a, b, None),
        }
    }
}

/// Row-wise softmax of `logits` `[N, V]` and each row's log-normaliser `log Σ exp` `[N, 1]`.
fn softmax_rows(logits: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let max = logits.clone().max_dim(1);
    let e = (logits - max.clone()).exp();
    let sum = e.clone().sum_dim(1);
    (e / sum.clone(), max + sum.log())
}

/// Zeros shaped as `like` `[N, V]` with `values[n]` at column `targets[n]` (`targets`,
/// `values` `[N, 1]`).
fn one_hot_rows(targets: Tensor<2, Int>, values: Tensor<2>, like: &Tensor<2>) -> Tensor<2> {
    like.zeros_like()
        .scatter(1, targets, values, burn::tensor::IndexingUpdateOp::Add)
}

/// Mean cross-entropy `cross_entropy(hidden · weightᵀ, targets, mask)` (see
/// [`crate::model::loss::cross_entropy`]) for decoder states `hidden` `[B, T, D]` and the tied
/// embedding matrix `weight` `[V, D]`: same value, same gradients.
///
/// Row n's gradient is `G_n = mask_n / count · (softmax_n − onehot(target_n))`, known in the
/// forward pass, so the logits are reduced to G off the tape and the gradients of `hidden` and
/// `weight` are attached with the surrogate `Σ hidden ⊙ (G·weight) + Σ weight ⊙ (Gᵀ·hidden)`,
/// whose value is subtracted again. The tape keeps two tensors of `hidden`'s and `weight`'s
/// sizes, and none of the vocabulary's.
pub fn cross_entropy(
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> Tensor<1> {
    cross_entropy_in(
        Rows::for_device(&hidden.device()),
        hidden,
        weight,
        targets,
        mask,
    )
}

fn cross_entropy_in(
    rows: Rows,
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> Tensor<1> {
    let [b, t, d] = hidden.dims();
    let h = hidden.reshape([b * t, d]);
    let (g, value) = match rows {
        Rows::Host => host_cross_entropy_rows(&h, &weight, targets, mask),
        Rows::Device => device_cross_entropy_rows(&h, &weight, targets, mask),
    };
    // `hidden` is an intermediate of the tape, not a leaf that reports `is_require_grad`, so
    // its term is always attached; a frozen weight's product is skipped.
    let grad_h = rows.product(g.clone(), weight.clone().detach());
    let mut surrogate = (h.clone() * grad_h).sum();
    if weight.is_require_grad() {
        let grad_w = rows.product(g.transpose(), h.detach());
        surrogate = surrogate + (weight * grad_w).sum();
    }
    surrogate.clone() - surrogate.detach() + value
}

/// G `[N, V]` and the loss, reduced on the host.
fn host_cross_entropy_rows(
    h: &Tensor<2>,
    weight: &Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> (Tensor<2>, Tensor<1>) {
    let device = h.device();
    let [n, _] = h.dims();
    let [v, _] = weight.dims();
    let mut g = logits_off_tape(h, weight);
    let targets = indices(targets);
    let mask = floats(mask);
    let count = mask.iter().sum::<f32>().max(1.0);

    let losses: Vec<f32> = g
        .par_chunks_mut(v)
        .zip(targets.par_iter().zip(mask.par_iter()))
        .map(|(row, (&target, &m))| {
            let w = m / count;
            if w == 0.0 {
                row.fill(0.0);
                return 0.0;
            }
            let logit = row[target];
            let (max, sum, _) = exponentiate(row);
            let scale = w / sum;
            row.iter_mut().for_each(|e| *e *= scale);
            row[target] -= w;
            w * (max + sum.ln() - logit)
        })
        .collect();
    // Each row's loss is already weighted by mask / count; summed in a fixed order, so the
    // value does not depend on the thread count.
    let value: f32 = losses.iter().sum();
    (
        Tensor::from_data(TensorData::new(g, [n, v]), &device),
        Tensor::from_data(TensorData::new(vec![value], [1]), &device),
    )
}

/// G `[N, V]` and the loss, reduced by burn's ops on the device (no host round trip). The
/// softmax is taken in f32 whatever the model's float type, as decoding's is, and the results
/// are handed back in that type.
fn device_cross_entropy_rows(
    h: &Tensor<2>,
    weight: &Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> (Tensor<2>, Tensor<1>) {
    let dtype = FloatDType::from(h.dtype());
    let [n, _] = h.dims();
    let logits = device_logits(h, weight);
    let targets = targets.reshape([n, 1]);
    let mask = mask.reshape([n, 1]).cast(FloatDType::F32);
    let w = mask.clone() / mask.sum().clamp_min(1.0).reshape([1, 1]);
    let (probs, log_z) = softmax_rows(logits.clone());
    let value = ((log_z - logits.gather(1, targets.clone())) * w.clone()).sum();
    let g = probs.clone() * w.clone() - one_hot_rows(targets, w, &probs);
    (g.cast(dtype), value.cast(dtype))
}

/// The logits `h · weightᵀ` off the tape, in f32 (the product itself through [`dense`]).
fn device_logits(h: &Tensor<2>, weight: &Tensor<2>) -> Tensor<2> {
    dense(
        h.clone().detach(),
        weight.clone().detach().transpose(),
        None,
    )
    .cast(FloatDType::F32)
}

/// Log-probabilities of given tokens under the head, and the entropy of each position.
pub struct TokenLogprobs {
    /// log softmax(hidden · weightᵀ)[target] `[B, T]`, zero where the mask is 0;
    /// differentiable in `hidden` and `weight` when asked for.
    pub picked: Tensor<2>,
    /// Entropy of the predicted distribution at each position `[B, T]` (not differentiable).
    pub entropy: Tensor<2>,
}

/// `log_softmax(hidden · weightᵀ).gather(targets) · mask` with its gradient, for decoder
/// states `hidden` `[B, T, D]`, the tied embedding matrix `weight` `[V, D]`, `targets` and
/// `mask` `[B, T]`.
///
/// The gradient of the picked log-probability with respect to its row of logits is
/// `j = onehot(target) − softmax`, known in the forward pass; the loss's weight `u` on each
/// position only comes in the backward pass. So each position is attached to the tape as the
/// row sum of `hidden ⊙ const(J·weight) + const(hidden) ⊙ (J·weight)`, whose backward gives
/// `(u ⊙ J)·weight` to `hidden` and `Jᵀ·(u ⊙ hidden)` to `weight`; J `[N, V]` is the one
/// vocabulary-sized tensor kept for it. With
/// `differentiable` false (a frozen reference model) only the values are computed.
pub fn token_logprobs(
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    differentiable: bool,
) -> TokenLogprobs {
    token_logprobs_in(
        Rows::for_device(&hidden.device()),
        hidden,
        weight,
        targets,
        mask,
        differentiable,
    )
}

/// Each position's picked log-probability and entropy `[N, 1]`, and J `[N, V]` (masked rows
/// zero) when it is asked for.
struct Picked {
    values: Tensor<2>,
    entropy: Tensor<2>,
    j: Option<Tensor<2>>,
}

fn token_logprobs_in(
    rows: Rows,
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    differentiable: bool,
) -> TokenLogprobs {
    let [b, t, d] = hidden.dims();
    let h = hidden.reshape([b * t, d]);
    let picked = match rows {
        Rows::Host => host_token_rows(&h, &weight, targets, mask, differentiable),
        Rows::Device => device_token_rows(&h, &weight, targets, mask, differentiable),
    };
    let values = picked.values.reshape([b, t]);
    let entropy = picked.entropy.reshape([b, t]);
    let Some(j) = picked.j else {
        return TokenLogprobs {
            picked: values,
            entropy,
        };
    };
    let jw = rows.product(j, weight);
    let link = (h.clone() * jw.clone().detach() + h.detach() * jw)
        .sum_dim(1)
        .reshape([b, t]);
    TokenLogprobs {
        picked: link.clone() - link.detach() + values,
        entropy,
    }
}

fn host_token_rows(
    h: &Tensor<2>,
    weight: &Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    differentiable: bool,
) -> Picked {
    let device = h.device();
    let [n, _] = h.dims();
    let [v, _] = weight.dims();
    let mut j = logits_off_tape(h, weight);
    let targets = indices(targets);
    let mask = floats(mask);

    let rows: Vec<(f32, f32)> = j
        .par_chunks_mut(v)
        .zip(targets.par_iter().zip(mask.par_iter()))
        .map(|(row, (&target, &m))| {
            if m == 0.0 {
                row.fill(0.0);
                return (0.0, 0.0);
            }
            let logit = row[target];
            let (max, sum, dot) = exponentiate(row);
            let log_z = max + sum.ln();
            row.iter_mut().for_each(|e| *e = -*e / sum);
            row[target] += 1.0;
            // H = −Σ p log p = log Z − Σ p x.
            (logit - log_z, log_z - dot / sum)
        })
        .collect();
    let column =
        |values: Vec<f32>| Tensor::<2>::from_data(TensorData::new(values, [n, 1]), &device);
    Picked {
        values: column(rows.iter().map(|r| r.0).collect()),
        entropy: column(rows.iter().map(|r| r.1).collect()),
        j: differentiable.then(|| Tensor::from_data(TensorData::new(j, [n, v]), &device)),
    }
}

fn device_token_rows(
    h: &Tensor<2>,
    weight: &Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
    differentiable: bool,
) -> Picked {
    let dtype = FloatDType::from(h.dtype());
    let [n, _] = h.dims();
    let logits = device_logits(h, weight);
    let targets = targets.reshape([n, 1]);
    let mask = mask.reshape([n, 1]).cast(FloatDType::F32);
    let (probs, log_z) = softmax_rows(logits.clone());
    // H = −Σ p log p = log Z − Σ p x.
    let entropy = (log_z.clone() - (probs.clone() * logits.clone()).sum_dim(1)) * mask.clone();
    let values = (logits.gather(1, targets.clone()) - log_z) * mask.clone();
    let j = differentiable
        .then(|| (one_hot_rows(targets, mask.clone(), &probs) - probs * mask).cast(dtype));
    Picked {
        values: values.cast(dtype),
        entropy: entropy.cast(dtype),
        j,
    }
}

/// [`token_logprobs`] composed of burn's differentiable ops (the reference in the tests).
pub fn composed_token_logprobs(
    hidden: Tensor<3>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
    mask: Tensor<2>,
) -> TokenLogprobs {
    let [b, t, _] = hidden.dims();
    let logp = log_softmax(dense(hidden, weight.transpose(), None), 2);
    let picked = logp
        .clone()
        .gather(2, targets.reshape([b, t, 1]))
        .reshape([b, t]);
    let logp = logp.detach();
    let entropy = (logp.clone().exp() * logp).sum_dim(2).reshape([b, t]).neg();
    TokenLogprobs {
        picked: picked * mask.clone(),
        entropy: entropy * mask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::loss::cross_entropy as composed_cross_entropy;

    const B: usize = 2;
    const T: usize = 3;
    const D: usize = 5;
    const V: usize = 11;
    const TARGETS: [i64; 6] = [1, 10, 0, 3, 3, 2];
    const MASK: [f32; 6] = [1., 1., 0., 1., 1., 1.];
    /// Weights of a downstream loss on the picked log-probabilities.
    const UPSTREAM: [f32; 6] = [0.3, -1.2, 0.7, 2.0, -0.4, 0.9];

    /// Fixed inputs, made without the backend's global random generator (which tests running
    /// in parallel share).
    fn inputs(device: &Device) -> (Tensor<3>, Tensor<2>, Tensor<2, Int>, Tensor<2>) {
        let values = |n: usize, salt: f32| -> Vec<f32> {
            (0..n).map(|i| (i as f32 * 0.7 + salt).sin()).collect()
        };
        (
            Tensor::from_data(TensorData::new(values(B * T * D, 0.3), [B, T, D]), device),
            Tensor::from_data(TensorData::new(values(V * D, 1.9), [V, D]), device),
            Tensor::from_data(TensorData::new(TARGETS.to_vec(), [B, T]), device),
            Tensor::from_data(TensorData::new(MASK.to_vec(), [B, T]), device),
        )
    }

    /// log softmax of row r of hidden · weightᵀ, in f64 from the raw numbers.
    fn log_probs_f64(h: &[f32], w: &[f32], r: usize) -> Vec<f64> {
        let logits: Vec<f64> = (0..V)
            .map(|j| {
                (0..D)
                    .map(|k| h[r * D + k] as f64 * w[j * D + k] as f64)
                    .sum()
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        logits.iter().map(|x| x - lse).collect()
    }

    /// A scalar loss of (hidden, weight, targets, mask) on the autodiff device.
    type Loss = dyn Fn(Tensor<3>, Tensor<2>, Tensor<2, Int>, Tensor<2>) -> Tensor<1>;

    /// The value and the gradients of `hidden` and `weight` under `loss`.
    fn value_and_grads(loss: &Loss) -> (f32, Vec<f32>, Vec<f32>) {
        let device = Device::flex().autodiff();
        let (hidden, weight, targets, mask) = inputs(&device);
        let (h, w) = (hidden.require_grad(), weight.require_grad());
        let value = loss(h.clone(), w.clone(), targets, mask);
        let grads = value.backward();
        let (gh, gw) = (h.grad(&grads).unwrap(), w.grad(&grads).unwrap());
        (value.into_scalar::<f32>(), floats(gh), floats(gw))
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "{what} differ by {diff}");
    }

    /// The fused loss against the composed one: the value and both gradients.
    fn assert_same_as_composed(fused: &Loss, composed: &Loss) {
        let (fv, fh, fw) = value_and_grads(fused);
        let (cv, ch, cw) = value_and_grads(composed);
        assert!((fv - cv).abs() < 1e-5, "{fv} vs {cv}");
        assert_close(&fh, &ch, "hidden gradients");
        assert_close(&fw, &cw, "weight gradients");
    }

    /// The gradients of `loss` against central finite differences of `objective`, the same
    /// function computed in f64 from the raw numbers.
    fn assert_finite_differences(loss: &Loss, objective: impl Fn(&[f32], &[f32]) -> f64) {
        let (hidden, weight, _, _) = inputs(&Device::flex());
        let (h0, w0) = (floats(hidden), floats(weight));
        let (value, gh, gw) = value_and_grads(loss);
        assert!((value as f64 - objective(&h0, &w0)).abs() < 1e-5);
        let eps = 1e-3f32;
        for i in 0..h0.len() {
            let (mut up, mut down) = (h0.clone(), h0.clone());
            up[i] += eps;
            down[i] -= eps;
            let fd = (objective(&up, &w0) - objective(&down, &w0)) / (2.0 * eps as f64);
            assert!(
                (fd - gh[i] as f64).abs() < 1e-4,
                "hidden[{i}]: {fd} vs {}",
                gh[i]
            );
        }
        for i in 0..w0.len() {
            let (mut up, mut down) = (w0.clone(), w0.clone());
            up[i] += eps;
            down[i] -= eps;
            let fd = (objective(&h0, &up) - objective(&h0, &down)) / (2.0 * eps as f64);
            assert!(
                (fd - gw[i] as f64).abs() < 1e-4,
                "weight[{i}]: {fd} vs {}",
                gw[i]
            );
        }
    }

    /// Σ upstream ⊙ picked: a downstream loss on the picked log-probabilities.
    fn weighted(picked: Tensor<2>) -> Tensor<1> {
        let upstream =
            Tensor::<2>::from_data(TensorData::new(UPSTREAM.to_vec(), [B, T]), &picked.device());
        (picked * upstream).sum()
    }

    const ROWS: [Rows; 2] = [Rows::Host, Rows::Device];

    #[test]
    fn fused_cross_entropy_equals_composed() {
        for rows in ROWS {
            assert_same_as_composed(
                &move |h, w, t, m| cross_entropy_in(rows, h, w, t, m),
                &|h, w, t, m| composed_cross_entropy(dense(h, w.transpose(), None), t, m),
            );
        }
    }

    #[test]
    fn fused_cross_entropy_matches_finite_differences() {
        let objective = |h: &[f32], w: &[f32]| -> f64 {
            let n: f64 = MASK.iter().map(|&m| m as f64).sum();
            (0..B * T)
                .map(|r| -(MASK[r] as f64) * log_probs_f64(h, w, r)[TARGETS[r] as usize])
                .sum::<f64>()
                / n
        };
        for rows in ROWS {
            assert_finite_differences(
                &move |h, w, t, m| cross_entropy_in(rows, h, w, t, m),
                objective,
            );
        }
    }

    #[test]
    fn fused_token_logprobs_equal_composed() {
        for rows in ROWS {
            assert_same_as_composed(
                &move |h, w, t, m| weighted(token_logprobs_in(rows, h, w, t, m, true).picked),
                &|h, w, t, m| weighted(composed_token_logprobs(h, w, t, m).picked),
            );
            // The values themselves, the entropy, and the path without gradients.
            let device = Device::flex().autodiff();
            let (hidden, weight, targets, mask) = inputs(&device);
            let fused = token_logprobs_in(
                rows,
                hidden.clone().require_grad(),
                weight.clone().require_grad(),
                targets.clone(),
                mask.clone(),
                true,
            );
            let composed = composed_token_logprobs(hidden, weight, targets, mask);
            assert_close(
                &floats(fused.picked.clone()),
                &floats(composed.picked),
                "log-probs",
            );
            assert_close(
                &floats(fused.entropy),
                &floats(composed.entropy),
                "entropies",
            );
            let (hidden, weight, targets, mask) = inputs(&Device::flex());
            let frozen = token_logprobs_in(rows, hidden, weight, targets, mask, false);
            let (a, b) = (floats(frozen.picked), floats(fused.picked));
            assert!(
                a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6),
                "{rows:?}: {a:?} vs {b:?}"
            );
        }
    }

    #[test]
    fn fused_token_logprobs_match_finite_differences() {
        let objective = |h: &[f32], w: &[f32]| -> f64 {
            (0..B * T)
                .map(|r| {
                    let lp = log_probs_f64(h, w, r)[TARGETS[r] as usize];
                    UPSTREAM[r] as f64 * MASK[r] as f64 * lp
                })
                .sum()
        };
        for rows in ROWS {
            assert_finite_differences(
                &move |h, w, t, m| weighted(token_logprobs_in(rows, h, w, t, m, true).picked),
                objective,
            );
        }
    }
}
