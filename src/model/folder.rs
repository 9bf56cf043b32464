//! A captioner folder, the unit every stage reads and writes: `config.json` and
//! `model.safetensors` (transformers' VisionEncoderDecoder layout), `tokenizer.json` and
//! `preprocessor_config.json`; or an adapter folder, LoRA adapters over a captioner folder
//! (PEFT's `adapter_config.json` and `adapter_model.safetensors`, see [`lora`]).
//! [`LoadedCaptioner::load`], [`save`] and [`save_adapters`] are the only code that reads or
//! writes one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use image::RgbImage;

use super::lora;
use super::score::caption_logprobs;
use super::{generate, Captioner, DecodeOptions, Generation};
use crate::data::image::PreprocessorConfig;
use crate::data::tokenizer::TextTokenizer;
use crate::util::write_json;

/// Whether `dir` holds a captioner folder or an adapter folder.
pub fn holds_captioner(dir: &Path) -> bool {
    dir.join("config.json").is_file() || dir.join(lora::ADAPTER_CONFIG).is_file()
}

/// A captioner folder given as itself or as the run folder holding it in `model/`.
pub fn model_dir(path: &Path) -> PathBuf {
    let inside = path.join(crate::run::MODEL);
    if holds_captioner(&inside) {
        inside
    } else {
        path.to_path_buf()
    }
}

/// Writes a captioner folder.
pub fn save(
    dir: &Path,
    model: &Captioner,
    tokenizer: &TextTokenizer,
    preprocess: &PreprocessorConfig,
) -> Result<()> {
    model.save(dir)?;
    save_processing(dir, tokenizer, preprocess)
}

/// Writes the LoRA adapters of `model` as an adapter folder over the captioner folder `base`
/// (see [`lora`]): PEFT's two files, with the tokenizer and preprocessing beside them, so
/// that every stage opens it as it opens a captioner folder.
pub fn save_adapters(
    dir: &Path,
    model: &Captioner,
    base: &Path,
    tokenizer: &TextTokenizer,
    preprocess: &PreprocessorConfig,
) -> Result<()> {
    let base = std::path::absolute(model_dir(base))
        .with_context(|| format!("cannot resolve {}", base.display()))?;
    lora::save_adapters(dir, model, &base)?;
    save_processing(dir, tokenizer, preprocess)
}

fn save_processing(
    dir: &Path,
    tokenizer: &TextTokenizer,
    preprocess: &PreprocessorConfig,
) -> Result<()> {
    tokenizer.save(&dir.join("tokenizer.json"))?;
    write_json(&dir.join("preprocessor_config.json"), preprocess)
}

/// A captioner folder: model, tokenizer and preprocessing.
pub struct LoadedCaptioner {
    pub model: Captioner,
    pub tokenizer: TextTokenizer,
    pub preprocess: PreprocessorConfig,
}

impl LoadedCaptioner {
    /// Opens a captioner folder, or an adapter folder over one (its base, then its adapters;
    /// the adapter folder's tokenizer and preprocessing when it has them).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if lora::is_adapter_folder(dir) {
            let base_dir = lora::base_folder(dir)?;
            // Adapters over adapters are not read (and a folder naming itself would recurse).
            anyhow::ensure!(
                !lora::is_adapter_folder(&model_dir(&base_dir)),
                "{}: its base_model_name_or_path, {}, is an adapter folder too; name the full \
                 captioner folder the adapters were trained on",
                dir.join("adapter_config.json").display(),
                base_dir.display()
            );
            let base = Self::load(&model_dir(&base_dir), device).with_context(|| {
                format!(
                    "loading {}, the base captioner of the adapters in {}",
                    base_dir.display(),
                    dir.display()
                )
            })?;
            let model = lora::load_adapters(base.model, dir, device)?;
            let tokenizer = match dir.join("tokenizer.json") {
                p if p.is_file() => TextTokenizer::load(&p)?,
                _ => base.tokenizer,
            };
            let preprocess = match dir.join("preprocessor_config.json") {
                p if p.is_file() => PreprocessorConfig::load(&p)?,
                _ => base.preprocess,
            };
            let loaded = LoadedCaptioner {
                model,
                tokenizer,
                preprocess,
            };
            loaded.check(dir)?;
            return Ok(loaded);
        }
        let model = Captioner::load(dir, device)?;
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
        let pre = dir.join("preprocessor_config.json");
        let preprocess = if pre.is_file() {
            PreprocessorConfig::load(&pre)?
        } else {
            PreprocessorConfig::square(model.config.encoder.image_size())
        };
        let loaded = LoadedCaptioner {
            model,
            tokenizer,
            preprocess,
        };
        loaded.check(dir)?;
        Ok(loaded)
    }

    /// What the files must agree on: every id the tokenizer writes within the decoder's
    /// vocabulary, and preprocessing to the encoder's input size.
    fn check(&self, dir: &Path) -> Result<()> {
        self.tokenizer.check_ids_below(
            self.model.decoder.vocab_size(),
            "decoder",
            &dir.join("tokenizer.json"),
        )?;
        self.preprocess.check_output(
            &dir.join("preprocessor_config.json"),
            self.model.config.encoder.image_size(),
        )
    }

    /// One caption per image in `style`.
    pub fn caption(
        &self,
        images: &[RgbImage],
        style: &str,
        opts: &DecodeOptions,
        device: &Device,
    ) -> Result<Vec<String>> {
        Ok(self.generate(images, style, opts, device)?.0)
    }

    /// One caption per image in `style`, with its tokens and their log-probabilities.
    pub fn generate(
        &self,
        images: &[RgbImage],
        style: &str,
        opts: &DecodeOptions,
        device: &Device,
    ) -> Result<(Vec<String>, Vec<Generation>)> {
        let s = self.model.config.style_index(style)?;
        let (mut texts, mut gens) = (Vec::new(), Vec::new());
        for (k, chunk) in images.chunks(50).enumerate() {
            let pixels = self.preprocess.batch(chunk, device)?;
            let opts = DecodeOptions {
                seed: opts.seed.wrapping_add(k as u64),
                ..opts.clone()
            };
            for g in generate(&self.model, pixels, Some(&vec![s; chunk.len()]), &opts)? {
                texts.push(self.tokenizer.decode(&g.tokens)?.trim().to_string());
                gens.push(g);
            }
        }
        Ok((texts, gens))
    }

    /// Log-probabilities of given token sequences, caption `i` for image `i` in `style`.
    pub fn score(
        &self,
        images: &[RgbImage],
        style: &str,
        tokens: &[Vec<u32>],
        device: &Device,
    ) -> Result<Vec<Vec<f32>>> {
        let s = self.model.config.style_index(style)?;
        let mut out = Vec::with_capacity(tokens.len());
        for (imgs, toks) in images.chunks(50).zip(tokens.chunks(50)) {
            let pixels = self.preprocess.batch(imgs, device)?;
            out.extend(caption_logprobs(
                &self.model,
                pixels,
                Some(&vec![s; imgs.len()]),
                toks,
            ));
        }
        Ok(out)
    }
}
