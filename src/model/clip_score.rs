//! CLIPScore and RefCLIPScore (Hessel et al. 2021) by a `CLIPModel` folder: both towers with
//! their projections as transformers' `CLIPModel` (`get_image_features`,
//! `get_text_features`), the tokenizer and the image processor the folder ships. The content
//! reward `clip` and the evaluation's CLIP scores read captions with it.
//!
//! CLIP-S(c, v) = 2.5 · max(cos(c, v), 0); RefCLIP-S is the harmonic mean of CLIP-S and the
//! caption's best cosine to one of the references' text embeddings (at least 0). Captions are
//! embedded as written, without the reference code's "A photo depicts" prompt. `logit_scale`
//! only sharpens softmaxes over cosines, so it is not read.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use burn::nn::Linear;
use burn::prelude::*;
use image::RgbImage;
use serde_json::Value;

use super::clip::{ClipVisionConfig, ClipVisionModel};
use super::clip_text::{ClipTextConfig, ClipTextModel};
use super::layers::{apply_linear, linear, without_init};
use super::weights::{load_module, unused_tensors, SafetensorsFile};
use crate::data::image::{PreprocessorConfig, SizeSpec};
use crate::data::tokenizer::TextTokenizer;
use crate::util::read_json;

/// Texts per forward pass.
const TEXT_BATCH: usize = 64;
/// Images per forward pass.
const IMAGE_BATCH: usize = 32;
/// CLIP-S's weight `w`, which stretches CLIP's usual cosines (about 0–0.4) toward [0, 1].
pub const CLIP_S_WEIGHT: f32 = 2.5;

/// CLIP-S of a caption whose embedding has cosine `cos` with the image's.
pub fn clip_s(cos: f32) -> f32 {
    CLIP_S_WEIGHT * cos.max(0.0)
}

/// RefCLIP-S: the harmonic mean of `clip_s` and `ref_cos`, the caption's highest cosine to a
/// reference (below 0 counts as 0); 0 when both are.
pub fn ref_clip_s(clip_s: f32, ref_cos: f32) -> f32 {
    let r = ref_cos.max(0.0);
    if clip_s + r > 0.0 {
        2.0 * clip_s * r / (clip_s + r)
    } else {
        0.0
    }
}

/// `config.json` of a `CLIPModel`.
#[derive(Debug, Clone)]
pub struct ClipConfig {
    pub text: ClipTextConfig,
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
}

impl ClipConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let v: Value = read_json(path)?;
        let part = |key: &str| -> Result<Value> {
            v.get(key).cloned().with_context(|| {
                format!(
                    "{}: no `{key}`: expected the config of a CLIPModel (text_config, \
                     vision_config, projection_dim)",
                    path.display()
                )
            })
        };
        let text: ClipTextConfig = serde_json::from_value(part("text_config")?)
            .with_context(|| format!("{}: invalid text_config", path.display()))?;
        let vision: ClipVisionConfig = serde_json::from_value(part("vision_config")?)
            .with_context(|| format!("{}: invalid vision_config", path.display()))?;
        text.validate()
            .with_context(|| format!("{}: invalid text_config", path.display()))?;
        vision
            .validate()
            .with_context(|| format!("{}: invalid vision_config", path.display()))?;
        let projection_dim = match v.get("projection_dim") {
            None => 512,
            Some(p) => p.as_u64().filter(|&p| p > 0).with_context(|| {
                format!(
                    "{}: projection_dim must be a positive integer, found {p}",
                    path.display()
                )
            })? as usize,
        };
        Ok(ClipConfig {
            text,
            vision,
            projection_dim,
        })
    }
}

/// transformers' `CLIPModel`: the two towers and their projections (without bias) into the
/// shared embedding space.
#[derive(Module, Debug)]
pub struct ClipModel {
    pub text_model: ClipTextModel,
    pub vision_model: ClipVisionModel,
    pub text_projection: Linear,
    pub visual_projection: Linear,
}

impl ClipModel {
    pub fn new(cfg: &ClipConfig, device: &Device) -> Self {
        let p = cfg.projection_dim;
        Self {
            text_model: ClipTextModel::new(&cfg.text, device),
            vision_model: ClipVisionModel::new(&cfg.vision, device),
            text_projection: linear(cfg.text.hidden_size, p, false, 0.02, device),
            visual_projection: linear(cfg.vision.hidden_size, p, false, 0.02, device),
        }
    }

    /// `get_image_features`: `[B, projection_dim]`, not normalised.
    pub fn image_features(&self, pixel_values: Tensor<4>) -> Tensor<2> {
        let hidden = self.vision_model.forward(pixel_values);
        apply_linear(&self.visual_projection, self.vision_model.pooled(hidden))
    }

