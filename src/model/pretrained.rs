//! Opening single-component Hugging Face directories (a ViT, a CLIP vision tower, a GPT-2),
//! the starting points of a captioner built from pretrained parts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use serde_json::Value;

use super::captioner::is_gpt2_buffer;
use super::gpt2::{read_config, Gpt2Config, Gpt2LmHeadModel};
use super::layers::without_init;
use super::vision::{VisionConfig, VisionEncoder};
use super::weights::{load_module, unused_tensors, SafetensorsFile};

/// A model directory: a local path, or (with the `hub` feature and a network) a Hugging Face
/// Hub id `org/name`, downloaded to the Hub cache.
pub fn resolve(path_or_id: &str) -> Result<PathBuf> {
    let p = PathBuf::from(path_or_id);
    if p.is_dir() {
        return Ok(p);
    }
    if p.exists() {
        bail!(
            "{}: expected a model directory (with config.json and model.safetensors), found a file",
            p.display()
        );
    }
    if path_or_id.split('/').count() == 2 && !path_or_id.starts_with('.') {
        return download(path_or_id);
    }
    bail!("{path_or_id}: no such directory")
}

#[cfg(feature = "hub")]
fn download(id: &str) -> Result<PathBuf> {
    let (owner, name) = id.split_once('/').context("a Hub id is `org/name`")?;
    let client = hf_hub::HFClientSync::new()
        .map_err(|e| anyhow::anyhow!("{id}: cannot reach the Hub: {e}"))?;
    let repo = client.model(owner, name);
    let mut dir = None;
    for (file, required) in [
        ("config.json", true),
        ("model.safetensors", true),
        ("tokenizer.json", false),
        ("preprocessor_config.json", false),
    ] {
        match repo.download_file().filename(file).send() {
            Ok(path) => dir = path.parent().map(Path::to_path_buf),
            Err(e) if !required => eprintln!("note: {id} has no {file} ({e})"),
            Err(e) => bail!("{id}: cannot download {file}: {e}"),
        }
    }
    dir.with_context(|| format!("{id}: nothing downloaded"))
}

#[cfg(not(feature = "hub"))]
fn download(id: &str) -> Result<PathBuf> {
    bail!(
        "{id}: no such directory, and this build does not download from the Hugging Face Hub \
         (rebuild with `--features hub`, or download the model and pass its directory)"
    )
}

/// Opens a ViT / CLIP vision directory.
pub fn load_vision(dir: &Path, device: &Device) -> Result<(VisionConfig, VisionEncoder)> {
    let cfg_path = dir.join("config.json");
    let value: Value = crate::util::read_json(&cfg_path)?;
    let config = VisionConfig::from_json(&value)
        .with_context(|| format!("{}: invalid vision config", cfg_path.display()))?;
    let mut file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
    file.rename_prefix("vision_model.", "");
    // `CLIPModel` checkpoints hold text and vision towers; `CLIPVisionModel` only vision.
    let with_pooler = file.contains("pooler.dense.weight");
    let model = without_init(|| VisionEncoder::new(&config, with_pooler, device));
    let (model, report) = load_module(model, &file, "", &|_| false)?;
    let unused = unused_tensors(&file, &report.used, &|k| {
        matches!(config, VisionConfig::Clip(_))
            && (k.starts_with("text_model.") || k.contains("projection") || k == "logit_scale")
            || k.ends_with("position_ids")
    });
    if !unused.is_empty() {
        bail!(
            "{}: tensors not used by the model (config mismatch?): {}",
            file.path.display(),
            unused.join(", ")
        );
    }
    Ok((config, model))
}

/// What loading a GPT-2 did that the user should hear about.
pub struct Gpt2Load {
    pub config: Gpt2Config,
    pub model: Gpt2LmHeadModel,
    /// Cross-attention parameters the checkpoint lacked, initialised fresh.
    pub fresh: Vec<String>,
}

/// Opens a GPT-2 directory (`GPT2LMHeadModel` or bare `GPT2Model` names). With
/// `cross_attention`, a checkpoint without cross-attention gets fresh cross-attention blocks.
pub fn load_gpt2(dir: &Path, cross_attention: bool, device: &Device) -> Result<Gpt2Load> {
    let mut config = read_config(&dir.join("config.json"))?;
    let file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
    let had_cross = config.add_cross_attention;
    config.add_cross_attention = cross_attention || had_cross;
    // Fresh cross-attention blocks are drawn by `load_module`, after loading.
    let model = without_init(|| Gpt2LmHeadModel::new(&config, device));
    let may_be_missing = |name: &str| {
        cross_attention
            && !had_cross
            && (name.contains(".crossattention.") || name.contains(".ln_cross_attn."))
    };
    // Bare `GPT2Model` checkpoints (e.g. the original `gpt2`) have no `transformer.` prefix.
    let bare = !file.contains("transformer.wte.weight") && file.contains("wte.weight");
    let (model, report) = if bare {
        let (t, r) = load_module(model.transformer, &file, "", &may_be_missing)?;
        (Gpt2LmHeadModel { transformer: t }, r)
    } else {
        load_module(model, &file, "", &may_be_missing)?
    };
    let unused = unused_tensors(&file, &report.used, &|k| {
        k == "lm_head.weight" || is_gpt2_buffer(k)
    });
    if !unused.is_empty() {
        bail!(
            "{}: tensors not used by the model (config mismatch?): {}",
            file.path.display(),
            unused.join(", ")
        );
    }
    Ok(Gpt2Load {
        config,
        model,
        fresh: report.initialized_fresh,
    })
}
