//! A sentence encoder in the sentence-transformers layout (all-MiniLM-L6-v2): a BERT-family
//! encoder, the mean of its token states over the attention mask, L2-normalised, so the dot
//! product of two embeddings is their cosine similarity. The content reward `similarity` and
//! the evaluation's embedding similarity read captions with it.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use burn::prelude::*;
use serde_json::Value;

use super::bert::{encode_texts, mean_pool, BertConfig, BertModel};
use super::model::read_bert_config;
use crate::data::tokenizer::TextTokenizer;
use crate::model::layers::without_init;
use crate::model::weights::{load_module, SafetensorsFile};
use crate::util::read_json;

/// Texts per forward pass.
const BATCH: usize = 64;

pub struct SentenceEncoder {
    bert: BertModel,
    config: BertConfig,
    tokenizer: TextTokenizer,
    max_tokens: usize,
    device: Device,
}

impl SentenceEncoder {
    /// Opens a sentence-transformers folder: `config.json`, `model.safetensors` and
    /// `tokenizer.json` at its root; `1_Pooling/config.json`, where present, must ask for
    /// mean pooling; `sentence_bert_config.json` gives the longest input.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let pooling = dir.join("1_Pooling").join("config.json");
        if pooling.is_file() {
            let p: Value = read_json(&pooling)?;
            ensure!(
                p["pooling_mode_mean_tokens"].as_bool() == Some(true),
                "{}: only mean pooling is supported (pooling_mode_mean_tokens: true)",
                pooling.display()
            );
        }
        let config = read_bert_config(dir)?;
        let st = dir.join("sentence_bert_config.json");
        let max_tokens = if st.is_file() {
            let v: Value = read_json(&st)?;
            v["max_seq_length"]
                .as_u64()
                .with_context(|| format!("{}: no max_seq_length", st.display()))?
                as usize
        } else {
            128
        }
        .min(config.max_position_embeddings);
        let mut file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        if !file.contains("bert.embeddings.word_embeddings.weight") {
            file.rename_prefix("", "bert.");
        }
        let (bert, _) = load_module(
            without_init(|| BertModel::new(&config, device)),
            &file,
            "bert",
            &|_| false,
        )
        .with_context(|| format!("loading the sentence encoder {}", dir.display()))?;
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
        Ok(SentenceEncoder {
            bert,
            config,
            tokenizer,
            max_tokens,
            device: device.clone(),
        })
    }

    /// Unit-length embeddings of `texts`, one row each.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            let (ids, mask) = encode_texts(
                &self.tokenizer,
                chunk,
                true,
                self.max_tokens,
                self.config.pad_token_id,
                &self.device,
            )?;
            let pooled = mean_pool(self.bert.forward(ids, mask.clone()), mask);
            let d = pooled.dims()[1];
            for row in crate::tensor::floats(pooled).chunks(d) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                out.push(row.iter().map(|x| x / norm).collect());
            }
        }
        Ok(out)
    }

    /// For each caption, its highest cosine similarity to one of its references.
    pub fn max_similarity(&self, captions: &[&str], references: &[&[String]]) -> Result<Vec<f32>> {
        let caps = self.embed(captions)?;
        let flat: Vec<&str> = references
            .iter()
            .flat_map(|r| r.iter().map(String::as_str))
            .collect();
        let refs = self.embed(&flat)?;
        let mut at = 0;
        Ok(caps
            .iter()
            .zip(references)
            .map(|(c, rs)| {
                let best = refs[at..at + rs.len()]
                    .iter()
                    .map(|r| c.iter().zip(r).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max);
                at += rs.len();
                if rs.is_empty() {
                    0.0
                } else {
                    best
                }
            })
            .collect())
    }
}
