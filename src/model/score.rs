//! Teacher-forced log-probabilities of given captions: log π and log π_ref of sampled
//! captions in the RL stage, and perplexity and KL under the base captioner in evaluation.

use burn::prelude::*;

use super::captioner::{Captioner, EncodedImages};
use super::lm_head;

/// Log-probability of each token of `tokens[i]` (the end token included when present)
/// given row `i` of `encoded` and its style: `[N, T]` (zero past each caption), the mask
/// `[N, T]`, and the entropy of the predicted distribution at each position `[N, T]`.
/// Differentiable in the model's parameters when `differentiable` (the model must then live
/// on an autodiff device); through the fused LM head, so no `[N, T, V]` tensor is taped.
pub fn token_logprobs(
    model: &Captioner,
    encoded: &EncodedImages,
    styles: Option<Tensor<1, Int>>,
    tokens: &[&[u32]],
    differentiable: bool,
    device: &Device,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let start = model.config.decoder_start_token_id as i64;
    let t = tokens.iter().map(|c| c.len()).max().unwrap_or(1).max(1);
    let n = tokens.len();
    let mut inputs = vec![start; n * t];
    let mut targets = vec![start; n * t];
    let mut mask = vec![0f32; n * t];
    for (i, caption) in tokens.iter().enumerate() {
        for (j, &tok) in caption.iter().enumerate() {
            targets[i * t + j] = tok as i64;
            mask[i * t + j] = 1.0;
            if j + 1 < t {
                inputs[i * t + j + 1] = tok as i64;
            }
        }
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(inputs, [n, t]), device);
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, t]), device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [n, t]), device);
    let hidden = model.hidden_encoded(encoded, styles, ids, None);
    let out = lm_head::token_logprobs(
        hidden,
        model.decoder.lm_head_weight(),
        targets,
        mask.clone(),
        differentiable,
    );
    (out.picked, mask, out.entropy)
}

/// Host rows of a masked `[N, T]` tensor, each cut to its caption's length.
pub fn to_rows(t: Tensor<2>, tokens: &[&[u32]]) -> Vec<Vec<f32>> {
    let [_, w] = t.dims();
    let v = crate::tensor::floats(t);
    tokens
        .iter()
        .enumerate()
        .map(|(i, tok)| v[i * w..i * w + tok.len()].to_vec())
        .collect()
}

/// Per-token log-probabilities of `tokens[i]` for image `i` of `pixel_values` in style
/// `styles[i]`, without gradient.
pub fn caption_logprobs(
    model: &Captioner,
    pixel_values: Tensor<4>,
    styles: Option<&[usize]>,
    tokens: &[Vec<u32>],
) -> Vec<Vec<f32>> {
    let device = pixel_values.device();
    let encoded = model.encode(pixel_values);
    let styles = styles
        .filter(|_| model.style_prefix.is_some())
        .map(|s| crate::tensor::index_tensor(s, &device));
    let refs: Vec<&[u32]> = tokens.iter().map(Vec::as_slice).collect();
    let (picked, _, _) = token_logprobs(model, &encoded, styles, &refs, false, &device);
    to_rows(picked, &refs)
}
