//! GPT-2 as transformers' `GPT2LMHeadModel`, with the optional cross-attention block that
//! `add_cross_attention=True` adds to every layer (the decoder of `VisionEncoderDecoderModel`).
//! Field names mirror transformers' module names, so parameter paths are checkpoint names.

use anyhow::{Context, Result};
use burn::nn::{Embedding, LayerNorm};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::autocast::{lower, KeptCasts};
use super::layers::{
    attend, dense, embedding, layer_norm, merge_heads, split_heads, Activation, ActivationName,
    Conv1D,
};

/// The fields of transformers' `GPT2Config` that change the computation; every other field of
/// a `config.json` is kept in `extra` and written back unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gpt2Config {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    #[serde(default = "d_1024")]
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default)]
    pub add_cross_attention: bool,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_model_type() -> String {
    "gpt2".into()
}
fn d_1024() -> usize {
    1024
}
fn default_act() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_init() -> f64 {
    0.02
}

impl Gpt2Config {
    pub fn new(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> Self {
        Self {
            model_type: default_model_type(),
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            activation_function: default_act(),
            layer_norm_epsilon: default_eps(),
            add_cross_attention: true,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            initializer_range: default_init(),
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            extra: Default::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.model_type == "gpt2",
            "model_type is `{}`, expected `gpt2`",
            self.model_type
        );
        anyhow::ensure!(
            self.n_head > 0 && self.n_embd.is_multiple_of(self.n_head),
            "n_embd ({}) must be a multiple of n_head ({})",
            self.n_embd,
            self.n_head
        );
        anyhow::ensure!(
            self.vocab_size >= 2 && self.n_positions >= 2 && self.n_layer >= 1,
            "vocab_size ({}) and n_positions ({}) must be at least 2, n_layer ({}) at least 1",
            self.vocab_size,
            self.n_positions,
            self.n_layer
        );
        Activation::parse(&self.activation_function)?;
        Ok(())
    }
}

/// Self-attention (`attn`) or, with `q_attn`, cross-attention (`crossattention`): as
/// transformers' `GPT2Attention`, where cross-attention projects queries with `q_attn` and
/// keys/values of the encoder states with `c_attn` (`[d, 2d]`).
#[derive(Module, Debug)]
pub struct Gpt2Attention {
    pub c_attn: Conv1D,
    pub q_attn: Option<Conv1D>,
    pub c_proj: Conv1D,
    #[module(skip)]
    pub n_head: usize,
    #[module(skip)]
    pub scale: f64,
}

/// Keys and values of one attention layer, `[B, H, T, Dh]` each.
#[derive(Debug, Clone)]
pub struct KeyValue {
    pub k: Tensor<4>,
    pub v: Tensor<4>,
}

impl KeyValue {
    /// The keys and values for rows showing the images `images` (indices into the first
    /// axis, one per row): these tensors themselves when the rows are every image in order,
    /// each repeated the same number of times (the layout `Gpt2Attention::forward_cross`
    /// attends to without copies), else the rows gathered.
    pub fn for_rows(&self, images: &[usize]) -> Self {
        let n = self.k.dims()[0];
        let per_image = images.len().checked_div(n).unwrap_or(0);
        let grouped = per_image > 0
            && images.len() == per_image * n
            && images.iter().enumerate().all(|(r, &i)| i == r / per_image);
        if grouped {
            return self.clone();
        }
        let index = crate::tensor::index_tensor(images, &self.k.device());
        KeyValue {
            k: self.k.clone().select(0, index.clone()),
            v: self.v.clone().select(0, index),
        }
    }
}

impl Gpt2Attention {
    fn new(cfg: &Gpt2Config, layer: usize, cross: bool, device: &Device) -> Self {
        let d = cfg.n_embd;
        let std = cfg.initializer_range;
        // transformers scales output projections by 1/sqrt(2 n_layer) at init (GPT-2 paper).
        let proj_std = std / (2.0 * cfg.n_layer as f64).sqrt();
        let mut scale = if cfg.scale_attn_weights {
            1.0 / ((d / cfg.n_head) as f64).sqrt()
        } else {
            1.0
        };
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        Self {
            c_attn: Conv1D::new(d, if cross { 2 * d } else { 3 * d }, std, device),
            q_attn: cross.then(|| Conv1D::new(d, d, std, device)),
            c_proj: Conv1D::new(d, d, proj_std, device),
            n_head: cfg.n_head,
            scale,
        }
    }

