//! Building blocks shared by the encoders and the decoder.

use anyhow::{bail, Result};
use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::Distribution;

use super::autocast::{lower, lower_weight, raise};
pub use super::kernels::on_cpu_backend;
use super::kernels::{pointwise, GeluErf, GeluTanh, QuickGelu, GELU_TANH_CUBIC, GELU_TANH_LINEAR};

/// GPT-2's `Conv1D`: a linear layer whose weight is stored `[in, out]` (the transpose of
/// `nn.Linear`). A separate type so that checkpoint I/O never transposes it.
#[derive(Module, Debug)]
pub struct Conv1D {
    pub weight: Param<Tensor<2>>,
    pub bias: Param<Tensor<1>>,
    /// A LoRA adapter beside the weight (see [`super::lora`]); its tensors are named as PEFT
    /// names them, `<module>.lora_A.weight` and `<module>.lora_B.weight`.
    pub lora: Option<LoraAdapter>,
}

impl Conv1D {
    pub fn new(d_in: usize, d_out: usize, std: f64, device: &Device) -> Self {
        Self {
            weight: normal_param([d_in, d_out], std, device),
            bias: zeros_param([d_out], device),
            lora: None,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.lora {
            None => dense(x, lower_weight(&self.weight), Some(self.bias.val())),
            Some(lora) => {
                dense(x.clone(), lower_weight(&self.weight), Some(self.bias.val()))
                    + lora.forward(x)
            }
        }
    }

    /// `[in, out]`, the shape of the weight.
    pub fn shape(&self) -> [usize; 2] {
        let s = self.weight.lazy_shape().to_vec();
        [s[0], s[1]]
    }
}

/// LoRA's low-rank update of a frozen linear map, as PEFT's `LoraLayer`:
/// `x ↦ (α/r)·(x·A)·B`, A `[in, r]` and B `[r, out]` in burn's layout. PEFT stores them as
/// `nn.Linear` weights named `lora_A` `[r, in]` and `lora_B` `[out, r]`, which is what
/// checkpoint I/O writes.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    pub lora_a: Linear,
    pub lora_b: Linear,
    /// α / r.
    #[module(skip)]
    pub scaling: f64,
}

impl LoraAdapter {
    /// PEFT's default start: A ~ U(±1/√in) (Kaiming-uniform with a = √5), B = 0, so the adapted
    /// layer starts equal to the frozen one.
    pub fn new(d_in: usize, d_out: usize, rank: usize, scaling: f64, device: &Device) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        let a = move |device: &Device| {
            Tensor::random([d_in, rank], Distribution::Uniform(-bound, bound), device)
        };
        Self {
            lora_a: Linear {
                weight: param([d_in, rank], a, device),
                bias: None,
            },
            lora_b: Linear {
                weight: zeros_param([rank, d_out], device),
                bias: None,
            },
            scaling,
        }
    }

    pub fn rank(&self) -> usize {
        self.lora_a.weight.lazy_shape().to_vec()[1]
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let low = apply_linear(&self.lora_a, x);
        apply_linear(&self.lora_b, low) * self.scaling
    }

    /// The update as a weight `[in, out]`: what merging adds to the frozen one.
    pub fn delta(&self) -> Tensor<2> {
        self.lora_a.weight.val().matmul(self.lora_b.weight.val()) * self.scaling
    }
}

/// `x · weight + bias` over the last axis of `x` `[..., in]`, with `weight` `[in, out]`.
///
/// The leading axes are folded into one before the product. burn's `linear` keeps a
/// `[B, T, in]` input batched when T fills its tiles, and the weight's gradient is then a
/// `[B, in, out]` batch of products summed over B afterwards, each with only T terms:
/// twice the time of the single `[in, B·T] · [B·T, out]` product this form differentiates to.
/// Under mixed precision the product is computed in half precision ([`super::autocast`]); a
/// weight already in that type is used as it is.
pub fn dense<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = raise(lower(x.reshape([rows, d_in])).matmul(lower(weight)));
    let y = match bias {
        Some(b) => y + b.reshape([1, d_out]),
        None => y,
    };
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

/// A `burn::nn::Linear` applied through [`dense`] (its weight's half-precision copy kept
/// while decoding, [`super::autocast::KeptCasts`]).
pub fn apply_linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    dense(
        x,
        lower_weight(&layer.weight),
        layer.bias.as_ref().map(|b| b.val()),
    )
}

/// `nn.Linear` initialised as transformers does (normal weights, zero bias).
pub fn linear(d_in: usize, d_out: usize, bias: bool, std: f64, device: &Device) -> Linear {
    Linear {
        weight: normal_param([d_in, d_out], std, device),
        bias: bias.then(|| zeros_param([d_out], device)),
    }
}

