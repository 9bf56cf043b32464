//! The style critic (and the judge): a text classifier over styles, trained here or
//! fine-tuned from a pretrained BERT-family encoder.

pub mod bert;
pub mod metrics;
pub mod model;
pub mod sentence;
pub mod train;

pub use model::Critic;
