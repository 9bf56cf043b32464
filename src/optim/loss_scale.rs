//! Dynamic loss scaling for f16 mixed precision, as PyTorch's `GradScaler`: the loss is
//! multiplied by the scale before the backward pass, so that gradients flowing back through
//! f16 products stay above f16's smallest values, and the gradients are divided by it again as
//! they are summed. A step whose gradients overflowed (a non-finite norm) is skipped and the
//! scale halved; after [`LossScale::GROWTH_INTERVAL`] good steps in a row it is doubled.
//! bf16 has f32's range and needs none.

use crate::util::Precision;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScale {
    /// What the loss is multiplied by.
    pub scale: f32,
    /// Steps applied since the scale last changed.
    pub good_steps: u32,
}

impl LossScale {
    /// PyTorch's defaults.
    pub const INITIAL: f32 = 65536.0;
    pub const GROWTH_INTERVAL: u32 = 2000;

    /// The scaling products in `precision` need: f16's, none otherwise.
    pub fn for_products(precision: Precision) -> Option<Self> {
        (precision == Precision::F16).then_some(LossScale {
            scale: Self::INITIAL,
            good_steps: 0,
        })
    }

    /// Takes whether a step's gradients were finite; returns whether the step is applied.
    pub fn after_step(&mut self, finite: bool) -> bool {
        if !finite {
            // Never below 1: past that, scaling would only lose range.
            self.scale = (self.scale * 0.5).max(1.0);
            self.good_steps = 0;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps == Self::GROWTH_INTERVAL {
            // f32's range: scales past 2^64 would overflow any gradient.
            self.scale = (self.scale * 2.0).min(2f32.powi(64));
            self.good_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_f16_products_are_scaled() {
        assert!(LossScale::for_products(Precision::F32).is_none());
        assert!(LossScale::for_products(Precision::Bf16).is_none());
        assert_eq!(
            LossScale::for_products(Precision::F16).map(|s| s.scale),
            Some(65536.0)
        );
    }

    #[test]
    fn overflow_halves_and_good_steps_double() {
        let mut s = LossScale::for_products(Precision::F16).unwrap();
        assert!(s.after_step(true));
        assert!(!s.after_step(false));
        assert_eq!((s.scale, s.good_steps), (32768.0, 0));
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            assert!(s.after_step(true));
        }
        assert_eq!((s.scale, s.good_steps), (32768.0, 1999));
        assert!(s.after_step(true));
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        for _ in 0..40 {
            s.after_step(false);
        }
        assert_eq!(s.scale, 1.0);
    }
}
