//! Evaluation: caption metrics.

pub mod text_metrics;
