//! `stylecap export`: a captioner as one self-contained captioner folder.

use std::path::PathBuf;

use anyhow::{bail, Result};
use burn::prelude::Device;
use clap::Args;

use crate::model::folder::{self, model_dir, LoadedCaptioner};
use crate::model::lora;

#[derive(Args)]
pub struct ExportArgs {
    /// The captioner: a captioner folder, an adapter folder (LoRA adapters over a captioner
    /// folder, as `stylecap align --lora-rank` writes), or a run folder holding one in model/.
    #[arg(long)]
    pub model: PathBuf,
    /// Output folder: config.json, model.safetensors (transformers' VisionEncoderDecoderModel
    /// layout), tokenizer.json, preprocessor_config.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Fold LoRA adapters into the weights they adapt (W + α/r·A·B): a plain captioner that
    /// computes what base + adapters compute, without the base folder.
    #[arg(long)]
    pub merge_lora: bool,
}

pub fn run(a: ExportArgs, device: Device) -> Result<()> {
    let dir = model_dir(&a.model);
    let loaded = LoadedCaptioner::load(&dir, &device)?;
    let adapters = lora::config_of(&loaded.model);
    let model = match (&adapters, a.merge_lora) {
        (Some(_), true) => lora::merge_adapters(loaded.model),
        (Some(_), false) => bail!(
            "{} is an adapter folder (LoRA adapters over {}): pass --merge-lora to fold them into \
             the weights",
            dir.display(),
            lora::base_folder(&dir)?.display()
        ),
        (None, _) => loaded.model,
    };
    folder::save(&a.out, &model, &loaded.tokenizer, &loaded.preprocess)?;
    match adapters {
        Some(c) => println!(
            "merged LoRA adapters (rank {}, α {}) into {}",
            c.rank,
            c.alpha,
            a.out.display()
        ),
        None => println!("wrote {}", a.out.display()),
    }
    Ok(())
}