    /// Causal self-attention over `x` `[B, T, D]`. With a cache, `x` holds only the new
    /// positions and the cache receives their keys and values.
    pub fn forward_self(
        &self,
        x: Tensor<3>,
        key_padding: Option<&Tensor<2, Bool>>,
        cache: Option<&mut Option<KeyValue>>,
    ) -> Tensor<3> {
        let d = x.dims()[2];
        let qkv = self.c_attn.forward(x);
        let q = split_heads(qkv.clone().narrow(2, 0, d), self.n_head);
        let mut k = split_heads(qkv.clone().narrow(2, d, d), self.n_head);
        let mut v = split_heads(qkv.narrow(2, 2 * d, d), self.n_head);
        if let Some(slot) = cache {
            if let Some(past) = slot.take() {
                k = Tensor::cat(vec![past.k, k], 2);
                v = Tensor::cat(vec![past.v, v], 2);
            }
            *slot = Some(KeyValue {
                k: k.clone(),
                v: v.clone(),
            });
        }
        let y = attend(q, k, v, key_padding, true, self.scale);
        self.c_proj.forward(merge_heads(y))
    }

    /// Keys and values of the encoder states `[B, S, D]`, computed once per image.
    pub fn cross_kv(&self, encoder_hidden: Tensor<3>) -> KeyValue {
        let d = encoder_hidden.dims()[2];
        let kv = self.c_attn.forward(encoder_hidden);
        KeyValue {
            k: contiguous_heads(split_heads(kv.clone().narrow(2, 0, d), self.n_head)),
            v: contiguous_heads(split_heads(kv.narrow(2, d, d), self.n_head)),
        }
    }

    /// Cross-attention of `x` `[B, T, D]` to the keys and values `kv` of I images, where
    /// B = I·g and rows `i·g .. (i+1)·g` show image i (g = 1: one row per image). The g rows
    /// of an image are its queries side by side, `[I, g·T, D]`: each query attends to the
    /// image's keys alone, so the result is the same as with the keys repeated for every row,
    /// without the copies (nor, in training, the sum of their gradients back over the rows).
    pub fn forward_cross(&self, x: Tensor<3>, kv: &KeyValue) -> Tensor<3> {
        let q_attn = self.q_attn.as_ref().expect("cross-attention has q_attn");
        let [b, t, d] = x.dims();
        let images = kv.k.dims()[0];
        assert!(
            images > 0 && b.is_multiple_of(images),
            "{b} decoder rows cannot share the keys of {images} images"
        );
        let q = q_attn.forward(x).reshape([images, b / images * t, d]);
        let y = attend(
            split_heads(q, self.n_head),
            kv.k.clone(),
            kv.v.clone(),
            None,
            false,
            self.scale,
        );
        self.c_proj.forward(merge_heads(y).reshape([b, t, d]))
    }
}

/// `[B, H, S, Dh]` heads stored contiguously. The cross-attention keys and values are read at
/// every decoding step, and the CPU backend's attention copies strided inputs into place on
/// each call; folding B and H (which a strided view cannot do without a copy) makes that copy
/// once.
fn contiguous_heads(x: Tensor<4>) -> Tensor<4> {
    let [b, h, s, dh] = x.dims();
    x.reshape([b * h, s, dh]).reshape([b, h, s, dh])
}

#[derive(Module, Debug)]
pub struct Gpt2Mlp {
    pub c_fc: Conv1D,
    pub c_proj: Conv1D,
    #[module(skip)]
    pub act: ActivationName,
}

#[derive(Module, Debug)]
pub struct Gpt2Block {
    pub ln_1: LayerNorm,
    pub attn: Gpt2Attention,
    pub ln_cross_attn: Option<LayerNorm>,
    pub crossattention: Option<Gpt2Attention>,
    pub ln_2: LayerNorm,
    pub mlp: Gpt2Mlp,
}

impl Gpt2Block {
    fn new(cfg: &Gpt2Config, layer: usize, device: &Device) -> Self {
        let d = cfg.n_embd;
        let inner = cfg.n_inner.unwrap_or(4 * d);
        let eps = cfg.layer_norm_epsilon;
        let cross = cfg.add_cross_attention;
        Self {
            ln_1: layer_norm(d, eps, device),
            attn: Gpt2Attention::new(cfg, layer, false, device),
            ln_cross_attn: cross.then(|| layer_norm(d, eps, device)),
            crossattention: cross.then(|| Gpt2Attention::new(cfg, layer, true, device)),
            ln_2: layer_norm(d, eps, device),
            mlp: Gpt2Mlp {
                c_fc: Conv1D::new(d, inner, cfg.initializer_range, device),
                c_proj: Conv1D::new(
                    inner,
                    d,
                    cfg.initializer_range / (2.0 * cfg.n_layer as f64).sqrt(),
                    device,
                ),
                act: ActivationName(
                    Activation::parse(&cfg.activation_function).unwrap_or(Activation::GeluTanh),
                ),
            },
        }
    }

