//! Building blocks shared by the encoders and the decoder.

use anyhow::{bail, Result};
use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::Distribution;
use rayon::prelude::*;

/// GPT-2's `Conv1D`: a linear layer whose weight is stored `[in, out]` (the transpose of
/// `nn.Linear`). A separate type so that checkpoint I/O never transposes it.
#[derive(Module, Debug)]
pub struct Conv1D {
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>,
}

impl Conv1D {
    pub fn new(d_in: usize, d_out: usize, std: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::random(
                [d_in, d_out],
                Distribution::Normal(0.0, std),
                device,
            )),
            bias: Param::from_tensor(Tensor::zeros([d_out], device)),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        dense(x, self.weight.val(), Some(self.bias.val()))
    }
}

/// `x · weight + bias` over the last axis of `x` `[..., in]`, with `weight` `[in, out]`.
///
/// The leading axes are folded into one before the product. burn's `linear` keeps a
/// `[B, T, in]` input batched when T fills its tiles, and the weight's gradient is then a
/// `[B, in, out]` batch of products summed over B afterwards, each with only T terms:
/// twice the time of the single `[in, B·T] · [B·T, out]` product this form differentiates to.
pub fn dense<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = x.reshape([rows, d_in]).matmul(weight);
    let y = match bias {
        Some(b) => y + b.reshape([1, d_out]),
        None => y,
    };
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

/// A `burn::nn::Linear` applied through [`dense`].
pub fn apply_linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    dense(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// `nn.Linear` initialised as transformers does (normal weights, zero bias).
pub fn linear(d_in: usize, d_out: usize, bias: bool, std: f64, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(Tensor::random(
            [d_in, d_out],
            Distribution::Normal(0.0, std),
            device,
        )),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

pub fn layer_norm(d: usize, eps: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

pub fn embedding(n: usize, d: usize, std: f64, device: &Device) -> Embedding {
    EmbeddingConfig::new(n, d)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

/// 2·√(2/π) and 2·√(2/π)·0.044715.
const GELU_TANH_LINEAR: f64 = 1.595_769_121_605_731;
const GELU_TANH_CUBIC: f64 = 0.071_354_816_272_600_25;

/// The activation functions transformers names in `config.json` (`ACT2FN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact erf GELU (`gelu`).
    Gelu,
    /// Tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// `x * sigmoid(1.702 x)` (CLIP's `quick_gelu`).
    QuickGelu,
    Relu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            other => bail!("unsupported activation function `{other}` (supported: gelu, gelu_new, gelu_pytorch_tanh, quick_gelu, relu)"),
        })
    }

    /// The activation; on the CPU backend the GELU family runs as one fused element-wise op
    /// ([`pointwise`]), elsewhere as burn's composed ops ([`Self::composed`]).
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        if !on_cpu_backend(&x.device()) {
            return self.composed(x);
        }
        match self {
            Self::Gelu => pointwise::<D, GeluErf>(x),
            Self::GeluTanh => pointwise::<D, GeluTanh>(x),
            Self::QuickGelu => pointwise::<D, QuickGelu>(x),
            Self::Relu => activation::relu(x),
        }
    }

    /// The activation composed of burn's differentiable ops (GPU backends, and the reference
    /// of the fused forms in the tests).
    pub fn composed<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => activation::gelu(x),
            // 0.5·x·(1 + tanh(z)) = x·sigmoid(2z), z = √(2/π)(x + 0.044715x³): the same
            // function as transformers' `gelu_new`, cheaper than burn's tanh and powf.
            Self::GeluTanh => {
                let z = x.clone() * (x.clone() * x.clone() * GELU_TANH_CUBIC + GELU_TANH_LINEAR);
                x * activation::sigmoid(z)
            }
            Self::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Self::Relu => activation::relu(x),
        }
    }
}

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
    let input = x
        .clone()
        .detach()
        .into_data()
        .try_into_vec::<f32>()
        .expect("activations are f32");
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

