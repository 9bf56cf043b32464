//! The vision encoders a captioner can use, behind one type.

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use serde_json::Value;

use super::clip::{ClipVisionConfig, ClipVisionModel};
use super::vit::{ViTConfig, ViTModel};
use super::weights::trains;

/// An encoder's `config.json` section, by transformers' `model_type`.
#[derive(Debug, Clone)]
pub enum VisionConfig {
    Vit(ViTConfig),
    Clip(ClipVisionConfig),
}

impl VisionConfig {
    /// Parses an encoder config: a ViT (`vit`), a CLIP vision tower (`clip_vision_model`), or
    /// a full CLIP config (`clip`), whose `vision_config` is used.
    pub fn from_json(value: &Value) -> Result<Self> {
        let model_type = value
            .get("model_type")
            .and_then(Value::as_str)
            .context("encoder config has no `model_type`")?;
        let cfg = match model_type {
            "vit" => {
                let c: ViTConfig = serde_json::from_value(value.clone()).context("invalid ViT config")?;
                c.validate()?;
                Self::Vit(c)
            }
            "clip_vision_model" => {
                let c: ClipVisionConfig = serde_json::from_value(value.clone()).context("invalid CLIP vision config")?;
                c.validate()?;
                Self::Clip(c)
            }
            "clip" => {
                let mut vision = value.get("vision_config").context("CLIP config has no `vision_config`")?.clone();
                vision["model_type"] = "clip_vision_model".into();
                return Self::from_json(&vision);
            }
            other => bail!("unsupported vision encoder model_type `{other}` (supported: vit, clip_vision_model, clip)"),
        };
        Ok(cfg)
    }

    pub fn to_json(&self) -> Value {
        match self {
            Self::Vit(c) => serde_json::to_value(c).expect("serializable"),
            Self::Clip(c) => serde_json::to_value(c).expect("serializable"),
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Vit(c) => c.hidden_size,
            Self::Clip(c) => c.hidden_size,
        }
    }

    pub fn image_size(&self) -> usize {
        match self {
            Self::Vit(c) => c.image_size,
            Self::Clip(c) => c.image_size,
        }
    }

    pub fn num_layers(&self) -> usize {
        match self {
            Self::Vit(c) => c.num_hidden_layers,
            Self::Clip(c) => c.num_hidden_layers,
        }
    }

    /// Number of encoder states per image (patches + CLS).
    pub fn seq_len(&self) -> usize {
        match self {
            Self::Vit(c) => c.num_patches() + 1,
            Self::Clip(c) => c.num_positions(),
        }
    }
}

// A model holds one encoder, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum VisionEncoder {
    Vit(ViTModel),
    Clip(ClipVisionModel),
}

impl VisionEncoder {
    pub fn new(cfg: &VisionConfig, with_pooler: bool, device: &Device) -> Self {
        match cfg {
            VisionConfig::Vit(c) => Self::Vit(ViTModel::new(c, with_pooler, device)),
            VisionConfig::Clip(c) => Self::Clip(ClipVisionModel::new(c, device)),
        }
    }

    /// Encoder states `[B, S, D]` the decoder cross-attends to.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        match self {
            Self::Vit(m) => m.forward(pixel_values),
            Self::Clip(m) => m.forward(pixel_values),
        }
    }

    // The forward pass in its parts, for recomputing one part at a time (activation
    // checkpointing): `finish(layer(n-1, … layer(0, embed(pixels))))` is `forward(pixels)`.

    /// Number of encoder layers.
    pub fn num_layers(&self) -> usize {
        match self {
            Self::Vit(m) => m.encoder.layer.len(),
            Self::Clip(m) => m.encoder.layers.len(),
        }
    }

    /// The input of the first layer.
    pub fn embed(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        match self {
            Self::Vit(m) => m.embed(pixel_values),
            Self::Clip(m) => m.embed(pixel_values),
        }
    }

    /// Layer `i`.
    pub fn layer(&self, i: usize, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Vit(m) => m.layer(i, x),
            Self::Clip(m) => m.layer(i, x),
        }
    }

    /// What follows the last layer (ViT's final LayerNorm; nothing for CLIP).
    pub fn finish(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Vit(m) => m.layernorm.forward(x),
            Self::Clip(_) => x,
        }
    }

    /// Whether a part of the forward pass has a parameter that takes a gradient.
    pub fn part_trains(&self, part: VisionPart) -> bool {
        match (self, part) {
            (Self::Vit(m), VisionPart::Embed) => trains(&m.embeddings),
            (Self::Vit(m), VisionPart::Layer(i)) => trains(&m.encoder.layer[i]),
            (Self::Vit(m), VisionPart::Finish) => trains(&m.layernorm),
            (Self::Clip(m), VisionPart::Embed) => trains(&m.embeddings) || trains(&m.pre_layrnorm),
            (Self::Clip(m), VisionPart::Layer(i)) => trains(&m.encoder.layers[i]),
            (Self::Clip(_), VisionPart::Finish) => false,
        }
    }
}

/// A part of [`VisionEncoder::forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionPart {
    Embed,
    Layer(usize),
    Finish,
}
