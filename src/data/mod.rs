//! Data: records and loaders of real datasets and style corpora, the caption and style sources
//! the trainers draw from, fetching and inspecting datasets, image preprocessing, tokenization
//! and text metrics. The built-in world (`crate::world`) is one source among them.

pub mod contact_sheet;
pub mod fetch;
pub mod image;
pub mod image_check;
pub mod inspect;
pub mod loaders;
pub mod probe;
pub mod pseudo_pairs;
pub mod records;
pub mod resize;
pub mod sources;
pub mod stream;
pub mod synth;
pub mod text_metrics;
pub mod tokenizer;