/// Checks shared by the patch-based vision transformers (ViT, CLIP).
pub fn check_vision_shape(
    hidden: usize,
    heads: usize,
    image: usize,
    patch: usize,
    act: &str,
) -> Result<()> {
    anyhow::ensure!(
        heads > 0 && hidden.is_multiple_of(heads),
        "hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads})"
    );
    anyhow::ensure!(
        patch > 0 && image.is_multiple_of(patch),
        "image_size ({image}) must be a multiple of patch_size ({patch})"
    );
    Activation::parse(act)?;
    Ok(())
}

/// The activation stored on a module (a plain value, not a parameter).
#[derive(Debug, Clone)]
pub struct ActivationName(pub Activation);

/// `[B, T, H*Dh]` -> `[B, H, T, Dh]`.
pub fn split_heads(x: Tensor<3>, n_head: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, n_head, d / n_head]).swap_dims(1, 2)
}

/// `[B, H, T, Dh]` -> `[B, T, H*Dh]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, t, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, h * dh])
}

/// Scaled dot-product attention; `key_padding` is `[B, Tk]`, true where a key must be ignored.
pub fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    key_padding: Option<&Tensor<2, Bool>>,
    causal: bool,
    scale: f64,
) -> Tensor<4> {
    let [b, h, tq, _] = q.dims();
    let tk = k.dims()[2];
    let mask = key_padding.map(|m| m.clone().reshape([b, 1, 1, tk]).expand([b, h, tq, tk]));
    let options = burn::tensor::ops::AttentionModuleOptions {
        scale: Some(scale),
        softcap: None,
        is_causal: causal,
    };
    burn::tensor::module::attention(q, k, v, mask, None, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUSED: [Activation; 3] = [
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::QuickGelu,
    ];

    /// Inputs over the range where the GELUs bend, and beyond.
    fn grid(device: &Device) -> Tensor<1> {
        let xs: Vec<f32> = (0..241).map(|i| -8.0 + i as f32 / 15.0).collect();
        Tensor::from_data(TensorData::new(xs, [241]), device)
    }

    /// Weights of a downstream loss, so every element's gradient is tested with its own scale.
    fn upstream(device: &Device) -> Tensor<1> {
        let ws: Vec<f32> = (0..241)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0)
            .collect();
        Tensor::from_data(TensorData::new(ws, [241]), device)
    }

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

    #[test]
    fn fused_activations_equal_composed_values_and_gradients() {
        let device = Device::flex().autodiff();
        for act in FUSED {
            let x1 = grid(&device).require_grad();
            let y1 = act.forward(x1.clone());
            let g1 = (y1.clone() * upstream(&device)).sum().backward();
            let x2 = grid(&device).require_grad();
            let y2 = act.composed(x2.clone());
            let g2 = (y2.clone() * upstream(&device)).sum().backward();
            let dv = (y1 - y2).abs().max().into_scalar::<f32>();
            let dg = (x1.grad(&g1).unwrap() - x2.grad(&g2).unwrap())
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(
                dv < 1e-5 && dg < 1e-5,
                "{act:?}: values differ by {dv}, gradients by {dg}"
            );
            // Off the tape, the fused op returns the same values directly.
            let plain = act.forward(grid(&Device::flex()));
            let again = act.forward(grid(&device).require_grad());
            let d = (plain.to_device(&device) - again)
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(d < 1e-6, "{act:?}: untracked path differs by {d}");
        }
    }

    #[test]
    fn fused_activation_gradients_match_finite_differences() {
        let device = Device::flex().autodiff();
        let h = 1e-2f32;
        for act in FUSED {
            let x = grid(&device).require_grad();
            let grads = act.forward(x.clone()).sum().backward();
            let g: Vec<f32> = x.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
            let value = |shift: f32| -> Vec<f32> {
                let x = grid(&Device::flex()) + shift;
                act.forward(x).into_data().try_into_vec().unwrap()
            };
            let (up, down) = (value(h), value(-h));
            for i in 0..g.len() {
                let fd = (up[i] - down[i]) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() < 5e-4,
                    "{act:?} at element {i}: {fd} vs {}",
                    g[i]
                );
            }
        }
    }
}
