//! Data: the built-in scene world and styles, loaders for real datasets, image preprocessing
//! and tokenization.

pub mod contact_sheet;
pub mod fetch;
pub mod image;
pub mod image_check;
pub mod inspect;
pub mod loaders;
pub mod probe;
pub mod records;
pub mod resize;
pub mod rng;
pub mod stream;
pub mod styles;
pub mod synth;
pub mod tokenizer;
pub mod world;
