//! The CLIP vision tower as transformers' `CLIPVisionModel`: patch embedding without bias,
//! class embedding, `pre_layrnorm` (transformers' spelling), pre-norm layers with quick_gelu,
//! and `post_layernorm` applied to the pooled CLS state only.
//!
//! The encoder layers are shared with the text tower (`clip_text.rs`), which runs them causally.
//!
//! Tensor names follow transformers 5 (`embeddings.*`, `encoder.layers.*`); checkpoints of
//! older versions and full `CLIPModel`s nest them under `vision_model.`, which loading strips.

use anyhow::Result;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, Initializer, LayerNorm, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::layers::{
    apply_linear, attend, embedding, layer_norm, linear, merge_heads, normal_param, split_heads,
    Activation, ActivationName,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "model_type")]
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "d224")]
    pub image_size: usize,
    #[serde(default = "d32")]
    pub patch_size: usize,
    #[serde(default = "act")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "init")]
    pub initializer_range: f64,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn model_type() -> String {
    "clip_vision_model".into()
}
fn d3() -> usize {
    3
}
fn d224() -> usize {
    224
}
fn d32() -> usize {
    32
}
/// transformers' CLIP defaults, shared by the vision and text configs.
pub(super) fn act() -> String {
    "quick_gelu".into()
}
pub(super) fn eps() -> f64 {
    1e-5
}
pub(super) fn init() -> f64 {
    0.02
}

impl ClipVisionConfig {
    pub fn validate(&self) -> Result<()> {
        super::layers::check_vision_shape(
            self.hidden_size,
            self.num_attention_heads,
            self.image_size,
            self.patch_size,
            &self.hidden_act,
        )
    }

    pub fn num_positions(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }
}

#[derive(Module, Debug)]
pub struct ClipEmbeddings {
    pub class_embedding: Param<Tensor<1>>,
    pub patch_embedding: Conv2d,
    pub position_embedding: Embedding,
}

#[derive(Module, Debug)]
pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
}

#[derive(Module, Debug)]
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: LayerNorm,
    pub mlp: ClipMlp,
    pub layer_norm2: LayerNorm,
}

impl ClipEncoderLayer {
    /// transformers' `CLIPEncoderLayer`: pre-norm attention then the pre-norm MLP.
    pub fn forward(&self, x: Tensor<3>, n_head: usize, act: Activation, causal: bool) -> Tensor<3> {
        let d = x.dims()[2];
        let scale = 1.0 / ((d / n_head) as f64).sqrt();
        let hs = self.layer_norm1.forward(x.clone());
        let a = &self.self_attn;
        let q = split_heads(apply_linear(&a.q_proj, hs.clone()), n_head);
        let k = split_heads(apply_linear(&a.k_proj, hs.clone()), n_head);
        let v = split_heads(apply_linear(&a.v_proj, hs), n_head);
        let x = x + apply_linear(
            &a.out_proj,
            merge_heads(attend(q, k, v, None, causal, scale)),
        );
        let hs = apply_linear(&self.mlp.fc1, self.layer_norm2.forward(x.clone()));
        x + apply_linear(&self.mlp.fc2, act.forward(hs))
    }
}

#[derive(Module, Debug)]
pub struct ClipEncoder {
    pub layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    /// transformers' `CLIPEncoder`: pre-norm layers, attention then MLP. The text tower
    /// attends `causal`ly, the vision tower to every patch.
    pub fn forward(&self, x: Tensor<3>, n_head: usize, act: Activation, causal: bool) -> Tensor<3> {
        self.layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, n_head, act, causal))
    }

    /// `layers` pre-norm layers of width `d`, initialised as transformers does.
    pub fn new(
        layers: usize,
        d: usize,
        intermediate: usize,
        eps: f64,
        std: f64,
        device: &Device,
    ) -> Self {
        let layers = (0..layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: linear(d, d, true, std, device),
                    k_proj: linear(d, d, true, std, device),
                    v_proj: linear(d, d, true, std, device),
                    out_proj: linear(d, d, true, std, device),
                },
                layer_norm1: layer_norm(d, eps, device),
                mlp: ClipMlp {
                    fc1: linear(d, intermediate, true, std, device),
                    fc2: linear(intermediate, d, true, std, device),
                },
                layer_norm2: layer_norm(d, eps, device),
            })
            .collect();
        Self { layers }
    }
}

#[derive(Module, Debug)]
pub struct ClipVisionModel {
    pub embeddings: ClipEmbeddings,
    pub pre_layrnorm: LayerNorm,
    pub encoder: ClipEncoder,
    pub post_layernorm: LayerNorm,
    #[module(skip)]
    pub n_head: usize,
    #[module(skip)]
    pub act: ActivationName,
}

impl ClipVisionModel {
    pub fn new(cfg: &ClipVisionConfig, device: &Device) -> Self {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let eps = cfg.layer_norm_eps;
        let patch_embedding =
            Conv2dConfig::new([cfg.num_channels, d], [cfg.patch_size, cfg.patch_size])
                .with_stride([cfg.patch_size, cfg.patch_size])
                .with_bias(false)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device);
        let encoder = ClipEncoder::new(
            cfg.num_hidden_layers,
            d,
            cfg.intermediate_size,
            eps,
            std,
            device,
        );
        Self {
            embeddings: ClipEmbeddings {
                class_embedding: normal_param([d], std, device),
                patch_embedding,
                position_embedding: embedding(cfg.num_positions(), d, std, device),
            },
            pre_layrnorm: layer_norm(d, eps, device),
            encoder,
            post_layernorm: layer_norm(d, eps, device),
            n_head: cfg.num_attention_heads,
            act: ActivationName(
                Activation::parse(&cfg.hidden_act).unwrap_or(Activation::QuickGelu),
            ),
        }
    }

    /// `last_hidden_state` `[B, 1 + patches, D]` (before `post_layernorm`, as transformers).
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        self.encoder
            .forward(self.embed(pixel_values), self.n_head, self.act.0, false)
    }

    /// transformers' `CLIPVisionEmbeddings` followed by `pre_layrnorm`: the input of the first
    /// encoder layer.
    pub fn embed(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        let vm = self;
        let patches = vm.embeddings.patch_embedding.forward(pixel_values);
        let [b, d, h, w] = patches.dims();
        let patches = patches.reshape([b, d, h * w]).swap_dims(1, 2);
        let cls = vm
            .embeddings
            .class_embedding
            .val()
            .reshape([1, 1, d])
            .expand([b, 1, d]);
        let positions =
            Tensor::<1, Int>::arange(0..(h * w + 1) as i64, &patches.device()).unsqueeze::<2>();
        let x = Tensor::cat(vec![cls, patches], 1)
            + vm.embeddings.position_embedding.forward(positions);
        vm.pre_layrnorm.forward(x)
    }

    /// Encoder layer `i`.
    pub fn layer(&self, i: usize, x: Tensor<3>) -> Tensor<3> {
        self.encoder.layers[i].forward(x, self.n_head, self.act.0, false)
    }

    /// transformers' `pooler_output`: `post_layernorm` of the CLS state.
    pub fn pooled(&self, last_hidden: Tensor<3>) -> Tensor<2> {
        let [b, _, d] = last_hidden.dims();
        self.post_layernorm
            .forward(last_hidden.narrow(1, 0, 1).reshape([b, d]))
    }
}
