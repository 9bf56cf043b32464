//! The reward of a caption: style by the critic, content by the scene-graph checker, minus
//! penalties; the KL term is added by the trainer, which has the log-probabilities.

use serde::Serialize;

use super::config::AlignConfig;
use crate::critic::Critic;
use crate::data::text_metrics::tokens;
use crate::data::tokenizer::TextTokenizer;
use crate::world::{content_fidelity, Lexicon, Scene};
use anyhow::Result;
use burn::prelude::Device;

/// The reward terms of one caption.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Terms {
    /// p(target style) by the critic (before the `style_reward` transform).
    pub style_prob: f32,
    pub style: f32,
    pub content: f32,
    pub penalty: f32,
}

impl Terms {
    /// Reward before the KL term.
    pub fn total(&self, c: &AlignConfig) -> f32 {
        c.w_style * self.style + c.w_content * self.content - self.penalty
    }
}

/// Repeated word bigrams (the seed system's "repetitive phrases").
pub fn repeated_bigrams(text: &str) -> usize {
    let w = tokens(text);
    let mut seen = std::collections::HashSet::new();
    w.windows(2).filter(|b| !seen.insert(b.to_vec())).count()
}

pub struct Rewarder<'a> {
    pub config: &'a AlignConfig,
    pub critic: &'a Critic,
    pub tokenizer: &'a TextTokenizer,
    pub lexicon: Lexicon,
    pub device: Device,
}

impl Rewarder<'_> {
    /// Terms for captions `texts` with target styles `targets` (critic indices) on `scenes`.
    pub fn terms(
        &self,
        texts: &[String],
        targets: &[usize],
        scenes: &[&Scene],
    ) -> Result<Vec<Terms>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let probs = self
            .critic
            .probabilities(self.tokenizer, &refs, &self.device)?;
        let c = self.config;
        Ok(texts
            .iter()
            .zip(&probs)
            .zip(targets.iter().zip(scenes))
            .map(|((text, p), (&t, scene))| {
                let words = tokens(text).len();
                let penalty = c.repetition_penalty * repeated_bigrams(text) as f32
                    + c.length_penalty * words.saturating_sub(c.max_words) as f32;
                Terms {
                    style_prob: p[t],
                    style: c.style_reward.of(p[t]),
                    content: content_fidelity(&self.lexicon, text, scene),
                    penalty,
                }
            })
            .collect())
    }
}

/// Running mean and variance (Welford) for reward normalisation.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct RunningStats {
    pub n: f64,
    pub mean: f64,
    pub m2: f64,
}

impl RunningStats {
    pub fn push_all(&mut self, xs: &[f32]) {
        for &x in xs {
            self.n += 1.0;
            let d = x as f64 - self.mean;
            self.mean += d / self.n;
            self.m2 += d * (x as f64 - self.mean);
        }
    }

    pub fn std(&self) -> f64 {
        if self.n < 2.0 {
            1.0
        } else {
            (self.m2 / (self.n - 1.0)).sqrt().max(1e-6)
        }
    }
}
