//! Batching captions for teacher forcing, and the forward and backward passes of one
//! micro-batch: what `stylecap train` (and `stylecap bench`) run at every step.

use anyhow::Result;
use burn::prelude::*;
use image::RgbImage;
use rayon::prelude::*;

use super::batches::StepRows;
use super::features::{FeatureCache, PictureKey};
use super::recompute::Recomputed;
use super::shards::{by_length, picture_cost};
use crate::data::image::PreprocessorConfig;
use crate::model::{lm_head, Captioner};
use crate::optim::grads::{native_gradients, NamedGrads};
use crate::optim::Accumulated;

/// A teacher-forced batch: decoder inputs `[start, t1..tn, pad..]`, targets
/// `[t1..tn, end, pad..]` and the mask of target positions that count.
pub struct CaptionBatch {
    /// The batch's distinct pictures.
    pub pixel_values: Tensor<4>,
    /// The encoder's output for `pixel_values`, when a frozen encoder's features are cached:
    /// the loss starts from these instead of encoding the pixels.
    pub encoder_states: Option<Tensor<3>>,
    /// Which picture of `pixel_values` each row shows.
    pub pictures: Vec<usize>,
    pub styles: Option<Tensor<1, Int>>,
    pub input_ids: Tensor<2, Int>,
    pub targets: Tensor<2, Int>,
    pub mask: Tensor<2>,
}

/// Input ids, target ids and loss mask for token sequences (right-padded to the longest).
pub fn teacher_forcing(
    captions: &[Vec<u32>],
    start: u32,
    end: u32,
    pad: u32,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2>) {
    let b = captions.len();
    let t = captions.iter().map(|c| c.len() + 1).max().unwrap_or(1);
    let mut inputs = vec![pad as i64; b * t];
    let mut targets = vec![pad as i64; b * t];
    let mut mask = vec![0f32; b * t];
    for (i, c) in captions.iter().enumerate() {
        inputs[i * t] = start as i64;
        for (j, &tok) in c.iter().enumerate() {
            inputs[i * t + j + 1] = tok as i64;
            targets[i * t + j] = tok as i64;
            mask[i * t + j] = 1.0;
        }
        targets[i * t + c.len()] = end as i64;
        mask[i * t + c.len()] = 1.0;
    }
    (
        Tensor::from_data(TensorData::new(inputs, [b, t]), device),
        Tensor::from_data(TensorData::new(targets, [b, t]), device),
        Tensor::from_data(TensorData::new(mask, [b, t]), device),
    )
}

/// A teacher-forced batch: pictures, one style per row, and token sequences framed by the
/// end-of-text token (which GPT-2 also starts and pads with).
pub fn caption_batch(
    pixel_values: Tensor<4>,
    styles: &[usize],
    tokens: &[Vec<u32>],
    eot: u32,
    device: &Device,
) -> CaptionBatch {
    let (input_ids, targets, mask) = teacher_forcing(tokens, eot, eot, eot, device);
    CaptionBatch {
        pixel_values,
        encoder_states: None,
        pictures: (0..tokens.len()).collect(),
        styles: Some(crate::tensor::index_tensor(styles, device)),
        input_ids,
        targets,
        mask,
    }
}

/// Loss of a batch (differentiable when the model lives on an autodiff device).
pub fn batch_loss(model: &Captioner, batch: &CaptionBatch) -> Tensor<1> {
    let encoded = match &batch.encoder_states {
        Some(states) => model.encode_states(states.clone()),
        None => model.encode(batch.pixel_values.clone()),
    }
    .for_rows(&batch.pictures);
    let hidden = model.hidden_encoded(
        &encoded,
        batch.styles.clone(),
        batch.input_ids.clone(),
        None,
    );
    lm_head::cross_entropy(
        hidden,
        model.decoder.lm_head_weight(),
        batch.targets.clone(),
        batch.mask.clone(),
    )
}

/// The distinct pictures among `images` (the first row showing each, in row order) and, for
/// each row, which of them it shows. Rows that show the same picture (the blank one of style
/// texts, or two captions of one photo) share its pass through the encoder and the
/// cross-attention's projections, and the rows' gradients meet there.
pub fn distinct_pictures(images: &[RgbImage]) -> (Vec<usize>, Vec<usize>) {
    // Pictures that differ almost always differ in their first bytes, so each comparison
    // stops early; equal ones (the blank picture) are read once each.
    crate::util::first_occurrences(images)
}

