//! Image preprocessing as transformers' image processors do it, configured by
//! `preprocessor_config.json`: resize, center crop, rescale, normalize, to `[C, H, W]`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use image::imageops::FilterType;
use image::RgbImage;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum SizeSpec {
    HeightWidth { height: usize, width: usize },
    ShortestEdge { shortest_edge: usize },
    Square(usize),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreprocessorConfig {
    #[serde(default = "yes")]
    pub do_resize: bool,
    pub size: SizeSpec,
    /// PIL resampling filter: 0 nearest, 2 bilinear, 3 bicubic, 1 lanczos.
    #[serde(default = "bilinear")]
    pub resample: u32,
    #[serde(default)]
    pub do_center_crop: bool,
    #[serde(default)]
    pub crop_size: Option<SizeSpec>,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "rescale")]
    pub rescale_factor: f32,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    #[serde(default = "half3")]
    pub image_mean: Vec<f32>,
    #[serde(default = "half3")]
    pub image_std: Vec<f32>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}
fn bilinear() -> u32 {
    2
}
fn rescale() -> f32 {
    1.0 / 255.0
}
fn half3() -> Vec<f32> {
    vec![0.5; 3]
}

impl PreprocessorConfig {
    /// Square resize to `size` and normalise with mean = std = 0.5 (ViT's defaults).
    pub fn square(size: usize) -> Self {
        Self {
            do_resize: true,
            size: SizeSpec::HeightWidth {
                height: size,
                width: size,
            },
            resample: 2,
            do_center_crop: false,
            crop_size: None,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: half3(),
            image_std: half3(),
            extra: Default::default(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let cfg: Self = crate::util::read_json(path)?;
        if cfg.image_mean.len() != 3 || cfg.image_std.len() != 3 {
            bail!(
                "{}: image_mean and image_std must have 3 values",
                path.display()
            );
        }
        if !cfg.image_mean.iter().all(|m| m.is_finite())
            || !cfg.image_std.iter().all(|s| s.is_finite() && *s != 0.0)
        {
            bail!(
                "{}: image_mean must be finite and image_std finite and non-zero; got {:?} and {:?}",
                path.display(),
                cfg.image_mean,
                cfg.image_std
            );
        }
        if !(cfg.rescale_factor.is_finite() && cfg.rescale_factor > 0.0) {
            bail!(
                "{}: rescale_factor must be a positive number; got {}",
                path.display(),
                cfg.rescale_factor
            );
        }
        Ok(cfg)
    }

    /// Refuses preprocessing that does not bring every image to `size` × `size`, the
    /// encoder's input; `path` names the file in the message.
    pub fn check_output(&self, path: &Path, size: usize) -> Result<()> {
        // The crop cuts from the resized image and does not pad it (transformers would).
        if let (true, true, Some((ch, cw))) =
            (self.do_resize, self.do_center_crop, self.output_size())
        {
            let (h, w) = match self.size {
                SizeSpec::HeightWidth { height, width } => (height, width),
                SizeSpec::Square(s) | SizeSpec::ShortestEdge { shortest_edge: s } => (s, s),
            };
            if h < ch || w < cw {
                bail!(
                    "{}: the resize `size` ({h}x{w} at least) is smaller than the crop \
                     ({ch}x{cw})",
                    path.display()
                );
            }
        }
        let fixed = self.do_resize || self.do_center_crop;
        match self.output_size() {
            Some(out) if fixed && out == (size, size) => Ok(()),
            Some((h, w)) if fixed => bail!(
                "{}: preprocessing gives {h}x{w} images; the encoder expects {size}x{size}",
                path.display()
            ),
            _ => bail!(
                "{}: preprocessing gives images of varying size (set `size` to height/width \
                 or enable the center crop); the encoder expects {size}x{size}",
                path.display()
            ),
        }
    }

    /// Output `(height, width)`.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        match (self.do_center_crop, &self.crop_size, &self.size) {
            (true, Some(SizeSpec::HeightWidth { height, width }), _) => Some((*height, *width)),
            (true, Some(SizeSpec::Square(s)), _) => Some((*s, *s)),
            (_, _, SizeSpec::HeightWidth { height, width }) => Some((*height, *width)),
            (_, _, SizeSpec::Square(s)) => Some((*s, *s)),
            _ => None,
        }
    }