    /// `get_text_features` of the rows of `ids` (each row's own tokens, before padding):
    /// `[B, projection_dim]`, not normalised.
    pub fn text_features(&self, ids: &[Vec<u32>], pad: u32, device: &Device) -> Tensor<2> {
        let b = ids.len();
        let t = ids.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut flat = vec![pad as i64; b * t];
        for (i, row) in ids.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                flat[i * t + j] = x as i64;
            }
        }
        let input = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), device);
        let positions = self.text_model.pooled_positions(ids);
        let hidden = self.text_model.forward(input);
        apply_linear(
            &self.text_projection,
            self.text_model.pooled(hidden, &positions),
        )
    }
}

/// A `CLIPModel` folder ready to score captions against pictures.
pub struct ClipScorer {
    pub model: ClipModel,
    pub config: ClipConfig,
    tokenizer: TextTokenizer,
    preprocess: PreprocessorConfig,
    device: Device,
}

/// Unit-length rows of a `[B, D]` tensor.
fn unit_rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    let d = t.dims()[1];
    crate::tensor::floats(t)
        .chunks(d)
        .map(|row| {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl ClipScorer {
    /// Opens a `CLIPModel` folder (such as openai/clip-vit-base-patch32): `config.json`,
    /// `model.safetensors` (`text_model.*`, `vision_model.*`, `text_projection.weight`,
    /// `visual_projection.weight`), `tokenizer.json` and `preprocessor_config.json`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        ensure!(
            dir.is_dir(),
            "{}: no such CLIP model folder (config.json, model.safetensors, tokenizer.json, \
             preprocessor_config.json)",
            dir.display()
        );
        let config = ClipConfig::load(&dir.join("config.json"))?;
        let file = SafetensorsFile::open(&dir.join("model.safetensors"))?;
        let (model, report) = load_module(
            without_init(|| ClipModel::new(&config, device)),
            &file,
            "",
            &|_| false,
        )
        .with_context(|| format!("loading the CLIP model {}", dir.display()))?;
        let unused = unused_tensors(&file, &report.used, &|k| {
            k == "logit_scale" || k.ends_with("position_ids")
        });
        if !unused.is_empty() {
            bail!(
                "{}: tensors not used by the CLIP model (config mismatch?): {}",
                file.path.display(),
                unused.join(", ")
            );
        }
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = TextTokenizer::load(&tok_path)?
            .truncating(config.text.max_position_embeddings)
            .with_context(|| tok_path.display().to_string())?;
        let probe = tokenizer.encode_with("a", true)?;
        let ends = if config.text.eos_token_id == 2 {
            probe.last() == probe.iter().max()
        } else {
            probe.last() == Some(&config.text.eos_token_id)
        };
        ensure!(
            probe.len() >= 2 && ends,
            "{}: texts are not framed by start and end tokens (got {probe:?} for \"a\"; \
             text_config.eos_token_id is {}): CLIP pools the end token's state",
            tok_path.display(),
            config.text.eos_token_id
        );
        let pre_path = dir.join("preprocessor_config.json");
        let mut preprocess = PreprocessorConfig::load(&pre_path)?;
        // CLIP's image processor reads a single `size` as the short side, not a square.
        if let SizeSpec::Square(s) = preprocess.size {
            preprocess.size = SizeSpec::ShortestEdge { shortest_edge: s };
        }
        let side = config.vision.image_size;
        ensure!(
            preprocess.output_size() == Some((side, side)),
            "{}: preprocesses images to {:?} (height, width), the vision tower reads {side}×{side}",
            pre_path.display(),
            preprocess.output_size()
        );
        Ok(ClipScorer {
            model,
            config,
            tokenizer,
            preprocess,
            device: device.clone(),
        })
    }

    /// The tokenizer's ids of `text`: start and end tokens included, cut to the text tower's
    /// positions.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode_with(text, true)
    }

    /// The preprocessed pixels of `images`, `[B, 3, H, W]`.
    pub fn pixels(&self, images: &[&RgbImage]) -> Tensor<4> {
        let side = self.config.vision.image_size;
        let mut values = Vec::with_capacity(images.len() * 3 * side * side);
        for img in images {
            values.extend(self.preprocess.pixels(img));
        }
        Tensor::from_data(
            TensorData::new(values, [images.len(), 3, side, side]),
            &self.device,
        )
    }

    /// `get_image_features` of `images`, one row each (not normalised).
    pub fn image_features(&self, images: &[&RgbImage]) -> Vec<Vec<f32>> {
        let p = self.config.projection_dim;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(IMAGE_BATCH) {
            let f = self.model.image_features(self.pixels(chunk));
            out.extend(crate::tensor::floats(f).chunks(p).map(<[f32]>::to_vec));
        }
        out
    }

    /// `get_text_features` of `texts`, one row each (not normalised).
    pub fn text_features(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let p = self.config.projection_dim;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(TEXT_BATCH) {
            let ids = chunk
                .iter()
                .map(|t| self.token_ids(t))
                .collect::<Result<Vec<_>>>()?;
            // Any id pads: padding follows the pooled end token, which cannot attend to it.
            let f = self.model.text_features(&ids, 0, &self.device);
            out.extend(crate::tensor::floats(f).chunks(p).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// Unit-length image embeddings.
    pub fn embed_images(&self, images: &[&RgbImage]) -> Vec<Vec<f32>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(IMAGE_BATCH) {
            out.extend(unit_rows(self.model.image_features(self.pixels(chunk))));
        }
        out
    }

    /// Unit-length text embeddings.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .text_features(texts)?
            .into_iter()
            .map(|row| {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                row.iter().map(|x| x / norm).collect()
            })
            .collect())
    }

    /// CLIP-S of each caption with the image at the same position.
    pub fn clip_score(&self, captions: &[&str], images: &[&RgbImage]) -> Result<Vec<f32>> {
        Ok(self.scores(captions, images, None)?.0)
    }

    /// RefCLIP-S of each caption with the image and references at the same position; None
    /// for a caption whose picture has no references.
    pub fn ref_clip_score(
        &self,
        captions: &[&str],
        images: &[&RgbImage],
        references: &[&[String]],
    ) -> Result<Vec<Option<f32>>> {
        Ok(self.scores(captions, images, Some(references))?.1)
    }

    /// CLIP-S and (with `references`) RefCLIP-S of each caption. A picture that several
    /// captions share (a rollout's samples) is embedded once, as are its references.
    pub fn scores(
        &self,
        captions: &[&str],
        images: &[&RgbImage],
        references: Option<&[&[String]]>,
    ) -> Result<(Vec<f32>, Vec<Option<f32>>)> {
        ensure!(
            captions.len() == images.len() && references.is_none_or(|r| r.len() == captions.len()),
            "{} captions for {} images and {} reference lists",
            captions.len(),
            images.len(),
            references.map_or(0, <[_]>::len)
        );
        let caps = self.embed_texts(captions)?;
        let (unique, of_image) = dedup(images, |a, b| std::ptr::eq(*a, *b));
        let pics = self.embed_images(&unique);
        let clip: Vec<f32> = caps
            .iter()
            .zip(&of_image)
            .map(|(c, &i)| clip_s(dot(c, &pics[i])))
            .collect();
        let Some(references) = references else {
            return Ok((clip, vec![None; captions.len()]));
        };
        let (lists, of_list) = dedup(references, |a, b| {
            std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()
        });
        let flat: Vec<&str> = lists
            .iter()
            .flat_map(|l| l.iter().map(String::as_str))
            .collect();
        let refs = self.embed_texts(&flat)?;
        let mut start = Vec::with_capacity(lists.len());
        let mut at = 0;
        for l in &lists {
            start.push(at);
            at += l.len();
        }
        let ref_scores = caps
            .iter()
            .zip(&of_list)
            .zip(&clip)
            .map(|((c, &l), &s)| {
                let own = &refs[start[l]..start[l] + lists[l].len()];
                let best = own.iter().map(|r| dot(c, r)).reduce(f32::max)?;
                Some(ref_clip_s(s, best))
            })
            .collect();
        Ok((clip, ref_scores))
    }
}

