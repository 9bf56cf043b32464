//! ViT as transformers' `ViTModel`: patch-embedding convolution, CLS token, learned position
//! embeddings, pre-norm transformer layers, final layer norm (and the optional pooler, kept
//! only so that checkpoints round-trip).

use anyhow::Result;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use super::layers::{
    apply_linear, attend, layer_norm, linear, merge_heads, split_heads, Activation,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViTConfig {
    #[serde(default = "model_type")]
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "act")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d224")]
    pub image_size: usize,
    #[serde(default = "d16")]
    pub patch_size: usize,
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    #[serde(default = "init")]
    pub initializer_range: f64,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn model_type() -> String {
    "vit".into()
}
fn act() -> String {
    "gelu".into()
}
fn eps() -> f64 {
    1e-12
}
fn d224() -> usize {
    224
}
fn d16() -> usize {
    16
}
fn d3() -> usize {
    3
}
fn yes() -> bool {
    true
}
fn init() -> f64 {
    0.02
}

impl ViTConfig {
    pub fn new(
        image_size: usize,
        patch_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
    ) -> Self {
        Self {
            model_type: model_type(),
            hidden_size,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden_size,
            hidden_act: act(),
            layer_norm_eps: eps(),
            image_size,
            patch_size,
            num_channels: 3,
            qkv_bias: true,
            initializer_range: init(),
            extra: Default::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        super::layers::check_vision_shape(
            self.hidden_size,
            self.num_attention_heads,
            self.image_size,
            self.patch_size,
            &self.hidden_act,
        )
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

#[derive(Module, Debug)]
pub struct ViTPatchEmbeddings {
    pub projection: Conv2d,
}

#[derive(Module, Debug)]
pub struct ViTEmbeddings {
    pub cls_token: Param<Tensor<3>>,
    pub position_embeddings: Param<Tensor<3>>,
    pub patch_embeddings: ViTPatchEmbeddings,
}

#[derive(Module, Debug)]
pub struct ViTSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
}

#[derive(Module, Debug)]
pub struct ViTDense {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct ViTAttention {
    pub attention: ViTSelfAttention,
    pub output: ViTDense,
}

#[derive(Module, Debug)]
pub struct ViTLayer {
    pub attention: ViTAttention,
    pub intermediate: ViTDense,
    pub output: ViTDense,
    pub layernorm_before: LayerNorm,
    pub layernorm_after: LayerNorm,
}

#[derive(Module, Debug)]
pub struct ViTEncoder {
    pub layer: Vec<ViTLayer>,
}

#[derive(Module, Debug)]
pub struct ViTModel {
    pub embeddings: ViTEmbeddings,
    pub encoder: ViTEncoder,
    pub layernorm: LayerNorm,
    /// `pooler.dense`: unused for captioning; present when the checkpoint has it.
    pub pooler: Option<ViTDense>,
    #[module(skip)]
    pub n_head: usize,
    #[module(skip)]
    pub act: super::layers::ActivationName,
}

impl ViTModel {
    pub fn new(cfg: &ViTConfig, with_pooler: bool, device: &Device) -> Self {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let eps = cfg.layer_norm_eps;
        let normal = |shape: [usize; 3]| {
            Param::from_tensor(Tensor::random(
                shape,
                Distribution::Normal(0.0, std),
                device,
            ))
        };
        let projection = Conv2dConfig::new([cfg.num_channels, d], [cfg.patch_size, cfg.patch_size])
            .with_stride([cfg.patch_size, cfg.patch_size])
            .with_initializer(Initializer::Normal { mean: 0.0, std })
            .init(device);
        let layer = (0..cfg.num_hidden_layers)
            .map(|_| ViTLayer {
                attention: ViTAttention {
                    attention: ViTSelfAttention {
                        query: linear(d, d, cfg.qkv_bias, std, device),
                        key: linear(d, d, cfg.qkv_bias, std, device),
                        value: linear(d, d, cfg.qkv_bias, std, device),
                    },
                    output: ViTDense {
                        dense: linear(d, d, true, std, device),
                    },
                },
                intermediate: ViTDense {
                    dense: linear(d, cfg.intermediate_size, true, std, device),
                },
                output: ViTDense {
                    dense: linear(cfg.intermediate_size, d, true, std, device),
                },
                layernorm_before: layer_norm(d, eps, device),
                layernorm_after: layer_norm(d, eps, device),
            })
            .collect();
        Self {
            embeddings: ViTEmbeddings {
                cls_token: normal([1, 1, d]),
                position_embeddings: normal([1, cfg.num_patches() + 1, d]),
                patch_embeddings: ViTPatchEmbeddings { projection },
            },
            encoder: ViTEncoder { layer },
            layernorm: layer_norm(d, eps, device),
            pooler: with_pooler.then(|| ViTDense {
                dense: linear(d, d, true, std, device),
            }),
            n_head: cfg.num_attention_heads,
            act: super::layers::ActivationName(
                Activation::parse(&cfg.hidden_act).unwrap_or(Activation::Gelu),
            ),
        }
    }

    /// `last_hidden_state` `[B, 1 + patches, D]` for `pixel_values` `[B, C, H, W]`.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        let patches = self
            .embeddings
            .patch_embeddings
            .projection
            .forward(pixel_values); // [B, D, h, w]
        let [b, d, h, w] = patches.dims();
        let patches = patches.reshape([b, d, h * w]).swap_dims(1, 2);
        let cls = self.embeddings.cls_token.val().expand([b, 1, d]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + self.embeddings.position_embeddings.val();
        for layer in &self.encoder.layer {
            let h = layer.layernorm_before.forward(x.clone());
            let sa = &layer.attention.attention;
            let q = split_heads(apply_linear(&sa.query, h.clone()), self.n_head);
            let k = split_heads(apply_linear(&sa.key, h.clone()), self.n_head);
            let v = split_heads(apply_linear(&sa.value, h), self.n_head);
            let scale = 1.0 / ((d / self.n_head) as f64).sqrt();
            let attn = merge_heads(attend(q, k, v, None, false, scale));
            x = x + apply_linear(&layer.attention.output.dense, attn);
            let h = apply_linear(
                &layer.intermediate.dense,
                layer.layernorm_after.forward(x.clone()),
            );
            x = x + apply_linear(&layer.output.dense, self.act.0.forward(h));
        }
        self.layernorm.forward(x)
    }

    /// transformers' `pooler_output`: tanh(dense(CLS)).
    pub fn pooled(&self, last_hidden: Tensor<3>) -> Option<Tensor<2>> {
        let [b, _, d] = last_hidden.dims();
        self.pooler
            .as_ref()
            .map(|p| apply_linear(&p.dense, last_hidden.narrow(1, 0, 1).reshape([b, d])).tanh())
    }
}