    /// transformers' `GPT2Block`: self-attention, cross-attention to the encoder's keys and
    /// values when given, then the MLP, each pre-norm and residual.
    pub fn forward(
        &self,
        x: Tensor<3>,
        key_padding: Option<&Tensor<2, Bool>>,
        cross: Option<&KeyValue>,
        cache: Option<&mut Option<KeyValue>>,
    ) -> Tensor<3> {
        let x = x.clone()
            + self
                .attn
                .forward_self(self.ln_1.forward(x), key_padding, cache);
        let x = match (cross, &self.crossattention, &self.ln_cross_attn) {
            (Some(kv), Some(attn), Some(ln)) => x.clone() + attn.forward_cross(ln.forward(x), kv),
            _ => x,
        };
        let h = self.mlp.c_fc.forward(self.ln_2.forward(x.clone()));
        x + self.mlp.c_proj.forward(self.mlp.act.0.forward(h))
    }
}

#[derive(Module, Debug)]
pub struct Gpt2Model {
    pub wte: Embedding,
    pub wpe: Embedding,
    pub h: Vec<Gpt2Block>,
    pub ln_f: LayerNorm,
}

/// Self-attention keys/values of every layer for the positions decoded so far, and what the
/// steps reuse: one decoding's, of one model whose weights do not change meanwhile (the
/// kept casts are found by parameter id, which a model's copies share).
#[derive(Debug, Clone, Default)]
pub struct DecoderCache {
    pub layers: Vec<Option<KeyValue>>,
    /// Number of positions already in the cache.
    pub len: usize,
    /// The LM head's weight transposed to `[D, V]` and stored contiguously, made at the first
    /// step. A decoding step multiplies a few rows by it; from the tied `[V, D]` embedding
    /// (a strided view) the product repacks the whole matrix on every step, ~3× the time.
    /// Under mixed precision it is kept in the products' type.
    pub head: Option<Tensor<2>>,
    /// The weights' half-precision copies under mixed precision, made at the first step.
    pub casts: KeptCasts,
}

impl DecoderCache {
    /// Keeps the rows `index` of every cached tensor (beam search reorders hypotheses).
    pub fn select(&mut self, index: Tensor<1, Int>) {
        for kv in self.layers.iter_mut().flatten() {
            kv.k = kv.k.clone().select(0, index.clone());
            kv.v = kv.v.clone().select(0, index.clone());
        }
    }
}

/// `GPT2LMHeadModel`: the LM head is tied to `transformer.wte`.
#[derive(Module, Debug)]
pub struct Gpt2LmHeadModel {
    pub transformer: Gpt2Model,
}

impl Gpt2LmHeadModel {
    pub fn new(cfg: &Gpt2Config, device: &Device) -> Self {
        let d = cfg.n_embd;
        let std = cfg.initializer_range;
        Self {
            transformer: Gpt2Model {
                wte: embedding(cfg.vocab_size, d, std, device),
                wpe: embedding(cfg.n_positions, d, std, device),
                h: (0..cfg.n_layer)
                    .map(|i| Gpt2Block::new(cfg, i, device))
                    .collect(),
                ln_f: layer_norm(d, cfg.layer_norm_epsilon, device),
            },
        }
    }

    pub fn d_model(&self) -> usize {
        self.transformer.wte.weight.lazy_shape().to_vec()[1]
    }