/// The distinct items of `items` (by `same`), and each item's index among them.
fn dedup<T: Copy>(items: &[T], same: impl Fn(&T, &T) -> bool) -> (Vec<T>, Vec<usize>) {
    let mut unique: Vec<T> = Vec::new();
    let index = items
        .iter()
        .map(|x| match unique.iter().position(|u| same(u, x)) {
            Some(i) => i,
            None => {
                unique.push(*x);
                unique.len() - 1
            }
        })
        .collect();
    (unique, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_s_and_ref_clip_s_by_hand() {
        // 2.5 · 0.3 = 0.75; a negative cosine scores 0.
        assert!((clip_s(0.3) - 0.75).abs() < 1e-6);
        assert_eq!(clip_s(-0.2), 0.0);
        // H(0.75, 0.5) = 2 · 0.75 · 0.5 / 1.25 = 0.6.
        assert!((ref_clip_s(0.75, 0.5) - 0.6).abs() < 1e-6);
        // H(0.5, 1) = 1 / 1.5 = 0.6667: below the mean of the two, pulled to the lower.
        assert!((ref_clip_s(0.5, 1.0) - 2.0 / 3.0).abs() < 1e-6);
        // A reference cosine below 0 counts as 0, and so does the harmonic mean.
        assert_eq!(ref_clip_s(0.75, -0.4), 0.0);
        assert_eq!(ref_clip_s(0.0, 0.0), 0.0);
        // cos 0.2 with the image, best reference 0.8: CLIP-S 0.5, RefCLIP-S 2·0.5·0.8/1.3.
        assert!((ref_clip_s(clip_s(0.2), 0.8) - 0.8 / 1.3).abs() < 1e-6);
    }

    #[test]
    fn dedup_keeps_first_occurrences_in_order() {
        let (u, i) = dedup(&[3, 1, 3, 2, 1], |a, b| a == b);
        assert_eq!(u, vec![3, 1, 2]);
        assert_eq!(i, vec![0, 1, 0, 2, 1]);
    }
}