/// Forward and backward of one micro-batch of `rows`, split into `shards` of similar length
/// (`shards::by_length`) whose passes run in parallel; adds the micro-batch's gradient,
/// divided by the `accum` micro-batches of the step, to `acc`, and returns its mean loss and
/// its target tokens. The backward pass starts from the loss times `loss_scale` (f16's loss
/// scaling, [`crate::optim::LossScale`]; 1 otherwise), and the gradients are divided by it
/// again as they are added. `before_sum`
/// runs once the passes are done, before the gradients are summed (the trainer starts making
/// the next rows there).
///
/// With `recompute`, each shard's activations are recomputed in the backward pass, one
/// transformer block at a time ([`Recomputed`]); the shards take each part in step and their
/// gradients are summed part by part, in shard order.
///
/// The CPU backend keeps about one core busy on matrices this small, so shards use the
/// others. Each shard works on its own fork of the model: burn's autodiff graph cannot run
/// two backward passes through shared parameter nodes at once. The shards run as tasks of
/// rayon's pool, which the CPU backend's own parallel ops also use, so the two levels share
/// the cores instead of oversubscribing them. Shard gradients are weighted by their share of
/// target tokens, which gives the gradient of the whole micro-batch's mean loss.
#[allow(clippy::too_many_arguments)]
pub fn micro_step(
    model: &Captioner,
    rows: &StepRows,
    (shards, recompute): (usize, bool),
    preprocess: &PreprocessorConfig,
    eot: u32,
    device: &Device,
    (acc, accum, loss_scale): (&mut Accumulated, usize, f32),
    features: Option<&FeatureCache>,
    before_sum: impl FnOnce(),
) -> Result<(f32, usize)> {
    let StepRows {
        images,
        tokens,
        styles,
        keys,
    } = rows;
    let lengths: Vec<usize> = tokens.iter().map(|r| r.len() + 1).collect();
    let total: usize = lengths.iter().sum();
    let (_, pictures) = distinct_pictures(images);
    let picture_cost = picture_cost(&model.config);
    let batches = by_length(&lengths, &pictures, picture_cost, shards.max(1))
        .into_iter()
        .map(|shard| {
            let share = shard.iter().map(|&i| lengths[i]).sum::<usize>() as f32 / total as f32;
            let shown: Vec<usize> = shard.iter().map(|&i| pictures[i]).collect();
            let (distinct, pictures) = crate::util::first_occurrences(&shown);
            let im: Vec<RgbImage> = distinct.iter().map(|&r| images[shard[r]].clone()).collect();
            let ro: Vec<Vec<u32>> = shard.iter().map(|&i| tokens[i].clone()).collect();
            let st: Vec<usize> = shard.iter().map(|&i| styles[i]).collect();
            let pixels = preprocess.batch(&im, device)?;
            let keys: Option<Vec<PictureKey>> = distinct.iter().map(|&r| keys[shard[r]]).collect();
            let states = match (features, keys) {
                (Some(cache), Some(keys)) => Some(cache.states(model, &keys, pixels.clone())),
                _ => None,
            };
            let batch = CaptionBatch {
                encoder_states: states,
                pictures,
                ..caption_batch(pixels, &st, &ro, eot, device)
            };
            Ok((batch, share))
        })
        .collect::<Result<Vec<_>>>()?;
    if recompute {
        let mut passes: Vec<Recomputed> = batches
            .par_iter()
            .map(|(batch, _)| {
                let mut pass = Recomputed::forward(model.clone().fork(device), batch);
                pass.loss_scale = loss_scale;
                pass
            })
            .collect();
        before_sum();
        loop {
            let parts: Vec<Option<NamedGrads>> =
                passes.par_iter_mut().map(|p| p.backward_next()).collect();
            if parts.iter().all(Option::is_none) {
                break;
            }
            for (named, (_, share)) in parts.into_iter().zip(&batches) {
                acc.add_named(named.unwrap_or_default(), share / accum as f32 / loss_scale);
            }
        }
        // The parts' activations and gradients were made on the pool's threads and freed on
        // others, each thread's malloc arena keeping what it freed; returned here, they do not
        // pile up over steps (at ViT-B + GPT-2 scale, a peak of 4.5 GB after 4 steps instead
        // of 5.1 GB; docs/performance.md).
        crate::util::release_free_memory();
        let value = passes
            .iter()
            .zip(&batches)
            .map(|(p, (_, share))| p.loss * share)
            .sum();
        return Ok((value, total));
    }
    let results: Vec<(f32, f32, NamedGrads)> = batches
        .par_iter()
        .map(|(batch, share)| {
            let local = model.clone().fork(device);
            let loss = batch_loss(&local, batch);
            let grads = loss.clone().mul_scalar(loss_scale).backward();
            let named = native_gradients(&local, grads);
            (loss.into_scalar::<f32>(), *share, named)
        })
        .collect();
    before_sum();
    let mut value = 0f32;
    for (loss, share, named) in results {
        value += loss * share;
        acc.add_named(named, share / accum as f32 / loss_scale);
    }
    Ok((value, total))
}