    pub fn vocab_size(&self) -> usize {
        self.transformer.wte.weight.lazy_shape().to_vec()[0]
    }

    pub fn max_positions(&self) -> usize {
        self.transformer.wpe.weight.lazy_shape().to_vec()[0]
    }

    pub fn has_cross_attention(&self) -> bool {
        self.transformer
            .h
            .first()
            .is_some_and(|b| b.crossattention.is_some())
    }

    pub fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.transformer.wte.forward(ids)
    }

    /// Per-layer cross-attention keys/values of the encoder states `[B, S, D]`.
    pub fn cross_kv(&self, encoder_hidden: Tensor<3>) -> Vec<KeyValue> {
        self.transformer
            .h
            .iter()
            .map(|b| {
                b.crossattention
                    .as_ref()
                    .expect("decoder has no cross-attention")
                    .cross_kv(encoder_hidden.clone())
            })
            .collect()
    }

    /// Final hidden states (after `ln_f`) for input embeddings `[B, T, D]` starting at
    /// position `cache.len` (0 without a cache). `key_padding` covers all positions so far.
    pub fn forward_hidden(
        &self,
        inputs_embeds: Tensor<3>,
        key_padding: Option<&Tensor<2, Bool>>,
        cross: Option<&[KeyValue]>,
        mut cache: Option<&mut DecoderCache>,
    ) -> Tensor<3> {
        let t = inputs_embeds.dims()[1];
        let past = cache.as_ref().map_or(0, |c| c.len);
        let mut x = self.add_positions(inputs_embeds, past);
        if let Some(c) = cache.as_deref_mut() {
            c.layers.resize(self.transformer.h.len(), None);
        }
        for (i, block) in self.transformer.h.iter().enumerate() {
            let kv = cross.map(|c| &c[i]);
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = block.forward(x, key_padding, kv, slot);
        }
        if let Some(c) = cache {
            c.len += t;
        }
        self.transformer.ln_f.forward(x)
    }

    /// The first block's input: embeddings `[B, T, D]` of positions `past..past + T` plus
    /// their position embeddings.
    pub fn add_positions(&self, inputs_embeds: Tensor<3>, past: usize) -> Tensor<3> {
        let t = inputs_embeds.dims()[1];
        let device = inputs_embeds.device();
        let positions =
            Tensor::<1, Int>::arange(past as i64..(past + t) as i64, &device).unsqueeze::<2>();
        inputs_embeds + self.transformer.wpe.forward(positions)
    }

    /// Logits through the tied LM head, for incremental decoding (see [`DecoderCache::head`]).
    pub fn lm_head_cached(&self, hidden: Tensor<3>, cache: &mut DecoderCache) -> Tensor<3> {
        let head = cache.head.get_or_insert_with(|| {
            let [v, d] = self.lm_head_weight().dims();
            lower(self.lm_head_weight())
                .transpose()
                .reshape([d * v])
                .reshape([d, v])
        });
        dense(hidden, head.clone(), None)
    }

    /// Logits through the tied LM head.
    pub fn lm_head(&self, hidden: Tensor<3>) -> Tensor<3> {
        dense(hidden, self.lm_head_weight().transpose(), None)
    }

    /// The LM head's weight `[V, D]`: the token embeddings (tied, as in GPT-2).
    pub fn lm_head_weight(&self) -> Tensor<2> {
        self.transformer.wte.weight.val()
    }

    /// Logits `[B, T, V]` for token ids `[B, T]`; `attention_mask` is transformers' (1 = keep).
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        encoder_hidden: Option<Tensor<3>>,
    ) -> Tensor<3> {
        let padding = attention_mask.map(|m| m.equal_elem(0));
        let cross = encoder_hidden.map(|e| self.cross_kv(e));
        let h = self.forward_hidden(
            self.embed_tokens(ids),
            padding.as_ref(),
            cross.as_deref(),
            None,
        );
        self.lm_head(h)
    }
}

/// Reads a GPT-2 `config.json`.
pub fn read_config(path: &std::path::Path) -> Result<Gpt2Config> {
    let cfg: Gpt2Config = crate::util::read_json(path)?;
    cfg.validate()
        .with_context(|| format!("{}: invalid GPT-2 config", path.display()))?;
    Ok(cfg)
}
