//! Activation checkpointing of the supervised step (`gradient_checkpointing = true`), as
//! transformers' option does it: the forward pass keeps only each transformer block's input,
//! and the backward pass runs each block again, from the top down, to take its gradient.
//!
//! burn records one forward pass for one backward pass and cannot keep part of a graph, so
//! the backward pass is cut into parts here: a part (the head, a decoder block, the decoder's
//! embeddings, the projection, an encoder layer, …) is run again on the autodiff device from
//! its saved input, made a fresh leaf, and the backward pass of `sum(output ⊙ g)`, with `g`
//! the gradient of the part's output, gives the part's parameter gradients and the gradient
//! of its input, which becomes the `g` of the part below. Each part's parameter gradients
//! leave burn as soon as they are made ([`Recomputed::backward_next`]), so neither a whole
//! model's activations nor its gradients are ever held at once, besides the caller's sum.
//! The cost is one more forward pass.

use burn::prelude::*;
use burn::tensor::Gradients;

use super::step::CaptionBatch;
use crate::model::vision::VisionPart;
use crate::model::weights::trains;
use crate::model::{lm_head, Captioner};
use crate::optim::grads::{native_gradients, NamedGrads};

/// One part of the backward pass, in the order the parts run.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// `ln_f`, the LM head and the loss.
    Head,
    /// Decoder block `i`, with its cross-attention's keys and values of the encoder states.
    Block(usize),
    /// Token embeddings, style prefix and positions.
    Embed,
    /// The projection of the encoder's states to the decoder's width.
    Project,
    Vision(VisionPart),
}

/// A micro-batch's pass with its activations recomputed in the backward pass: made by
/// [`Recomputed::forward`], then taken one part at a time by [`Recomputed::backward_next`].
pub struct Recomputed<'a> {
    /// The model on the autodiff device (a fork of its own: see `step::micro_step`).
    model: Captioner,
    batch: &'a CaptionBatch,
    /// Inputs of the decoder's blocks, then the last block's output; each is taken when its
    /// part runs. Values without a graph, as all the saved tensors.
    decoder: Vec<Option<Tensor<3>>>,
    /// The encoder's states at the decoder's width (one per distinct picture), which every
    /// block cross-attends to.
    memory: Tensor<3>,
    /// The encoder's output before the projection (when the projection's part runs).
    encoded: Option<Tensor<3>>,
    /// Inputs of the encoder's layers, then the last layer's output (empty when no encoder
    /// part trains, or the states came from the feature cache).
    encoder: Vec<Option<Tensor<3>>>,
    /// The parts still to run, last first.
    parts: Vec<Part>,
    /// Which leaves need a gradient: the decoder blocks' inputs (by block), the memory, and
    /// the inputs of the encoder's parts (embeddings, layers, `finish`, then its output).
    block_input_grad: Vec<bool>,
    memory_grad: bool,
    encoder_grad: Vec<bool>,
    /// The gradient of the running part's output, and the sum of the memory's gradients.
    grad: Option<Tensor<3>>,
    grad_memory: Option<Tensor<3>>,
    /// The mean loss, once the head has run.
    pub loss: f32,
    /// What the backward pass multiplies the loss by (f16's loss scaling; 1 otherwise).
    pub loss_scale: f32,
}

/// A saved value as a leaf of a new graph, taking a gradient when `grad`.
fn leaf(x: Tensor<3>, grad: bool) -> Tensor<3> {
    let x = x.autodiff();
    if grad {
        x.require_grad()
    } else {
        x
    }
}

/// Adds two optional gradients.
fn add(a: Option<Tensor<3>>, b: Option<Tensor<3>>) -> Option<Tensor<3>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

impl<'a> Recomputed<'a> {
    /// The forward pass of `batch` through `model` (on the autodiff device), keeping each
    /// block's input and nothing else.
    pub fn forward(model: Captioner, batch: &'a CaptionBatch) -> Self {
        let plain = model.clone().valid();
        let vision = &model.encoder;
        let layers = vision.num_layers();

        // Which parts have parameters to train, and so which inputs need a gradient.
        let cached = batch.encoder_states.is_some();
        let mut vision_parts = vec![VisionPart::Embed];
        vision_parts.extend((0..layers).map(VisionPart::Layer));
        vision_parts.push(VisionPart::Finish);
        let vision_trains: Vec<bool> = vision_parts
            .iter()
            .map(|&p| !cached && vision.part_trains(p))
            .collect();
        // The input of the encoder's part k (k = the number of parts: its output) needs a
        // gradient when a part below it trains.
        let encoder_grad: Vec<bool> = (0..=vision_parts.len())
            .map(|k| vision_trains[..k].iter().any(|&t| t))
            .collect();
        let encoded_grad = encoder_grad[vision_parts.len()];
        let project_trains = model.enc_to_dec_proj.as_ref().is_some_and(trains);
        let memory_grad = encoded_grad || project_trains;
        let embed_trains = trains(&model.decoder.transformer.wte)
            || trains(&model.decoder.transformer.wpe)
            || model.style_prefix.as_ref().is_some_and(trains);
        let blocks = &model.decoder.transformer.h;
        let block_input_grad: Vec<bool> = (0..blocks.len())
            .map(|i| embed_trains || memory_grad || blocks[..i].iter().any(trains))
            .collect();

        // Backward order: the head, the blocks from the top, the embeddings, the encoder.
        let mut parts = vec![Part::Head];
        for i in (0..blocks.len()).rev() {
            if block_input_grad[i] || memory_grad || trains(&blocks[i]) {
                parts.push(Part::Block(i));
            }
        }
        if embed_trains {
            parts.push(Part::Embed);
        }
        if memory_grad {
            parts.push(Part::Project);
        }
        for (k, &p) in vision_parts.iter().enumerate().rev() {
            if vision_trains[k] || encoder_grad[k] {
                parts.push(Part::Vision(p));
            }
        }
        parts.reverse();

        // The forward pass without a graph, keeping the inputs of the parts that will run.
        let mut encoder = Vec::new();
        let encoded = match &batch.encoder_states {
            Some(states) => states.clone().inner(),
            None => {
                let mut x = plain.encoder.embed(batch.pixel_values.clone().inner());
                for i in 0..layers {
                    let y = plain.encoder.layer(i, x.clone());
                    if encoded_grad {
                        encoder.push(Some(x));
                    }
                    x = y;
                }
                if encoded_grad {
                    encoder.push(Some(x.clone()));
                }
                plain.encoder.finish(x)
            }
        };
        let memory = plain.project(encoded.clone());
        let styles = batch.styles.clone().map(Tensor::inner);
        let mut x = plain.decoder.add_positions(
            plain.decoder_inputs(styles, batch.input_ids.clone().inner()),
            0,
        );
        let mut decoder = Vec::new();
        for block in &plain.decoder.transformer.h {
            let kv = block
                .crossattention
                .as_ref()
                .map(|a| a.cross_kv(memory.clone()).for_rows(&batch.pictures));
            let y = block.forward(x.clone(), None, kv.as_ref(), None);
            decoder.push(Some(x));
            x = y;
        }
        decoder.push(Some(x));
        Self {
            model,
            batch,
            decoder,
            memory,
            encoded: memory_grad.then_some(encoded),
            encoder,
            parts,
            block_input_grad,
            memory_grad,
            encoder_grad,
            grad: None,
            grad_memory: None,
            loss: f32::NAN,
            loss_scale: 1.0,
        }
    }

