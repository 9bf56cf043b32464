//! LoRA adapters (Hu et al., 2021) on the decoder's projections, as PEFT applies them to
//! GPT-2's `Conv1D`: `y = x·W + b + (α/r)·(x·A)·B`, with W frozen and shared and only A and B
//! trained (the layer is [`LoraAdapter`], which [`Conv1D`] carries).
//!
//! Targets: every decoder block's self-attention (`attn.c_attn`, `attn.c_proj`) and
//! cross-attention (`crossattention.c_attn`, `q_attn`, `c_proj`) projections, and with
//! `mlp` its MLP (`mlp.c_fc`, `mlp.c_proj`).
//!
//! An adapter folder is PEFT's: `adapter_config.json` and `adapter_model.safetensors`, whose
//! tensors are `base_model.model.<module>.lora_A.weight` `[r, in]` and `lora_B.weight`
//! `[out, r]`, so `PeftModel.from_pretrained(base, folder)` opens it. stylecap adds the
//! tokenizer and preprocessing files beside them, and reads the base captioner from
//! `base_model_name_or_path` (relative paths are relative to the adapter folder).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::gpt2::Gpt2LmHeadModel;
use super::layers::{without_init, Conv1D, LoraAdapter};
use super::weights::{
    freeze_named, load_module, stored, unused_tensors, write_safetensors, SafetensorsFile,
};
use super::Captioner;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// What PEFT puts before a module's name in the adapter file.
const PEFT_PREFIX: &str = "base_model.model.";

/// Which projections get adapters, and their rank and scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// r: the rank of each update.
    pub rank: usize,
    /// α: the update is scaled by α / r.
    pub alpha: f64,
    /// Also adapt the MLPs, not only the attention projections.
    pub mlp: bool,
}

impl LoraConfig {
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// PEFT's `target_modules` for these targets: a regular expression PEFT matches against
    /// whole module names.
    fn target_modules(&self) -> String {
        let mlp = if self.mlp { "|mlp\\.(c_fc|c_proj)" } else { "" };
        format!(
            "decoder\\.transformer\\.h\\.\\d+\\.((attn|crossattention)\\.(c_attn|q_attn|c_proj){mlp})"
        )
    }
}

/// The decoder projections LoRA can adapt, with their module names (`decoder.transformer.
/// h.0.attn.c_attn`); the MLP's only with `mlp`.
fn projections(decoder: &mut Gpt2LmHeadModel, mlp: bool) -> Vec<(String, &mut Conv1D)> {
    let mut out = Vec::new();
    for (i, block) in decoder.transformer.h.iter_mut().enumerate() {
        let at = format!("decoder.transformer.h.{i}");
        out.push((format!("{at}.attn.c_attn"), &mut block.attn.c_attn));
        out.push((format!("{at}.attn.c_proj"), &mut block.attn.c_proj));
        if let Some(cross) = &mut block.crossattention {
            out.push((format!("{at}.crossattention.c_attn"), &mut cross.c_attn));
            if let Some(q) = &mut cross.q_attn {
                out.push((format!("{at}.crossattention.q_attn"), q));
            }
            out.push((format!("{at}.crossattention.c_proj"), &mut cross.c_proj));
        }
        if mlp {
            out.push((format!("{at}.mlp.c_fc"), &mut block.mlp.c_fc));
            out.push((format!("{at}.mlp.c_proj"), &mut block.mlp.c_proj));
        }
    }
    out
}

/// The adapted projections of a model, with their names (the adapters are shared with the
/// model's: cloning a module copies no tensor).
fn adapted(model: &Captioner) -> Vec<(String, LoraAdapter)> {
    let mut decoder = model.decoder.clone();
    projections(&mut decoder, true)
        .into_iter()
        .filter_map(|(name, conv)| conv.lora.take().map(|l| (name, l)))
        .collect()
}

