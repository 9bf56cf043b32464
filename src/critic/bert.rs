//! BERT (transformers' `BertModel`): the text encoder of the style critic, small and trained
//! here, or pretrained (BERT, MiniLM) from a Hugging Face folder. Post-LayerNorm blocks;
//! field names follow transformers' module names (`attention.self` is `self_` here, `self`
//! being a Rust keyword; the checkpoint name mapping restores it).

#![allow(non_snake_case)] // transformers names BERT's norms `LayerNorm`.

use anyhow::Result;
use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::tokenizer::TextTokenizer;
use crate::model::layers::{
    apply_linear, attend, embedding, layer_norm, linear, merge_heads, split_heads, Activation,
    ActivationName,
};

/// `config.json` of a BERT-family model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    #[serde(default = "bert")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default = "positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "init")]
    pub initializer_range: f64,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn bert() -> String {
    "bert".into()
}
fn gelu() -> String {
    "gelu".into()
}
fn positions() -> usize {
    512
}
fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}
fn init() -> f64 {
    0.02
}

impl BertConfig {
    pub fn new(
        vocab_size: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        positions: usize,
    ) -> Self {
        BertConfig {
            model_type: bert(),
            vocab_size,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden,
            hidden_act: gelu(),
            max_position_embeddings: positions,
            type_vocab_size: 2,
            layer_norm_eps: eps(),
            pad_token_id: 0,
            initializer_range: init(),
            extra: Default::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size {} is not divisible by num_attention_heads {}",
            self.hidden_size,
            self.num_attention_heads
        );
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }
}

#[derive(Module, Debug)]

pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub LayerNorm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
}

#[derive(Module, Debug)]

pub struct BertOutput {
    pub dense: Linear,
    pub LayerNorm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct BertAttention {
    pub self_: BertSelfAttention,
    pub output: BertOutput,
}

#[derive(Module, Debug)]
pub struct BertIntermediate {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    #[module(skip)]
    pub n_head: usize,
    #[module(skip)]
    pub act: ActivationName,
}

impl BertModel {
    pub fn new(cfg: &BertConfig, device: &Device) -> Self {
        let (d, std, eps) = (cfg.hidden_size, cfg.initializer_range, cfg.layer_norm_eps);
        let output = |d_in: usize| BertOutput {
            dense: linear(d_in, d, true, std, device),
            LayerNorm: layer_norm(d, eps, device),
        };
        let layer = (0..cfg.num_hidden_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_: BertSelfAttention {
                        query: linear(d, d, true, std, device),
                        key: linear(d, d, true, std, device),
                        value: linear(d, d, true, std, device),
                    },
                    output: output(d),
                },
                intermediate: BertIntermediate {
                    dense: linear(d, cfg.intermediate_size, true, std, device),
                },
                output: output(cfg.intermediate_size),
            })
            .collect();
        BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: embedding(cfg.vocab_size, d, std, device),
                position_embeddings: embedding(cfg.max_position_embeddings, d, std, device),
                token_type_embeddings: embedding(cfg.type_vocab_size, d, std, device),
                LayerNorm: layer_norm(d, eps, device),
            },
            encoder: BertEncoder { layer },
            n_head: cfg.num_attention_heads,
            act: ActivationName(Activation::parse(&cfg.hidden_act).unwrap_or(Activation::Gelu)),
        }
    }

    /// `last_hidden_state` `[B, T, D]` for token ids `[B, T]`; `attention_mask` 1 = token,
    /// 0 = padding. Token types are all 0 (single sentences).
    pub fn forward(&self, ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .expand([b, t]);
        let types = Tensor::<2, Int>::zeros([b, t], &device);
        let e = &self.embeddings;
        let mut x = e.LayerNorm.forward(
            e.word_embeddings.forward(ids)
                + e.position_embeddings.forward(positions)
                + e.token_type_embeddings.forward(types),
        );
        let padding = attention_mask.equal_elem(0);
        let d = x.dims()[2];
        let scale = 1.0 / ((d / self.n_head) as f64).sqrt();
        for layer in &self.encoder.layer {
            let sa = &layer.attention.self_;
            let q = split_heads(apply_linear(&sa.query, x.clone()), self.n_head);
            let k = split_heads(apply_linear(&sa.key, x.clone()), self.n_head);
            let v = split_heads(apply_linear(&sa.value, x.clone()), self.n_head);
            let attn = merge_heads(attend(q, k, v, Some(&padding), false, scale));
            let out = &layer.attention.output;
            x = out.LayerNorm.forward(apply_linear(&out.dense, attn) + x);
            let h = self
                .act
                .0
                .forward(apply_linear(&layer.intermediate.dense, x.clone()));
            x = layer
                .output
                .LayerNorm
                .forward(apply_linear(&layer.output.dense, h) + x);
        }
        x
    }
}

/// The mean of the token states over the attention mask: `[B, T, D]` → `[B, D]`.
pub fn mean_pool(hidden: Tensor<3>, attention_mask: Tensor<2, Int>) -> Tensor<2> {
    let [b, t, d] = hidden.dims();
    let m = attention_mask.float().reshape([b, t, 1]);
    (hidden * m.clone()).sum_dim(1).reshape([b, d]) / m.sum_dim(1).reshape([b, 1]).clamp_min(1.0)
}

/// Token ids and attention mask for `texts`, each cut to `max_tokens` and right-padded with
/// `pad`; with `special_tokens`, the tokenizer's own ([CLS] ... [SEP] for BERT).
pub fn encode_texts(
    tokenizer: &TextTokenizer,
    texts: &[&str],
    special_tokens: bool,
    max_tokens: usize,
    pad: u32,
    device: &Device,
) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
    let mut rows = Vec::with_capacity(texts.len());
    for t in texts {
        let mut ids = tokenizer.encode_with(t, special_tokens)?;
        ids.truncate(max_tokens);
        if ids.is_empty() {
            ids.push(pad);
        }
        rows.push(ids);
    }
    let t = rows.iter().map(Vec::len).max().unwrap_or(1);
    let b = rows.len();
    let mut ids = vec![pad as i64; b * t];
    let mut mask = vec![0i64; b * t];
    for (i, r) in rows.iter().enumerate() {
        for (j, &x) in r.iter().enumerate() {
            ids[i * t + j] = x as i64;
            mask[i * t + j] = 1;
        }
    }
    Ok((
        Tensor::from_data(TensorData::new(ids, [b, t]), device),
        Tensor::from_data(TensorData::new(mask, [b, t]), device),
    ))
}
