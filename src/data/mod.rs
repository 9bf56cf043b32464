//! Data: image preprocessing and tokenization (datasets arrive with the data issue).

pub mod image;
pub mod resize;
pub mod tokenizer;
