//! Evaluation: whole-captioner evaluation by the judge, plots, and the HTML report.

pub mod captioner;
pub mod plots;
pub mod report;
