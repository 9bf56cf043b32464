//! The style critic: a BERT encoder, mean pooling over the tokens, and a linear classifier
//! over the styles. Saved as a folder: `config.json` (the BERT config), `critic.json` (styles,
//! and the tokenizer's special-token use), `model.safetensors` (`bert.*`, `classifier.*`,
//! as transformers' `BertForSequenceClassification` names them) and `tokenizer.json`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use super::bert::{encode_texts, mean_pool, BertConfig, BertModel};
use crate::data::tokenizer::TextTokenizer;
use crate::model::layers::{apply_linear, linear, without_init};
use crate::model::weights::{
    collect_module, load_module, materialize, write_safetensors, SafetensorsFile,
};
use crate::util::{read_json, write_json};

/// stylecap's part of a critic folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticInfo {
    pub styles: Vec<String>,
    /// Whether texts are encoded with the tokenizer's special tokens ([CLS] ... [SEP]).
    pub special_tokens: bool,
    /// Longest input in tokens (longer texts are cut).
    pub max_tokens: usize,
}

#[derive(Module, Debug)]
pub struct Critic {
    pub bert: BertModel,
    pub classifier: Linear,
    #[module(skip)]
    pub bert_config: BertConfig,
    #[module(skip)]
    pub info: CriticInfo,
}

impl Critic {
    pub fn new(bert_config: BertConfig, info: CriticInfo, device: &Device) -> Self {
        Critic {
            bert: BertModel::new(&bert_config, device),
            classifier: linear(
                bert_config.hidden_size,
                info.styles.len(),
                true,
                bert_config.initializer_range,
                device,
            ),
            bert_config,
            info,
        }
    }

    /// Style logits `[B, S]`.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Tensor<2> {
        let h = self.bert.forward(ids, mask.clone());
        apply_linear(&self.classifier, mean_pool(h, mask))
    }

    pub fn save(&self, dir: &Path, tokenizer: &TextTokenizer) -> Result<()> {
        let mut tensors = Vec::new();
        collect_module(&self.bert, "bert", &mut tensors);
        collect_module(&self.classifier, "classifier", &mut tensors);
        write_safetensors(&dir.join("model.safetensors"), &tensors)?;
        write_json(&dir.join("config.json"), &self.bert_config)?;
        write_json(&dir.join("critic.json"), &self.info)?;
        tokenizer.save(&dir.join("tokenizer.json"))
    }

    /// Loads a critic folder, given as itself or as the run folder holding it in `model/`.
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, TextTokenizer)> {
        let model_dir = dir.join(crate::run::MODEL);
        let dir = if model_dir.join("critic.json").is_file() {
            model_dir.as_path()
        } else {
            dir
        };
        let info_path = dir.join("critic.json");
        let info: CriticInfo = read_json(&info_path)?;
        let bert_config = read_bert_config(dir)?;
        anyhow::ensure!(
            info.styles.len() >= 2,
            "{}: `styles` lists {} style(s); a critic tells at least 2 apart",
            info_path.display(),
            info.styles.len()
        );
        anyhow::ensure!(
            (1..=bert_config.max_position_embeddings).contains(&info.max_tokens),
            "{}: `max_tokens` is {}; the encoder's positions allow 1 to {}",
            info_path.display(),
            info.max_tokens,
            bert_config.max_position_embeddings
        );
        let file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        let model = without_init(|| Critic::new(bert_config, info, device));
        let strict = |_: &str| false;
        let (bert, _) = load_module(model.bert, &file, "bert", &strict)?;
        let (classifier, _) = load_module(model.classifier, &file, "classifier", &strict)?;
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
        tokenizer.check_ids_below(
            model.bert_config.vocab_size,
            "encoder",
            &dir.join("tokenizer.json"),
        )?;
        Ok((
            Critic {
                bert,
                classifier,
                ..model
            },
            tokenizer,
        ))
    }

    /// A new critic on a pretrained BERT / MiniLM folder (`config.json`, `model.safetensors`
    /// with or without the `bert.` prefix, `tokenizer.json`), with a fresh classifier.
    pub fn from_pretrained(
        dir: &Path,
        styles: Vec<String>,
        device: &Device,
    ) -> Result<(Self, TextTokenizer)> {
        let bert_config = read_bert_config(dir)?;
        let mut file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        if !file.contains("bert.embeddings.word_embeddings.weight") {
            file.rename_prefix("", "bert.");
        }
        let info = CriticInfo {
            styles,
            special_tokens: true,
            max_tokens: bert_config.max_position_embeddings.min(128),
        };
        // The classifier is drawn fresh by `materialize`, after the encoder is loaded.
        let model = without_init(|| Critic::new(bert_config, info, device));
        let (bert, _) = load_module(model.bert, &file, "bert", &|_| false)?;
        materialize(&model.classifier);
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
        Ok((Critic { bert, ..model }, tokenizer))
    }

    /// Token ids and mask for `texts`, right-padded.
    pub fn encode(
        &self,
        tokenizer: &TextTokenizer,
        texts: &[&str],
        device: &Device,
    ) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
        encode_texts(
            tokenizer,
            texts,
            self.info.special_tokens,
            self.info.max_tokens,
            self.bert_config.pad_token_id,
            device,
        )
    }

    /// Probability of each style for each text `[B, S]`, in batches of 64.
    pub fn probabilities(
        &self,
        tokenizer: &TextTokenizer,
        texts: &[&str],
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(64) {
            let (ids, mask) = self.encode(tokenizer, chunk, device)?;
            let p = softmax(self.forward(ids, mask), 1);
            let s = self.info.styles.len();
            let values = crate::tensor::floats(p);
            out.extend(values.chunks(s).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    pub fn style_index(&self, style: &str) -> Result<usize> {
        self.info
            .styles
            .iter()
            .position(|s| s == style)
            .with_context(|| {
                format!(
                    "unknown style {style:?} (the critic knows: {})",
                    self.info.styles.join(", ")
                )
            })
    }
}

pub fn read_bert_config(dir: &Path) -> Result<BertConfig> {
    let path = dir.join("config.json");
    let config: BertConfig = read_json(&path)?;
    if !matches!(config.model_type.as_str(), "bert") {
        bail!(
            "{}: model_type {:?} is not a BERT-family encoder",
            path.display(),
            config.model_type
        );
    }
    config
        .validate()
        .with_context(|| format!("{}: invalid BERT config", path.display()))?;
    Ok(config)
}