    /// `[3, H, W]` values for one RGB image.
    pub fn pixels(&self, img: &RgbImage) -> Vec<f32> {
        // Borrowed until a step makes a new image: a large upload is not copied whole.
        let mut img = std::borrow::Cow::Borrowed(img);
        if self.do_resize {
            let (w, h) = img.dimensions();
            let (nw, nh) = match self.size {
                SizeSpec::HeightWidth { height, width } => (width as u32, height as u32),
                SizeSpec::Square(s) => (s as u32, s as u32),
                // As transformers: the short side becomes `s`, the long side scales (floored).
                SizeSpec::ShortestEdge { shortest_edge: s } => {
                    // Bounded, not wrapped: decoding refuses images thin enough to reach it
                    // (`image_check::MAX_ASPECT_RATIO`).
                    let long = |l: u32, short: u32| {
                        (s as u64 * l as u64 / short.max(1) as u64).min(u32::MAX as u64) as u32
                    };
                    let s = s as u32;
                    if w <= h {
                        (s, long(h, w))
                    } else {
                        (long(w, h), s)
                    }
                }
            };
            if (nw, nh) != (w, h) {
                img = std::borrow::Cow::Owned(if self.resample == 0 {
                    image::imageops::resize(&*img, nw, nh, FilterType::Nearest)
                } else {
                    super::resize::resize(
                        &img,
                        nw,
                        nh,
                        super::resize::Filter::from_pil(self.resample),
                    )
                });
            }
        }
        if self.do_center_crop {
            if let Some((ch, cw)) = self.output_size() {
                let (w, h) = img.dimensions();
                let left = w.saturating_sub(cw as u32) / 2;
                let top = h.saturating_sub(ch as u32) / 2;
                img = std::borrow::Cow::Owned(
                    image::imageops::crop_imm(&*img, left, top, cw as u32, ch as u32).to_image(),
                );
            }
        }
        let (w, h) = img.dimensions();
        let (w, h) = (w as usize, h as usize);
        let mut out = vec![0.0f32; 3 * h * w];
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                let mut v = p.0[c] as f32;
                if self.do_rescale {
                    v *= self.rescale_factor;
                }
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                out[c * h * w + y as usize * w + x as usize] = v;
            }
        }
        out
    }

    /// A batch `[B, 3, H, W]`; all images must come out the same size.
    pub fn batch(&self, images: &[RgbImage], device: &Device) -> Result<Tensor<4>> {
        let mut values = Vec::new();
        let mut dims = None;
        for img in images {
            let px = self.pixels(img);
            let (w, h) = match self.output_size() {
                Some((h, w)) => (w, h),
                None => (img.width() as usize, img.height() as usize),
            };
            if *dims.get_or_insert((h, w)) != (h, w) || px.len() != 3 * h * w {
                bail!("images preprocess to different sizes; set `size` to height/width or enable center crop");
            }
            values.extend(px);
        }
        let (h, w) = dims.context("no images")?;
        Ok(Tensor::from_data(
            TensorData::new(values, [images.len(), 3, h, w]),
            device,
        ))
    }
}

/// Pixels accepted in a local image file: beyond this a file is refused before decoding
/// (about 300 MB as RGB).
pub const MAX_FILE_PIXELS: u64 = 100_000_000;

/// Opens an image file as RGB, naming the file on failure: the one loader of local images
/// (caption, training data, inspect), with the checks downloads and uploads get (PNG or
/// JPEG, the pixel count read first, truncated files refused).
pub fn open_rgb(path: &Path) -> Result<RgbImage> {
    use crate::data::image_check::{check_shape, decode_checked, header};
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    header(&bytes)
        .and_then(|(_, w, h)| check_shape(w, h))
        .and_then(|()| decode_checked(&bytes, MAX_FILE_PIXELS))
        .map_err(|p| anyhow::anyhow!("{}: not a readable image: {p}", path.display()))
}
