//! Evaluation: caption metrics, and whole-captioner evaluation by the judge.

pub mod captioner;
pub mod text_metrics;
