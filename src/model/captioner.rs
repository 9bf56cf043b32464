//! The captioner: vision encoder + (projection when widths differ) + GPT-2 decoder with
//! cross-attention, laid out as transformers' `VisionEncoderDecoderModel`, plus stylecap's
//! style conditioning: a learned embedding per style, prepended as `k` soft prefix tokens.
//!
//! Decoder input for one caption: `[style prefix (k)] [start token] caption tokens`.
//! With no styles there is no prefix and the model is exactly transformers' captioner.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use serde_json::Value;

use super::gpt2::{DecoderCache, Gpt2Config, Gpt2LmHeadModel, KeyValue};
use super::layers::{apply_linear, linear, normal_param, without_init};
pub use super::style::StyleConfig;
use super::vision::{VisionConfig, VisionEncoder};
use super::weights::{
    collect_module, load_module, materialize, unused_tensors, write_safetensors, SafetensorsFile,
};

/// The whole captioner `config.json`, in transformers' `VisionEncoderDecoderConfig` layout.
#[derive(Debug, Clone)]
pub struct CaptionerConfig {
    pub encoder: VisionConfig,
    pub decoder: Gpt2Config,
    pub decoder_start_token_id: u32,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    pub style: StyleConfig,
    /// Every other top-level key, written back unchanged.
    pub extra: serde_json::Map<String, Value>,
}

impl CaptionerConfig {
    pub fn new(
        encoder: VisionConfig,
        mut decoder: Gpt2Config,
        start: u32,
        eos: u32,
        style: StyleConfig,
    ) -> Self {
        decoder.add_cross_attention = true;
        decoder.extra.insert("is_decoder".into(), true.into());
        decoder.bos_token_id = Some(start);
        decoder.eos_token_id = Some(eos);
        decoder.pad_token_id = Some(eos);
        Self {
            encoder,
            decoder,
            decoder_start_token_id: start,
            eos_token_id: Some(eos),
            pad_token_id: Some(eos),
            style,
            extra: Default::default(),
        }
    }

    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = value.as_object().context("config is not a JSON object")?;
        if let Some(mt) = obj.get("model_type").and_then(Value::as_str) {
            if mt != "vision-encoder-decoder" {
                bail!("model_type is `{mt}`, expected `vision-encoder-decoder`");
            }
        }
        let encoder =
            VisionConfig::from_json(obj.get("encoder").context("missing field `encoder`")?)
                .context("field `encoder`")?;
        let decoder: Gpt2Config = serde_json::from_value(
            obj.get("decoder")
                .context("missing field `decoder`")?
                .clone(),
        )
        .context("field `decoder`")?;
        decoder.validate().context("field `decoder`")?;
        for k in ["decoder_start_token_id", "eos_token_id", "pad_token_id"] {
            if let Some(v) = obj.get(k).and_then(Value::as_u64) {
                ensure!(
                    v < decoder.vocab_size as u64,
                    "field `{k}` is {v}; the decoder's vocabulary has ids 0 to {}",
                    decoder.vocab_size.saturating_sub(1)
                );
            }
        }
        let id = |k: &str| obj.get(k).and_then(Value::as_u64).map(|v| v as u32);
        let decoder_start_token_id = id("decoder_start_token_id")
            .or(decoder.bos_token_id)
            .context(
                "missing field `decoder_start_token_id` (and the decoder has no bos_token_id)",
            )?;
        let style = match obj.get("stylecap") {
            Some(v) => serde_json::from_value(v.clone()).context("field `stylecap`")?,
            None => StyleConfig::default(),
        };
        let mut extra = obj.clone();
        for k in [
            "encoder",
            "decoder",
            "decoder_start_token_id",
            "eos_token_id",
            "pad_token_id",
            "stylecap",
        ] {
            extra.remove(k);
        }
        let config = Self {
            encoder,
            eos_token_id: id("eos_token_id").or(decoder.eos_token_id),
            pad_token_id: id("pad_token_id").or(decoder.pad_token_id),
            decoder,
            decoder_start_token_id,
            style,
            extra,
        };
        config.check()?;
        Ok(config)
    }

    /// What the parts must agree on: token ids within the decoder's vocabulary, a style
    /// prefix where there are styles to tell apart, and room for a caption after it.
    fn check(&self) -> Result<()> {
        let vocab = self.decoder.vocab_size;
        for (field, id) in [
            ("decoder_start_token_id", Some(self.decoder_start_token_id)),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id {
                ensure!(
                    (id as usize) < vocab,
                    "field `{field}` is {id}; the decoder's vocabulary has ids 0 to {}",
                    vocab.saturating_sub(1)
                );
            }
        }
        let prefix = if self.style.styles.is_empty() {
            0
        } else {
            self.style.prefix_tokens
        };
        ensure!(
            self.style.styles.len() < 2 || prefix > 0,
            "field `stylecap`: {} styles and `prefix_tokens` 0: without a prefix the styles \
             would all write alike",
            self.style.styles.len()
        );
        ensure!(
            self.decoder.n_positions > prefix + 1,
            "field `decoder`: n_positions {} leaves no room for a caption after the {prefix} \
             style prefix positions and the start token",
            self.decoder.n_positions
        );
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        let mut obj = self.extra.clone();
        obj.insert(
            "architectures".into(),
            serde_json::json!(["VisionEncoderDecoderModel"]),
        );
        obj.insert("model_type".into(), "vision-encoder-decoder".into());
        obj.insert("is_encoder_decoder".into(), true.into());
        obj.insert("encoder".into(), self.encoder.to_json());
        obj.insert(
            "decoder".into(),
            serde_json::to_value(&self.decoder).expect("serializable"),
        );
        obj.insert(
            "decoder_start_token_id".into(),
            self.decoder_start_token_id.into(),
        );
        obj.insert("eos_token_id".into(), self.eos_token_id.into());
        obj.insert("pad_token_id".into(), self.pad_token_id.into());
        obj.insert(
            "stylecap".into(),
            serde_json::to_value(&self.style).expect("serializable"),
        );
        Value::Object(obj)
    }

    /// Index of a style name, or an error that lists the known styles.
    pub fn style_index(&self, name: &str) -> Result<usize> {
        self.style.index(name)
    }
}

