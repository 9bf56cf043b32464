//! Evaluation: caption metrics, whole-captioner evaluation by the judge, and the HTML report.

pub mod captioner;
pub mod plots;
pub mod report;
pub mod text_metrics;