/// Whether a parameter (by checkpoint name) belongs to a LoRA adapter.
pub fn is_adapter_param(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

/// The adapters' configuration, if the model has any.
pub fn config_of(model: &Captioner) -> Option<LoraConfig> {
    let all = adapted(model);
    let (_, first) = all.first()?;
    let rank = first.rank();
    Some(LoraConfig {
        rank,
        alpha: first.scaling * rank as f64,
        mlp: all.iter().any(|(name, _)| name.contains(".mlp.")),
    })
}

/// Stops gradients for every parameter but the adapters'.
pub fn freeze_base(model: Captioner) -> Captioner {
    freeze_named(model, "", |name| !is_adapter_param(name))
}

/// Adds fresh adapters (PEFT's start: the model's output is unchanged) to the targets of
/// `config`. Drawn in module order, so the same seed gives the same adapters.
pub fn add_adapters(mut model: Captioner, config: &LoraConfig, device: &Device) -> Captioner {
    for (_, conv) in projections(&mut model.decoder, config.mlp) {
        let [d_in, d_out] = conv.shape();
        conv.lora = Some(LoraAdapter::new(
            d_in,
            d_out,
            config.rank,
            config.scaling(),
            device,
        ));
    }
    model
}

/// Folds each adapter into its weight (`W + (α/r)·A·B`) and removes it: a plain captioner that
/// computes what base + adapters computed.
pub fn merge_adapters(mut model: Captioner) -> Captioner {
    for (_, conv) in projections(&mut model.decoder, true) {
        if let Some(lora) = conv.lora.take() {
            let id = conv.weight.id;
            let merged = conv.weight.val() + lora.delta();
            conv.weight = Param::initialized(id, merged);
        }
    }
    model
}

/// Writes the adapters as a PEFT adapter folder's two files; `base` is the captioner folder
/// they adapt, recorded as `base_model_name_or_path`. Writes are atomic.
pub fn save_adapters(dir: &Path, model: &Captioner, base: &Path) -> Result<()> {
    let config = config_of(model).context("the captioner has no LoRA adapters to save")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tensors = Vec::new();
    for (name, lora) in adapted(model) {
        for (part, w) in [
            ("lora_A", &lora.lora_a.weight),
            ("lora_B", &lora.lora_b.weight),
        ] {
            let t = stored(w.val(), true);
            tensors.push((
                format!("{PEFT_PREFIX}{name}.{part}.weight"),
                t.shape,
                t.values,
            ));
        }
    }
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
    let peft = json!({
        "peft_type": "LORA",
        "task_type": null,
        "base_model_name_or_path": base.to_string_lossy(),
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": 0.0,
        "target_modules": config.target_modules(),
        "fan_in_fan_out": true,
        "bias": "none",
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "init_lora_weights": true,
        "inference_mode": true,
        "rank_pattern": {},
        "alpha_pattern": {},
        "auto_mapping": {
            "base_model_class": "VisionEncoderDecoderModel",
            "parent_library":
                "transformers.models.vision_encoder_decoder.modeling_vision_encoder_decoder"
        },
    });
    crate::util::write_json(&dir.join(ADAPTER_CONFIG), &peft)
}

/// Whether `dir` is an adapter folder (PEFT's config and no full model of its own).
pub fn is_adapter_folder(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file() && !dir.join("model.safetensors").is_file()
}

/// The parts of `adapter_config.json` stylecap reads; every LoRA variant it does not compute
/// is refused by name rather than loaded wrongly.
struct PeftConfig {
    base: PathBuf,
    alpha: f64,
    rslora: bool,
}

fn read_peft_config(dir: &Path) -> Result<PeftConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let v: Value = crate::util::read_json(&path)?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    let fail = |msg: String| anyhow::anyhow!("{}: {msg}", path.display());
    let peft_type = field("peft_type").and_then(Value::as_str).unwrap_or("");
    if peft_type != "LORA" {
        return Err(fail(format!(
            "field `peft_type` is `{peft_type}`; stylecap reads LORA adapters"
        )));
    }
    let truthy = |k: &str| field(k).and_then(Value::as_bool).unwrap_or(false);
    for k in ["use_dora", "use_qalora", "lora_bias"] {
        if truthy(k) {
            return Err(fail(format!(
                "field `{k}` is true; stylecap computes plain LoRA only"
            )));
        }
    }
    if let Some(b) = field("bias").and_then(Value::as_str) {
        if b != "none" {
            return Err(fail(format!(
                "field `bias` is `{b}`; stylecap reads `none` only"
            )));
        }
    }
    for k in ["rank_pattern", "alpha_pattern"] {
        if field(k)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(fail(format!(
                "field `{k}` is set; stylecap needs one rank and one alpha"
            )));
        }
    }
    if field("modules_to_save").is_some_and(|m| m.as_array().is_none_or(|a| !a.is_empty())) {
        return Err(fail(
            "field `modules_to_save` is set; stylecap reads adapters only".into(),
        ));
    }
    let alpha = field("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| fail("field `lora_alpha` is missing or not a number".into()))?;
    let base = field("base_model_name_or_path")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("field `base_model_name_or_path` is missing".into()))?;
    let base = PathBuf::from(base);
    Ok(PeftConfig {
        base: if base.is_absolute() {
            base
        } else {
            dir.join(base)
        },
        alpha,
        rslora: truthy("use_rslora"),
    })
}

/// The captioner folder an adapter folder adapts.
pub fn base_folder(dir: &Path) -> Result<PathBuf> {
    Ok(read_peft_config(dir)?.base)
}

/// Adds the adapters of the adapter folder `dir` (PEFT's layout, stylecap's or PEFT's own) to
/// `model`, its base. Every adapter tensor must fit a projection of the model.
pub fn load_adapters(mut model: Captioner, dir: &Path, device: &Device) -> Result<Captioner> {
    ensure!(
        config_of(&model).is_none(),
        "the captioner already has LoRA adapters"
    );
    let config = read_peft_config(dir)?;
    let mut file = SafetensorsFile::open(&dir.join(ADAPTER_WEIGHTS))?;
    file.rename_prefix(PEFT_PREFIX, "");
    let mut found = 0;
    for (name, conv) in projections(&mut model.decoder, true) {
        let a = format!("{name}.lora_A.weight");
        let Some(shape) = file.shape(&a) else {
            continue;
        };
        let rank = shape[0];
        ensure!(rank > 0, "{}: tensor `{a}` has rank 0", file.path.display());
        let scaling = if config.rslora {
            config.alpha / (rank as f64).sqrt()
        } else {
            config.alpha / rank as f64
        };
        let [d_in, d_out] = conv.shape();
        conv.lora = Some(without_init(|| {
            LoraAdapter::new(d_in, d_out, rank, scaling, device)
        }));
        found += 1;
    }
    if found == 0 {
        bail!(
            "{}: no LoRA tensor fits a decoder projection of the base captioner",
            file.path.display()
        );
    }
    let (decoder, report) =
        load_module(model.decoder, &file, "decoder", &|n| !is_adapter_param(n))?;
    model.decoder = decoder;
    let unused = unused_tensors(&file, &report.used, &|_| false);
    if !unused.is_empty() {
        bail!(
            "{}: adapter tensors that fit no decoder projection of the base captioner: {}",
            file.path.display(),
            unused.join(", ")
        );
    }
    Ok(model)
}