#[derive(Module, Debug)]
pub struct Captioner {
    pub encoder: VisionEncoder,
    /// transformers adds `enc_to_dec_proj` when encoder and decoder widths differ.
    pub enc_to_dec_proj: Option<Linear>,
    pub decoder: Gpt2LmHeadModel,
    /// `[n_styles, k, d]`: the soft prefix of each style.
    pub style_prefix: Option<Param<Tensor<3>>>,
    #[module(skip)]
    pub config: CaptionerConfig,
}

/// Encoder output prepared for decoding: cross-attention keys/values of every layer.
#[derive(Debug, Clone)]
pub struct EncodedImages {
    /// Per decoder layer, the cross-attention keys and values `[I, H, S, Dh]` of I images.
    /// A decoder batch of B = I·g rows whose consecutive groups of g rows share an image
    /// attends to them as they are (see
    /// [`super::gpt2::Gpt2Attention::forward_cross`]).
    pub cross: Vec<KeyValue>,
}

impl EncodedImages {
    /// The keys and values for decoder rows showing the images `images` (indices into these
    /// images, one per row). When the rows are every image in order, each repeated the same
    /// number of times (samples or beams of each picture), they are these tensors themselves:
    /// nothing is copied, and each image's keys and values are read once for all its rows.
    /// Otherwise the rows are gathered.
    pub fn for_rows(&self, images: &[usize]) -> Self {
        Self {
            cross: self.cross.iter().map(|kv| kv.for_rows(images)).collect(),
        }
    }
}

impl Captioner {
    /// A randomly initialised captioner.
    pub fn new(config: CaptionerConfig, device: &Device) -> Self {
        Self::build(config, false, device)
    }

    fn build(config: CaptionerConfig, with_pooler: bool, device: &Device) -> Self {
        let d_enc = config.encoder.hidden_size();
        let d_dec = config.decoder.n_embd;
        let std = config.decoder.initializer_range;
        let style_prefix = (!config.style.styles.is_empty() && config.style.prefix_tokens > 0)
            .then(|| {
                normal_param(
                    [config.style.styles.len(), config.style.prefix_tokens, d_dec],
                    std,
                    device,
                )
            });
        Self {
            encoder: VisionEncoder::new(&config.encoder, with_pooler, device),
            enc_to_dec_proj: (d_enc != d_dec).then(|| linear(d_enc, d_dec, true, std, device)),
            decoder: Gpt2LmHeadModel::new(&config.decoder, device),
            style_prefix,
            config,
        }
    }

    /// A captioner from separately trained parts, e.g. a pretrained ViT and GPT-2.
    pub fn from_parts(
        config: CaptionerConfig,
        encoder: VisionEncoder,
        decoder: Gpt2LmHeadModel,
        device: &Device,
    ) -> Self {
        let fresh = without_init(|| Self::new(config, device));
        let model = Self {
            encoder,
            decoder,
            ..fresh
        };
        materialize(&model);
        model
    }

