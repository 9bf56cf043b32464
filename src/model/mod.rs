//! The captioner: vision encoders (ViT, CLIP), the GPT-2 decoder with cross-attention, style
//! conditioning, decoding, and checkpoint I/O in Hugging Face layout.

pub mod captioner;
pub mod clip;
pub mod folder;
pub mod generate;
pub mod gpt2;
pub mod kernels;
pub mod layers;
pub mod lm_head;
pub mod loss;
pub mod pretrained;
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
