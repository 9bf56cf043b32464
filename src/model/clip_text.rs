//! The CLIP text tower as transformers' `CLIPTextModel`: token and position embeddings, the
//! encoder layers of the vision tower run causally, `final_layer_norm`, and the pooled output
//! taken at the end-of-text token. Only `CLIPModel` folders are read (`clip_score.rs`), whose
//! tensors nest it under `text_model.`.

use anyhow::{ensure, Result};
use burn::nn::{Embedding, LayerNorm};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::clip::{act, eps, init, ClipEncoder};
use super::layers::{embedding, layer_norm, Activation, ActivationName};

/// `text_config` of a `CLIPModel`; the defaults are transformers' `CLIPTextConfig`'s (those of
/// openai/clip-vit-base-patch32), which configs may leave out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "vocab")]
    pub vocab_size: usize,
    #[serde(default = "d512")]
    pub hidden_size: usize,
    #[serde(default = "d2048")]
    pub intermediate_size: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d8")]
    pub num_attention_heads: usize,
    #[serde(default = "d77")]
    pub max_position_embeddings: usize,
    #[serde(default = "act")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "init")]
    pub initializer_range: f64,
    /// 2 in configs written before transformers#24773, which pool at the highest token id.
    #[serde(default = "eos")]
    pub eos_token_id: u32,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn vocab() -> usize {
    49408
}
fn d512() -> usize {
    512
}
fn d2048() -> usize {
    2048
}
fn d12() -> usize {
    12
}
fn d8() -> usize {
    8
}
fn d77() -> usize {
    77
}
fn eos() -> u32 {
    49407
}

impl ClipTextConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size ({}) must be a multiple of num_attention_heads ({})",
            self.hidden_size,
            self.num_attention_heads
        );
        ensure!(
            self.max_position_embeddings >= 2,
            "max_position_embeddings ({}) leaves no room for a start and an end token",
            self.max_position_embeddings
        );
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }
}

#[derive(Module, Debug)]
pub struct ClipTextEmbeddings {
    pub token_embedding: Embedding,
    pub position_embedding: Embedding,
}

#[derive(Module, Debug)]
pub struct ClipTextModel {
    pub embeddings: ClipTextEmbeddings,
    pub encoder: ClipEncoder,
    pub final_layer_norm: LayerNorm,
    #[module(skip)]
    pub n_head: usize,
    #[module(skip)]
    pub act: ActivationName,
    #[module(skip)]
    pub eos_token_id: u32,
}

impl ClipTextModel {
    pub fn new(cfg: &ClipTextConfig, device: &Device) -> Self {
        let (d, std, eps) = (cfg.hidden_size, cfg.initializer_range, cfg.layer_norm_eps);
        Self {
            embeddings: ClipTextEmbeddings {
                token_embedding: embedding(cfg.vocab_size, d, std, device),
                position_embedding: embedding(cfg.max_position_embeddings, d, std, device),
            },
            encoder: ClipEncoder::new(
                cfg.num_hidden_layers,
                d,
                cfg.intermediate_size,
                eps,
                std,
                device,
            ),
            final_layer_norm: layer_norm(d, eps, device),
            n_head: cfg.num_attention_heads,
            act: ActivationName(
                Activation::parse(&cfg.hidden_act).unwrap_or(Activation::QuickGelu),
            ),
            eos_token_id: cfg.eos_token_id,
        }
    }

    /// `last_hidden_state` `[B, T, D]`, after `final_layer_norm` as transformers returns it.
    /// Padding needs no mask: it follows the end-of-text token, which the causal mask keeps
    /// from seeing it, and only that token's state is pooled.
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, t] = input_ids.dims();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &input_ids.device()).unsqueeze::<2>();
        let x = self.embeddings.token_embedding.forward(input_ids)
            + self.embeddings.position_embedding.forward(positions);
        let x = self.encoder.forward(x, self.n_head, self.act.0, true);
        self.final_layer_norm.forward(x)
    }

    /// The position pooled in each row of `ids`, as transformers chooses it: legacy configs
    /// (`eos_token_id` 2) take the highest id (OpenAI's end token is the last of the
    /// vocabulary), others the first end-of-text token; either way the first such position,
    /// and 0 where none is found, as `argmax` gives.
    pub fn pooled_positions(&self, ids: &[Vec<u32>]) -> Vec<usize> {
        ids.iter()
            .map(|row| {
                if self.eos_token_id == 2 {
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&x| x == max).unwrap_or(0)
                } else {
                    row.iter()
                        .position(|&x| x == self.eos_token_id)
                        .unwrap_or(0)
                }
            })
            .collect()
    }

    /// transformers' `pooler_output` `[B, D]`: the state at each row's `positions`.
    pub fn pooled(&self, last_hidden: Tensor<3>, positions: &[usize]) -> Tensor<2> {
        let [b, _, d] = last_hidden.dims();
        let index: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b]), &last_hidden.device())
            .reshape([b, 1, 1])
            .expand([b, 1, d]);
        last_hidden.gather(1, index).reshape([b, d])
    }
}