    pub fn prefix_len(&self) -> usize {
        if self.style_prefix.is_some() {
            self.config.style.prefix_tokens
        } else {
            0
        }
    }

    /// Positions the style prefix takes before the tokens (0 without `styles`).
    pub fn prefix_positions(&self, styles: bool) -> usize {
        if styles {
            self.prefix_len()
        } else {
            0
        }
    }

    /// Encoder states projected to the decoder width, `[B, S, d_dec]`.
    pub fn encode_hidden(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        self.project(self.encoder.forward(pixel_values))
    }

    /// The encoder's output states `[B, S, d_enc]` at the decoder's width.
    pub fn project(&self, states: Tensor<3>) -> Tensor<3> {
        match &self.enc_to_dec_proj {
            Some(p) => apply_linear(p, states),
            None => states,
        }
    }

    pub fn encode(&self, pixel_values: Tensor<4>) -> EncodedImages {
        self.encode_states(self.encoder.forward(pixel_values))
    }

    /// [`Self::encode`] from the encoder's output states `[B, S, d_enc]` (computed earlier,
    /// e.g. by a frozen encoder).
    pub fn encode_states(&self, states: Tensor<3>) -> EncodedImages {
        EncodedImages {
            cross: self.decoder.cross_kv(self.project(states)),
        }
    }

    /// Style prefix embeddings `[B, k, d]` for style indices `[B]`, if the model has styles.
    pub fn prefix(&self, styles: Option<Tensor<1, Int>>) -> Option<Tensor<3>> {
        match (&self.style_prefix, styles) {
            (Some(p), Some(s)) => Some(p.val().select(0, s)),
            _ => None,
        }
    }

    /// Decoder inputs: the style prefix (if any) followed by the token embeddings.
    pub fn decoder_inputs(&self, styles: Option<Tensor<1, Int>>, ids: Tensor<2, Int>) -> Tensor<3> {
        let tokens = self.decoder.embed_tokens(ids);
        match self.prefix(styles) {
            Some(p) => Tensor::cat(vec![p, tokens], 1),
            None => tokens,
        }
    }

    /// Teacher-forced logits `[B, T, V]` for decoder input ids `[B, T]` (start token first);
    /// prefix positions are dropped. `attention_mask`: 1 = real token, 0 = padding.
    pub fn forward_encoded(
        &self,
        encoded: &EncodedImages,
        styles: Option<Tensor<1, Int>>,
        ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        self.decoder
            .lm_head(self.hidden_encoded(encoded, styles, ids, attention_mask))
    }

    /// The decoder's final states `[B, T, D]` under [`Self::forward_encoded`]'s logits.
    pub fn hidden_encoded(
        &self,
        encoded: &EncodedImages,
        styles: Option<Tensor<1, Int>>,
        ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [b, t] = ids.dims();
        let k = self.prefix_positions(styles.is_some());
        let x = self.decoder_inputs(styles, ids.clone());
        let padding = attention_mask.map(|m| {
            let m = m.equal_elem(0);
            if k > 0 {
                Tensor::cat(
                    vec![Tensor::<2, Bool>::full([b, k], false, &m.device()), m],
                    1,
                )
            } else {
                m
            }
        });
        let h = self
            .decoder
            .forward_hidden(x, padding.as_ref(), Some(&encoded.cross), None);
        if k > 0 {
            h.narrow(1, k, t)
        } else {
            h
        }
    }

    pub fn forward(
        &self,
        pixel_values: Tensor<4>,
        styles: Option<Tensor<1, Int>>,
        ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        self.decoder
            .lm_head(self.hidden(pixel_values, styles, ids, attention_mask))
    }

    /// The decoder's final states `[B, T, D]` under [`Self::forward`]'s logits.
    pub fn hidden(
        &self,
        pixel_values: Tensor<4>,
        styles: Option<Tensor<1, Int>>,
        ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let encoded = self.encode(pixel_values);
        self.hidden_encoded(&encoded, styles, ids, attention_mask)
    }

    /// Starts incremental decoding: runs the prefix and start token through the decoder and
    /// returns the cache and the logits `[B, V]` for the first caption token.
    pub fn start_decoding(
        &self,
        encoded: &EncodedImages,
        styles: Option<Tensor<1, Int>>,
        batch: usize,
    ) -> (DecoderCache, Tensor<2>) {
        let device = encoded.cross[0].k.device();
        let start = Tensor::<2, Int>::full(
            [batch, 1],
            self.config.decoder_start_token_id as i64,
            &device,
        );
        let x = self.decoder_inputs(styles, start);
        let mut cache = DecoderCache::default();
        let logits = self.step_embeds(encoded, x, &mut cache);
        (cache, logits)
    }

