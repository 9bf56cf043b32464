//! Building blocks shared by the encoders and the decoder.

use anyhow::{bail, Result};
use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::Distribution;

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

    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => activation::gelu(x),
            // 0.5·x·(1 + tanh(z)) = x·sigmoid(2z), z = √(2/π)(x + 0.044715x³): the same
            // function as transformers' `gelu_new`, in 4× less time on the CPU backend
            // (burn's tanh and powf are slow there) and cheaper to differentiate.
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
