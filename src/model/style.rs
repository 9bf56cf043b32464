//! Styles: the names a captioner is conditioned on, and the factual style every captioner
//! knows (plain descriptions of the picture).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The style of plain, factual captions: what image–caption data is written in.
pub const FACTUAL: &str = "factual";

/// stylecap's own section of the captioner's `config.json` (transformers keeps unknown keys).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StyleConfig {
    /// Style names, in the order of the rows of `style_prefix`.
    #[serde(default)]
    pub styles: Vec<String>,
    /// Soft prefix tokens per style.
    #[serde(default)]
    pub prefix_tokens: usize,
}

impl StyleConfig {
    /// Index of a style name, or an error that lists the known styles.
    pub fn index(&self, name: &str) -> Result<usize> {
        self.styles.iter().position(|s| s == name).with_context(|| {
            if self.styles.is_empty() {
                format!("unknown style `{name}`: this captioner has no styles")
            } else {
                format!(
                    "unknown style `{name}` (known styles: {})",
                    self.styles.join(", ")
                )
            }
        })
    }
}

/// The styles of a captioner trained on `corpus_styles`: those and factual, sorted, each once.
pub fn style_names<'a>(corpus_styles: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut names: Vec<String> = corpus_styles.map(str::to_string).collect();
    names.push(FACTUAL.to_string());
    names.sort();
    names.dedup();
    names
}