thread_local! {
    static DEFERRED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `build` with the initial values of [`normal_param`] and [`zeros_param`] left undrawn
/// (burn draws them on first use, as it does for its own layers): for modules whose
/// parameters a checkpoint is about to replace, so that loading never pays for random
/// weights it throws away. Outside it, parameters are drawn as they are built, in order.
pub fn without_init<T>(build: impl FnOnce() -> T) -> T {
    let before = DEFERRED.with(|d| d.replace(true));
    let out = build();
    DEFERRED.with(|d| d.set(before));
    out
}

/// A parameter drawn from N(0, std²).
pub fn normal_param<const D: usize>(
    shape: [usize; D],
    std: f64,
    device: &Device,
) -> Param<Tensor<D>> {
    let draw = move |device: &Device| Tensor::random(shape, Distribution::Normal(0.0, std), device);
    param(shape, draw, device)
}

/// A parameter of zeros.
pub fn zeros_param<const D: usize>(shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    param(
        shape,
        move |device: &Device| Tensor::zeros(shape, device),
        device,
    )
}

fn param<const D: usize>(
    shape: [usize; D],
    init: impl FnOnce(&Device) -> Tensor<D> + Send + Sync + 'static,
    device: &Device,
) -> Param<Tensor<D>> {
    if DEFERRED.with(|d| d.get()) {
        Param::uninitialized(
            burn::module::ParamId::new(),
            move |device, require_grad| init(device).set_require_grad(require_grad),
            device.clone(),
            true,
            burn::tensor::Shape::from(shape),
        )
    } else {
        Param::from_tensor(init(device))
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

    /// The activation; the GELU family runs as one fused element-wise op, whose value and
    /// derivative are computed together off the tape and whose backward is one product with
    /// the derivative: in one host pass on the CPU backend ([`pointwise`]), of burn's
    /// element-wise ops elsewhere ([`Self::on_device`]).
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        if on_cpu_backend(&x.device()) {
            self.on_host(x)
        } else {
            self.on_device(x)
        }
    }

    fn on_host<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => pointwise::<D, GeluErf>(x),
            Self::GeluTanh => pointwise::<D, GeluTanh>(x),
            Self::QuickGelu => pointwise::<D, QuickGelu>(x),
            Self::Relu => activation::relu(x),
        }
    }

    /// [`pointwise`]'s form from burn's ops, for GPU backends: f and f′ off the tape
    /// (element-wise ops that burn's fusion can join into one kernel), attached as
    /// `x ⊙ f′ + (f − x ⊙ f′)`, so the tape keeps f′ alone instead of the composed form's
    /// intermediates.
    fn on_device<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        let v = x.clone().detach();
        // Each is x·s(x) with s ∈ (0, 1), and f′ = s + x·s′.
        let s = match self {
            Self::Relu => return activation::relu(x),
            Self::Gelu => ((v.clone() * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5,
            Self::GeluTanh => activation::sigmoid(
                v.clone() * (v.clone().square() * GELU_TANH_CUBIC + GELU_TANH_LINEAR),
            ),
            Self::QuickGelu => activation::sigmoid(v.clone() * 1.702),
        };
        let value = v.clone() * s.clone();
        // Off the tape (decoding, scoring) the derivative is not needed: GPUs are issued the
        // value's ops alone.
        if !x.is_tracked() {
            return value;
        }
        let ds = match self {
            Self::Gelu => {
                (v.clone().square() * -0.5).exp()
                    * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2)
            }
            Self::GeluTanh => {
                let du = v.clone().square() * (3.0 * GELU_TANH_CUBIC) + GELU_TANH_LINEAR;
                s.clone() * (s.clone().neg() + 1.0) * du
            }
            Self::QuickGelu => s.clone() * (s.clone().neg() + 1.0) * 1.702,
            Self::Relu => unreachable!("returned above"),
        };
        let slope = s + v.clone() * ds;
        let offset = value - v * slope.clone();
        x * slope + offset
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
/// Under mixed precision it is computed in half precision ([`super::autocast`]).
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
    raise(burn::tensor::module::attention(
        lower(q),
        lower(k),
        lower(v),
        mask,
        None,
        options,
    ))
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

    type Form = fn(Activation, Tensor<1>) -> Tensor<1>;

    /// The host form (CPU backend) and the device form (GPU backends), both run on the CPU.
    const FORMS: [(&str, Form); 2] = [
        ("host", Activation::on_host::<1>),
        ("device", Activation::on_device::<1>),
    ];

    #[test]
    fn fused_activations_equal_composed_values_and_gradients() {
        let device = Device::flex().autodiff();
        for (form, fused) in FORMS {
            for act in FUSED {
                let x1 = grid(&device).require_grad();
                let y1 = fused(act, x1.clone());
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
                    "{act:?} ({form}): values differ by {dv}, gradients by {dg}"
                );
                // Off the tape, the fused op returns the same values directly.
                let plain = fused(act, grid(&Device::flex()));
                let again = fused(act, grid(&device).require_grad());
                let d = (plain.to_device(&device) - again)
                    .abs()
                    .max()
                    .into_scalar::<f32>();
                assert!(d < 1e-6, "{act:?} ({form}): untracked path differs by {d}");
            }
        }
    }

    #[test]
    fn fused_activation_gradients_match_finite_differences() {
        let device = Device::flex().autodiff();
        let h = 1e-2f32;
        for (form, fused) in FORMS {
            for act in FUSED {
                let x = grid(&device).require_grad();
                let grads = fused(act, x.clone()).sum().backward();
                let g: Vec<f32> = x.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
                let value = |shift: f32| -> Vec<f32> {
                    let x = grid(&Device::flex()) + shift;
                    fused(act, x).into_data().try_into_vec().unwrap()
                };
                let (up, down) = (value(h), value(-h));
                for i in 0..g.len() {
                    let fd = (up[i] - down[i]) / (2.0 * h);
                    assert!(
                        (fd - g[i]).abs() < 5e-4,
                        "{act:?} ({form}) at element {i}: {fd} vs {}",
                        g[i]
                    );
                }
            }
        }
    }
}
