//! CPU kernels: element-wise functions fused into one host pass (the GELU family), with the
//! vectorizable exp and erf they need. GPU backends never reach these (see
//! [`on_cpu_backend`]).

use burn::prelude::*;
use rayon::prelude::*;

/// 2·√(2/π) and 2·√(2/π)·0.044715.
pub const GELU_TANH_LINEAR: f64 = 1.595_769_121_605_731;
pub const GELU_TANH_CUBIC: f64 = 0.071_354_816_272_600_25;

/// Whether tensors on `device` live on burn's CPU backend (flex), where the fused host ops
/// apply; GPU backends use burn's composed ops instead.
pub fn on_cpu_backend(device: &Device) -> bool {
    device.clone().without_autodiff() == Device::flex()
}

/// An element-wise function with its derivative, for [`pointwise`]. A trait rather than a
/// closure so that the call inlines into the loop (and its AVX2 copy) and vectorizes.
pub trait Elementwise {
    /// f(x) and f′(x).
    fn eval(x: f32) -> (f32, f32);
}

/// `x·Φ(x)` and its derivative `Φ(x) + x·φ(x)` (transformers' `gelu`).
pub struct GeluErf;
impl Elementwise for GeluErf {
    #[inline(always)]
    fn eval(x: f32) -> (f32, f32) {
        let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        let pdf = exp(-0.5 * x * x)
            * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
        (x * cdf, cdf + x * pdf)
    }
}

/// `x·σ(u)`, u = 2√(2/π)(x + 0.044715x³), and its derivative (transformers' `gelu_new`).
pub struct GeluTanh;
impl Elementwise for GeluTanh {
    #[inline(always)]
    fn eval(x: f32) -> (f32, f32) {
        let (lin, cub) = (GELU_TANH_LINEAR as f32, GELU_TANH_CUBIC as f32);
        let s = 1.0 / (1.0 + exp(-(x * (lin + cub * x * x))));
        (x * s, s + x * s * (1.0 - s) * (lin + 3.0 * cub * x * x))
    }
}

/// `x·σ(1.702x)` and its derivative (CLIP's `quick_gelu`).
pub struct QuickGelu;
impl Elementwise for QuickGelu {
    #[inline(always)]
    fn eval(x: f32) -> (f32, f32) {
        let s = 1.0 / (1.0 + exp(-1.702 * x));
        (x * s, s + 1.702 * x * s * (1.0 - s))
    }
}

/// e^x in plain f32 arithmetic (Cephes' `expf`: x = n·ln 2 + r, a degree-7 polynomial for
/// e^r, 2^n from the exponent bits), so that a loop over it vectorizes; a libm call per
/// element was most of the GELUs' time. Relative error below 3e-7; 0 below −87 (−∞ included),
/// e^88 above 88.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let below = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    // Rounds to nearest (1.5·2²³ pushes the fraction out), without SSE4.1's roundps.
    const SHIFT: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    // ln 2 in two parts (the first exact in a few bits), so n·ln 2 loses nothing.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let er = p * (r * r) + r + 1.0;
    let e = er * f32::from_bits(((n as i32 + 127) << 23) as u32);
    if below {
        0.0
    } else {
        e
    }
}

/// erf(x), branch-free for the same reason as [`exp`]: Cephes' odd polynomial below 1 in
/// magnitude, Abramowitz and Stegun 7.1.26 (1 − poly(t)·e^(−x²)) above, where its error is
/// small against 1. Absolute error below 2.5e-7 in f32.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let near = x
        * ((((((7.853_861e-5 * z - 8.010_193_6e-4) * z + 5.188_327_7e-3) * z - 2.685_381_2e-2)
            * z
            + 0.112_835_85)
            * z
            - 0.376_126_26)
            * z
            + std::f32::consts::FRAC_2_SQRT_PI);
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let far = (1.0 - poly * exp(-z)).copysign(x);
    if a < 1.0 {
        near
    } else {
        far
    }
}

/// An element-wise function as one fused op: `f` gives the value and the derivative of each
/// element in one pass on the host, and the result is put on the tape as `x ⊙ f′ + c` with
/// f′ and `c = f − x ⊙ f′` constant, so its backward is one product with f′. burn's composed
/// GELU takes several passes forward and more backward (its erf is a scalar call per element
/// either way).
pub fn pointwise<const D: usize, F: Elementwise>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let shape = x.shape();
    let input = crate::tensor::floats(x.clone().detach());
    // Off the tape the value is all that is needed; on it, the constant c = f − x·f′, so that
    // x·f′ + c gives back f (to rounding) with gradient f′.
    let tracked = x.is_tracked();
    let mut value = vec![0f32; input.len()];
    let mut slope = vec![0f32; input.len()];
    const CHUNK: usize = 1 << 14;
    input
        .par_chunks(CHUNK)
        .zip(value.par_chunks_mut(CHUNK).zip(slope.par_chunks_mut(CHUNK)))
        .for_each(|(xs, (ys, ds))| apply::<F>(tracked, xs, ys, ds));
    if !tracked {
        return Tensor::from_data(TensorData::new(value, shape), &device);
    }
    let offset = Tensor::<D>::from_data(TensorData::new(value, shape.clone()), &device);
    let slope = Tensor::<D>::from_data(TensorData::new(slope, shape), &device);
    x * slope + offset
}

/// [`pointwise`]'s loop, compiled for AVX2 too where the CPU has it. Without FMA, so both
/// versions round every operation the same way and give the same bits.
fn apply<F: Elementwise>(tracked: bool, xs: &[f32], ys: &mut [f32], ds: &mut [f32]) {
    #[inline(always)]
    fn run<F: Elementwise>(tracked: bool, xs: &[f32], ys: &mut [f32], ds: &mut [f32]) {
        for ((&x, y), d) in xs.iter().zip(ys.iter_mut()).zip(ds.iter_mut()) {
            let (fx, dfx) = F::eval(x);
            *y = if tracked { fx - x * dfx } else { fx };
            *d = dfx;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn run_avx2<F: Elementwise>(
            tracked: bool,
            xs: &[f32],
            ys: &mut [f32],
            ds: &mut [f32],
        ) {
            run::<F>(tracked, xs, ys, ds)
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { run_avx2::<F>(tracked, xs, ys, ds) };
        }
    }
    run::<F>(tracked, xs, ys, ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectorizable_exp_and_erf_match_libm() {
        let mut worst_erf = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (fast, libm) = (exp(x), x.exp());
            assert!(
                (fast - libm).abs() <= 3e-7 * libm,
                "exp({x}) = {fast}, libm {libm}"
            );
            let x = -6.0 + 12.0 * i as f32 / 200_000.0;
            worst_erf = worst_erf.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst_erf <= 2.5e-7, "erf is off by up to {worst_erf}");
        assert_eq!((exp(-1000.0), exp(f32::NEG_INFINITY)), (0.0, 0.0));
        assert!(exp(f32::NAN).is_nan() && erf(f32::NAN).is_nan());
    }
}
