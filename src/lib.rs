//! stylecap: train and serve image captioners that write in a requested style.
//!
//! The modules follow the pipeline, and every import points down this list (a test,
//! `tests/layers.rs`, checks it from the source):
//! - foundations: [`rng`], [`run`], [`tensor`], [`util`], [`alloc`];
//! - [`world`] (the built-in scene world) and [`data`] (datasets, style corpora, images,
//!   tokenization, text metrics);
//! - [`model`] (encoders, decoder, captioner, decoding, captioner folders);
//! - [`optim`] (AdamW, schedule, gradients);
//! - the stages: [`sft`], [`critic`], [`align`], [`eval`], [`bench`], [`caption`], [`demo`],
//!   [`serve`];
//! - [`cli`], which only parses arguments and prints.

pub mod alloc;
pub mod rng;
pub mod run;
pub mod tensor;
pub mod util;

pub mod data;
pub mod world;

pub mod model;

pub mod optim;

pub mod align;
pub mod bench;
pub mod caption;
pub mod critic;
pub mod demo;
pub mod eval;
pub mod serve;
pub mod sft;

pub mod cli;
