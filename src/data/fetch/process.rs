//! A downloaded file becomes a dataset image: decoded under the pixel limit, filtered by
//! size, hashed (exact and perceptual), resized and encoded.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, RgbImage};
use sha2::{Digest, Sha256};

use super::config::{FetchConfig, OutputFormat, ResizeMode};
use super::dedup::dhash;
use super::download::Failure;
use crate::data::image_check::{decode_checked, ImageProblem};
use crate::data::resize::{resize, Filter};

pub struct Processed {
    pub encoded: Vec<u8>,
    /// SHA-256 of the downloaded bytes (exact duplicates).
    pub sha256: String,
    /// 64-bit difference hash of the decoded image (near duplicates).
    pub phash: u64,
    pub width: u32,
    pub height: u32,
}

pub fn process(bytes: &[u8], c: &FetchConfig) -> Result<Processed, Failure> {
    let img = decode_checked(bytes, c.max_pixels).map_err(|p| match p {
        ImageProblem::NotImage => Failure::new("not_an_image", p.to_string()),
        ImageProblem::Corrupt(_) => Failure::new("decode_failed", p.to_string()),
        ImageProblem::TooManyPixels { .. } => Failure::new("image_too_large", p.to_string()),
    })?;
    let (width, height) = img.dimensions();
    if width.min(height) < c.min_image_side {
        return Err(Failure::new(
            "image_too_small",
            format!("{width}x{height}, shorter side under {}", c.min_image_side),
        ));
    }
    let phash = dhash(&img);
    let out = fit(&img, c.size, c.resize);
    let mut encoded = Vec::new();
    match c.format {
        OutputFormat::Jpeg => out
            .write_with_encoder(JpegEncoder::new_with_quality(&mut encoded, c.jpeg_quality))
            .map_err(|e| Failure::new("encode_failed", e.to_string()))?,
        OutputFormat::Png => out
            .write_to(&mut Cursor::new(&mut encoded), ImageFormat::Png)
            .map_err(|e| Failure::new("encode_failed", e.to_string()))?,
    }
    let sha256 = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Processed {
        encoded,
        sha256,
        phash,
        width,
        height,
    })
}

/// Resizes to `size` keeping the aspect ratio, then crops or pads to a square (or not).
pub fn fit(img: &RgbImage, size: u32, mode: ResizeMode) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale_to = |side: u32| {
        let s = size as f64 / side as f64;
        (
            ((w as f64 * s).round() as u32).max(1),
            ((h as f64 * s).round() as u32).max(1),
        )
    };
    let scaled = |(nw, nh): (u32, u32)| {
        if (nw, nh) == (w, h) {
            img.clone()
        } else {
            resize(img, nw, nh, Filter::Bicubic)
        }
    };
    match mode {
        ResizeMode::CenterCrop => {
            let r = scaled(scale_to(w.min(h)));
            let (rw, rh) = r.dimensions();
            let (cw, ch) = (rw.min(size), rh.min(size));
            image::imageops::crop_imm(&r, (rw - cw) / 2, (rh - ch) / 2, cw, ch).to_image()
        }
        ResizeMode::Pad => {
            let r = scaled(scale_to(w.max(h)));
            let mut canvas = RgbImage::new(size, size);
            let (rw, rh) = r.dimensions();
            image::imageops::replace(
                &mut canvas,
                &r,
                ((size.saturating_sub(rw)) / 2) as i64,
                ((size.saturating_sub(rh)) / 2) as i64,
            );
            canvas
        }
        ResizeMode::Keep => scaled(scale_to(w.max(h))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_gives_the_requested_shapes() {
        let img = RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 7]));
        assert_eq!(fit(&img, 64, ResizeMode::CenterCrop).dimensions(), (64, 64));
        assert_eq!(fit(&img, 64, ResizeMode::Pad).dimensions(), (64, 64));
        assert_eq!(fit(&img, 64, ResizeMode::Keep).dimensions(), (64, 43));
        // Padding is black above and below a wide image.
        let p = fit(&img, 64, ResizeMode::Pad);
        assert_eq!(p.get_pixel(32, 0).0, [0, 0, 0]);
        assert_ne!(p.get_pixel(32, 32).0, [0, 0, 0]);
    }
}