    /// Runs the next part's backward pass and returns its parameters' gradients (in
    /// [`native_gradients`]' names and layout), or None when every part has run.
    pub fn backward_next(&mut self) -> Option<NamedGrads> {
        let part = self.parts.pop()?;
        let grads = match part {
            Part::Head => Some(self.head()),
            Part::Block(i) => self.block(i),
            Part::Embed => {
                let m = &self.model;
                let b = self.batch;
                let out = m
                    .decoder
                    .add_positions(m.decoder_inputs(b.styles.clone(), b.input_ids.clone()), 0);
                self.through(out)
            }
            Part::Project => self.project(),
            Part::Vision(p) => self.vision(p),
        };
        Some(grads.map_or_else(Vec::new, |g| native_gradients(&self.model, g)))
    }

    /// The backward pass of `out` (a part's output) with the gradient it was given, returning
    /// the gradients; None when the part has nothing that takes a gradient.
    fn through(&self, out: Tensor<3>) -> Option<Gradients> {
        let g = self.grad.clone()?;
        if !out.is_tracked() {
            return None;
        }
        Some((out * g.autodiff()).sum().backward())
    }

    fn head(&mut self) -> Gradients {
        let m = &self.model;
        let b = self.batch;
        let x = leaf(self.decoder.pop().flatten().expect("last state"), true);
        let t = b.input_ids.dims()[1];
        let k = m.prefix_positions(b.styles.is_some());
        let h = m
            .decoder
            .transformer
            .ln_f
            .forward(x.clone())
            .narrow(1, k, t);
        let loss = lm_head::cross_entropy(
            h,
            m.decoder.lm_head_weight(),
            b.targets.clone(),
            b.mask.clone(),
        );
        let mut grads = loss.clone().mul_scalar(self.loss_scale).backward();
        self.loss = loss.into_scalar::<f32>();
        self.grad = x.grad_remove(&mut grads);
        grads
    }

    fn block(&mut self, i: usize) -> Option<Gradients> {
        let x = leaf(
            self.decoder[i].take().expect("block input"),
            self.block_input_grad[i],
        );
        let memory = leaf(self.memory.clone(), self.memory_grad);
        let block = &self.model.decoder.transformer.h[i];
        let kv = block
            .crossattention
            .as_ref()
            .map(|a| a.cross_kv(memory.clone()).for_rows(&self.batch.pictures));
        let out = block.forward(x.clone(), None, kv.as_ref(), None);
        let mut grads = self.through(out)?;
        self.grad = x.grad_remove(&mut grads);
        self.grad_memory = add(self.grad_memory.take(), memory.grad_remove(&mut grads));
        Some(grads)
    }

    /// The projection (if the widths differ), which hands the sum of the memory's gradients
    /// to the encoder's output.
    fn project(&mut self) -> Option<Gradients> {
        let z = leaf(
            self.encoded.take().expect("encoder output"),
            self.encoder_grad.last().copied().unwrap_or(false),
        );
        self.grad = self.grad_memory.take();
        let mut grads = self.through(self.model.project(z.clone()))?;
        self.grad = z.grad_remove(&mut grads);
        Some(grads)
    }

    fn vision(&mut self, part: VisionPart) -> Option<Gradients> {
        let vision = &self.model.encoder;
        let (out, x) = match part {
            VisionPart::Embed => (vision.embed(self.batch.pixel_values.clone()), None),
            VisionPart::Layer(i) => {
                let x = leaf(
                    self.encoder[i].take().expect("layer input"),
                    self.encoder_grad[i + 1],
                );
                (vision.layer(i, x.clone()), Some(x))
            }
            VisionPart::Finish => {
                let n = vision.num_layers();
                let x = leaf(
                    self.encoder[n].take().expect("last layer output"),
                    self.encoder_grad[n + 1],
                );
                (vision.finish(x.clone()), Some(x))
            }
        };
        let mut grads = self.through(out)?;
        self.grad = x.and_then(|x| x.grad_remove(&mut grads));
        Some(grads)
    }
}
