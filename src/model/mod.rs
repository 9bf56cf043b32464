//! The captioner: vision encoders (ViT, CLIP), the GPT-2 decoder with cross-attention, style
//! conditioning, decoding, and checkpoint I/O in Hugging Face layout; and CLIP with both
//! towers, the scorer of the `clip` content reward and the evaluation's CLIP scores.

pub mod autocast;
pub mod captioner;
pub mod clip;
pub mod clip_score;
pub mod clip_text;
pub mod folder;
pub mod generate;
pub mod gpt2;
pub mod kernels;
pub mod layers;
pub mod lm_head;
pub mod lora;
pub mod loss;
pub mod pretrained;
pub mod repeats;
pub mod score;
pub mod settings;
pub mod style;
pub mod vision;
pub mod vit;
pub mod weights;

pub use captioner::{Captioner, CaptionerConfig};
pub use folder::LoadedCaptioner;
pub use generate::{generate, DecodeOptions, Generation, Strategy};
pub use settings::{DecodeLimits, DecodeSettings};
pub use style::{StyleConfig, FACTUAL};