    /// Feeds one token per row and returns the next-token logits `[B, V]`.
    pub fn step(
        &self,
        encoded: &EncodedImages,
        tokens: Tensor<1, Int>,
        cache: &mut DecoderCache,
    ) -> Tensor<2> {
        let x = self.decoder.embed_tokens(tokens.unsqueeze_dim(1));
        self.step_embeds(encoded, x, cache)
    }

    fn step_embeds(
        &self,
        encoded: &EncodedImages,
        x: Tensor<3>,
        cache: &mut DecoderCache,
    ) -> Tensor<2> {
        let t = x.dims()[1];
        let mut casts = std::mem::take(&mut cache.casts);
        let h = casts.within(|| {
            self.decoder
                .forward_hidden(x, None, Some(&encoded.cross), Some(&mut *cache))
        });
        cache.casts = casts;
        let b = h.dims()[0];
        self.decoder
            .lm_head_cached(h.narrow(1, t - 1, 1), cache)
            .reshape([b, self.decoder.vocab_size()])
    }

    /// Saves as a transformers `VisionEncoderDecoderModel` directory (`config.json`,
    /// `model.safetensors`). Writes are atomic.
    pub fn save(&self, dir: &Path) -> Result<()> {
        if super::lora::config_of(self).is_some() {
            bail!(
                "the captioner has LoRA adapters: save them as an adapter folder, or merge them \
                 into the weights first"
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut tensors = Vec::new();
        collect_module(&self.encoder, "encoder", &mut tensors);
        if let Some(p) = &self.enc_to_dec_proj {
            collect_module(p, "enc_to_dec_proj", &mut tensors);
        }
        collect_module(&self.decoder, "decoder", &mut tensors);
        if let Some(p) = &self.style_prefix {
            let t = p.val();
            tensors.push((
                "style_prefix".into(),
                t.dims().to_vec(),
                crate::tensor::floats(t),
            ));
        }
        write_safetensors(&dir.join("model.safetensors"), &tensors)?;
        crate::util::write_json(&dir.join("config.json"), &self.config.to_json())
    }

    /// Opens a `VisionEncoderDecoderModel` directory (stylecap's or transformers').
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let value: Value = crate::util::read_json(&cfg_path)?;
        let config = CaptionerConfig::from_json(&value)
            .with_context(|| format!("{}: invalid captioner config", cfg_path.display()))?;
        let mut file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        file.rename_prefix("encoder.vision_model.", "encoder.");
        let with_pooler = file.contains("encoder.pooler.dense.weight");
        let mut model = without_init(|| Self::build(config, with_pooler, device));
        let strict = |_: &str| false;
        let (encoder, r1) = load_module(model.encoder, &file, "encoder", &strict)?;
        let (decoder, r2) = load_module(model.decoder, &file, "decoder", &strict)?;
        let mut used: std::collections::HashSet<String> =
            r1.used.union(&r2.used).cloned().collect();
        model.encoder = encoder;
        model.decoder = decoder;
        if let Some(p) = model.enc_to_dec_proj {
            let (p, r) = load_module(p, &file, "enc_to_dec_proj", &strict)?;
            used.extend(r.used);
            model.enc_to_dec_proj = Some(p);
        }
        if let Some(p) = model.style_prefix {
            let t = file.tensor::<3>("style_prefix", device)?;
            let expected = p.lazy_shape().to_vec();
            anyhow::ensure!(
                t.dims().to_vec() == expected,
                "{}: tensor `style_prefix` has shape {:?}, the config expects {:?}",
                file.path.display(),
                t.dims(),
                expected
            );
            used.insert("style_prefix".into());
            let id = p.id;
            model.style_prefix = Some(p.transform_for_load(t, id));
        }
        let unused = unused_tensors(&file, &used, &|k| {
            k == "decoder.lm_head.weight" || is_gpt2_buffer(k)
        });
        if !unused.is_empty() {
            bail!(
                "{}: tensors not used by the model (config mismatch?): {}",
                file.path.display(),
                unused.join(", ")
            );
        }
        Ok(model)
    }
}

/// Non-parameter buffers older GPT-2 checkpoints carry (causal mask tables).
pub fn is_gpt2_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with("crossattention.bias")
        || name.ends_with("crossattention.masked_bias")
}
