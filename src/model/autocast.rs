//! Mixed-precision training, with `torch.autocast`'s policy: weights, gradients, optimizer
//! state and every activation stay in f32, and only the matrix products (the linear layers'
//! and attention's) are computed in f16 or bf16, their inputs cast on the way in and their
//! results cast back to f32. Layer norms, softmaxes outside attention, GELU, residual sums
//! and the losses stay in f32, as they do under PyTorch's autocast.
//!
//! The weights' f32 values are the master copy that the optimizer updates; in training a
//! half-precision copy exists only inside a product and its backward pass (burn's `cast`
//! passes the gradient back through the conversion). In f16 the gradients that flow back
//! through a product can underflow to zero: the trainers scale the loss
//! ([`crate::optim::LossScale`]).
//!
//! The setting is the process's, like burn's device settings: a trainer turns it on for its
//! run with [`Autocast::enter`], and the guard puts back what was there when dropped. It is
//! read by [`super::layers::dense`] and [`super::layers::attend`], the two places every
//! model's products go through.
//!
//! Decoding multiplies the same weights at every token: [`KeptCasts`], which the decoder's
//! cache owns, keeps each weight's half-precision copy from the first step to the last, as
//! PyTorch's autocast keeps its casts of weights while its region lasts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};

use burn::module::{Param, ParamId};
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

/// A weight in the products' float type (its value when mixed precision is off): the copy
/// kept by the [`KeptCasts`] in use, if any, else a new cast.
pub fn lower_weight(weight: &Param<Tensor<2>>) -> Tensor<2> {
    match products() {
        Some(dtype) => cast_weight(weight, dtype),
        None => weight.val(),
    }
}

fn cast_weight(weight: &Param<Tensor<2>>, dtype: FloatDType) -> Tensor<2> {
    KEPT.with_borrow_mut(|kept| match kept {
        Some(kept) => kept
            .entry((weight.id, dtype))
            .or_insert_with(|| weight.val().cast(dtype))
            .clone(),
        None => weight.val().cast(dtype),
    })
}

thread_local! {
    /// The casts [`lower_weight`] keeps, while [`KeptCasts::within`] runs on this thread.
    static KEPT: RefCell<Option<Casts>> = const { RefCell::new(None) };
}

type Casts = HashMap<(ParamId, FloatDType), Tensor<2>>;

/// Half-precision copies of weights by parameter, kept across the steps of one decoding
/// (empty when mixed precision is off). A copy is made from the weight's value on first use
/// and never refreshed: keep them only while the weights do not change, for one model.
#[derive(Debug, Clone, Default)]
pub struct KeptCasts(Casts);

impl KeptCasts {
    /// Runs `f` with the weights' casts taken from, and new ones added to, these. They are the
    /// calling thread's while `f` runs: call it where no other model's work can run on this
    /// thread meanwhile (not inside a rayon task, whose waits may run stolen work).
    pub fn within<T>(&mut self, f: impl FnOnce() -> T) -> T {
        /// Puts back the outer casts, and these into `self`, even if `f` panics.
        struct Restore<'a> {
            outer: Option<Casts>,
            into: &'a mut KeptCasts,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let mine = KEPT.replace(self.outer.take());
                self.into.0 = mine.unwrap_or_default();
            }
        }
        let outer = KEPT.replace(Some(std::mem::take(&mut self.0)));
        let _restore = Restore { outer, into: self };
        f()
    }

    /// The number of weights kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(value: f32, id: ParamId, device: &Device) -> Param<Tensor<2>> {
        Param::initialized(id, Tensor::full([2, 3], value, device))
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        crate::tensor::floats(t.cast(FloatDType::F32))
    }

    /// A kept cast is the weight's value at its first use; outside `within`, each use casts
    /// the current value; with mixed precision off nothing is cast or kept. (`cast_weight`
    /// directly: entering mixed precision, which is the process's, would change the other
    /// unit tests' products.)
    #[test]
    fn kept_casts_last_while_within_runs() {
        let device = Device::flex();
        let id = ParamId::new();
        let mut kept = KeptCasts::default();
        kept.within(|| assert_eq!(values(lower_weight(&weight(1.5, id, &device))), [1.5; 6]));
        assert!(kept.is_empty(), "f32 keeps nothing");
        let f16 = FloatDType::F16;
        let first = kept.within(|| cast_weight(&weight(1.5, id, &device), f16));
        assert_eq!(first.dtype(), burn::tensor::DType::F16);
        assert_eq!(kept.len(), 1);
        let again = kept.within(|| cast_weight(&weight(2.5, id, &device), f16));
        assert_eq!(values(again), [1.5; 6], "the copy kept at the first use");
        let other = kept.within(|| cast_weight(&weight(3.0, ParamId::new(), &device), f16));
        assert_eq!((values(other), kept.len()), (vec![3.0; 6], 2));
        assert_eq!(
            values(cast_weight(&weight(2.5, id, &device), f16)),
            [2.5; 6]
        );
        let bf16 = kept.within(|| cast_weight(&weight(2.5, id, &device), FloatDType::BF16));
        assert_eq!(
            (bf16.dtype(), values(bf16), kept.len()),
            (burn::tensor::DType::BF16, vec![2.5; 6], 3)
        );
    }
}
