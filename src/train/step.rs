//! Batching captions for teacher forcing, and one optimisation step.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::model::{lm_head, Captioner};

/// A teacher-forced batch: decoder inputs `[start, t1..tn, pad..]`, targets
/// `[t1..tn, end, pad..]` and the mask of target positions that count.
pub struct CaptionBatch {
    pub pixel_values: Tensor<4>,
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
    let n = styles.len();
    CaptionBatch {
        pixel_values,
        styles: Some(Tensor::from_data(
            TensorData::new(styles.iter().map(|&s| s as i64).collect::<Vec<_>>(), [n]),
            device,
        )),
        input_ids,
        targets,
        mask,
    }
}

/// Loss of a batch (differentiable when the model lives on an autodiff device).
pub fn batch_loss(model: &Captioner, batch: &CaptionBatch) -> Tensor<1> {
    let hidden = model.hidden(
        batch.pixel_values.clone(),
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

/// Forward, backward and one optimizer update; returns the updated model and the loss.
pub fn train_step(
    model: Captioner,
    optim: &mut ModuleOptimizer,
    batch: &CaptionBatch,
    lr: f64,
) -> (Captioner, f32) {
    let loss = batch_loss(&model, batch);
    let grads = loss.backward();
    let value = loss.into_scalar::<f32>();
    let grads = GradientsParams::from_grads(grads, &model);
    (optim.step(lr, model, grads), value)
}
