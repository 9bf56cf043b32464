//! Mixed-precision training, with `torch.autocast`'s policy: weights, gradients, optimizer
//! state and every activation stay in f32, and only the matrix products (the linear layers'
//! and attention's) are computed in f16 or bf16, their inputs cast on the way in and their
//! results cast back to f32. Layer norms, softmaxes outside attention, GELU, residual sums
//! and the losses stay in f32, as they do under PyTorch's autocast.
//!
//! The weights' f32 values are the master copy that the optimizer updates; the half-precision
//! copies exist only inside a product and its backward pass (burn's `cast` passes the
//! gradient back through the conversion). In f16 the gradients that flow back through a
//! product can underflow to zero: the trainers scale the loss ([`crate::optim::LossScale`]).
//!
//! The setting is the process's, like burn's device settings: a trainer turns it on for its
//! run with [`Autocast::enter`], and the guard puts back what was there when dropped. It is
//! read by [`super::layers::dense`] and [`super::layers::attend`], the two places every
//! model's products go through.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::util::Precision;

/// 0: off; else the [`Precision`] of the products, as [`code`] numbers it.
static PRODUCTS: AtomicU8 = AtomicU8::new(0);

fn code(precision: Precision) -> u8 {
    match precision {
        Precision::F32 => 0,
        Precision::F16 => 1,
        Precision::Bf16 => 2,
    }
}

/// The float type the matrix products are computed in, when mixed precision is on.
pub fn products() -> Option<FloatDType> {
    match PRODUCTS.load(Ordering::Relaxed) {
        1 => Some(FloatDType::F16),
        2 => Some(FloatDType::BF16),
        _ => None,
    }
}

/// Checks that `device` computes in `precision` before a run starts on it (burn's Vulkan
/// backend, for one, has no bf16 arithmetic).
pub fn check(precision: Precision, device: &Device) -> anyhow::Result<()> {
    anyhow::ensure!(
        precision == Precision::F32 || device.supports_dtype(precision.dtype()),
        "mixed_precision (--mixed-precision) {precision} is not supported on device {device:?}: \
         it cannot compute in {precision}; use {}",
        precision.fallback()
    );
    Ok(())
}

/// Mixed precision turned on (or off, with `Precision::F32`) until the guard is dropped.
#[must_use = "mixed precision lasts as long as the guard"]
pub struct Autocast {
    previous: u8,
}

impl Autocast {
    pub fn enter(precision: Precision) -> Self {
        Autocast {
            previous: PRODUCTS.swap(code(precision), Ordering::Relaxed),
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        PRODUCTS.store(self.previous, Ordering::Relaxed);
    }
}

/// `x` in the products' float type (itself when mixed precision is off).
pub fn lower<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match products() {
        Some(dtype) => x.cast(dtype),
        None => x,
    }
}

/// A product's result back in f32 (itself when mixed precision is off).
pub fn raise<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match products() {
        Some(_) => x.cast(FloatDType::F32),
        None => x,
    }
}
