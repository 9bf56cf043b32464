//! Generating and scoring, apart from the loss (as TRL separates them): captions sampled from
//! the policy with the KV cache and no gradient, the log-probabilities of their tokens under
//! a model (the frozen reference, or the policy with gradient during the update), and the KL
//! between the two. Gradients never flow through sampling.

use burn::prelude::*;
use rayon::prelude::*;

use super::kl::{kl_token, KlEstimator};
use crate::model::captioner::EncodedImages;
use crate::model::generate::sample_or_greedy;
use crate::model::score;
use crate::model::{Captioner, DecodeOptions};
use crate::tensor::index_tensor;

/// Sampled captions and everything the update needs.
pub struct Rollout {
    /// The pictures (one row per image), on the plain device.
    pub pixels: Tensor<4>,
    /// The encoder's output for `pixels` (plain device, one row per image), when the policy's
    /// encoder is frozen: it is then also the reference's (both are the base's), and every
    /// pass of the step starts from it instead of encoding the pictures again.
    pub encoder_states: Option<Tensor<3>>,
    /// Row → image index (each image repeated K times).
    pub image_of_row: Vec<usize>,
    /// Row → captioner style (None for a captioner without styles).
    pub styles: Option<Vec<usize>>,
    pub tokens: Vec<Vec<u32>>,
    /// Per-token log-probabilities when sampled (the policy before this update).
    pub old_logprobs: Vec<Vec<f32>>,
}

impl Rollout {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Samples `k` captions per image of `pixels` (on the plain device) with `policy`, without
/// gradient; `styles` gives each image's style. `frozen_encoder`: the policy's encoder is the
/// reference's and is not trained, so its output is kept for the reference and the update
/// (see [`Rollout::encoder_states`]).
pub fn sample(
    policy: &Captioner,
    pixels: Tensor<4>,
    styles: Option<&[usize]>,
    k: usize,
    opts: &DecodeOptions,
    frozen_encoder: bool,
) -> Rollout {
    let images = pixels.dims()[0];
    let policy = policy.clone().valid();
    let states = policy.encoder.forward(pixels.clone());
    let encoded = policy.encode_states(states.clone());
    let image_of_row: Vec<usize> = (0..images)
        .flat_map(|i| std::iter::repeat_n(i, k))
        .collect();
    let encoded = encoded.for_rows(&image_of_row);
    let row_styles: Option<Vec<usize>> =
        styles.map(|s| image_of_row.iter().map(|&i| s[i]).collect());
    let gens = sample_or_greedy(
        &policy,
        &encoded,
        row_styles.as_deref(),
        image_of_row.len(),
        opts,
    );
    let tokens: Vec<Vec<u32>> = gens.iter().map(|g| g.tokens.clone()).collect();
    Rollout {
        pixels,
        encoder_states: frozen_encoder.then_some(states),
        image_of_row,
        styles: row_styles,
        old_logprobs: gens.into_iter().map(|g| g.logprobs).collect(),
        tokens,
    }
}

/// The pictures of `rows` encoded by `model` on `device`, as those rows attend to them: each
/// distinct picture once, from the kept encoder states when the encoder is frozen (constants:
/// only the projection and the decoder see them), else by encoding the pictures.
pub fn encode_rows(
    model: &Captioner,
    rollout: &Rollout,
    rows: &[usize],
    device: &Device,
) -> EncodedImages {
    let shown: Vec<usize> = rows.iter().map(|&r| rollout.image_of_row[r]).collect();
    let (firsts, local) = crate::util::first_occurrences(&shown);
    let pictures: Vec<usize> = firsts.iter().map(|&f| shown[f]).collect();
    // Every picture in order (each row's shard is the whole rollout): no gather.
    let every = pictures.iter().copied().eq(0..rollout.pixels.dims()[0]);
    let encoded = match &rollout.encoder_states {
        Some(states) => {
            model.encode_states(pick(states.clone(), &pictures, every).to_device(device))
        }
        None => model.encode(pick(rollout.pixels.clone(), &pictures, every).to_device(device)),
    };
    encoded.for_rows(&local)
}

/// The rows `pictures` of `t`'s first axis (`t` itself when they are `every` row in order).
fn pick<const D: usize>(t: Tensor<D>, pictures: &[usize], every: bool) -> Tensor<D> {
    if every {
        return t;
    }
    let index = index_tensor(pictures, &t.device());
    t.select(0, index)
}

/// Teacher-forced log-probabilities of the sampled tokens of `rows` `[N, T]` under `model`
/// (with gradient when `differentiable`; the model must then live on the autodiff device),
/// the token mask, and the mean entropy.
pub fn token_logprobs(
    model: &Captioner,
    rows: &[usize],
    rollout: &Rollout,
    differentiable: bool,
    device: &Device,
) -> (Tensor<2>, Tensor<2>, f32) {
    let enc = encode_rows(model, rollout, rows, device);
    let styles = rollout.styles.as_ref().map(|s| {
        let s: Vec<usize> = rows.iter().map(|&r| s[r]).collect();
        index_tensor(&s, device)
    });
    let tokens: Vec<&[u32]> = rows.iter().map(|&r| rollout.tokens[r].as_slice()).collect();
    let (picked, mask, entropy) =
        score::token_logprobs(model, &enc, styles, &tokens, differentiable, device);
    let entropy =
        ((entropy * mask.clone()).sum() / mask.clone().sum().clamp_min(1.0)).into_scalar::<f32>();
    (picked, mask, entropy)
}

/// `rows` cut into up to `shards` contiguous runs of about equal numbers of tokens (rows are
/// in picture order, so a run shows few pictures).
pub fn shards_of(rollout: &Rollout, rows: &[usize], shards: usize) -> Vec<Vec<usize>> {
    let total: usize = rows.iter().map(|&r| rollout.tokens[r].len().max(1)).sum();
    let k = shards.clamp(1, rows.len().max(1));
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); k];
    let mut seen = 0;
    for &r in rows {
        // The shard whose share of the tokens this row's first token falls in.
        let s = (seen * k / total.max(1)).min(k - 1);
        out[s].push(r);
        seen += rollout.tokens[r].len().max(1);
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Per-token log-probabilities of every sampled caption under the frozen `reference` (on the
/// plain device), each cut to its caption's length; `shards` runs of rows score in parallel.
pub fn reference_logprobs(
    reference: &Captioner,
    rollout: &Rollout,
    shards: usize,
) -> Vec<Vec<f32>> {
    let plain = rollout.pixels.device();
    let all: Vec<usize> = (0..rollout.len()).collect();
    shards_of(rollout, &all, shards)
        .par_iter()
        .map(|rows| {
            let (lp, _, _) = token_logprobs(reference, rows, rollout, false, &plain);
            let tokens: Vec<&[u32]> = rows.iter().map(|&r| rollout.tokens[r].as_slice()).collect();
            score::to_rows(lp, &tokens)
        })
        .collect::<Vec<_>>()
        .concat()
}

/// Each caption's KL estimate: the per-token estimates from its sampled log-probabilities
/// `logprobs` and the reference's `ref_logprobs`, summed over its tokens.
pub fn caption_kls(
    estimator: KlEstimator,
    logprobs: &[Vec<f32>],
    ref_logprobs: &[Vec<f32>],
) -> Vec<f32> {
    logprobs
        .iter()
        .zip(ref_logprobs)
        .map(|(lp, rp)| {
            lp.iter()
                .zip(rp)
                .map(|(&a, &r)| kl_token(estimator, a, r))
                .sum()
        })
        .collect()
}
