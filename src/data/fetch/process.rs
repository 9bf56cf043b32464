//! A downloaded file becomes a dataset image: its size and shape checked from the header,
//! decoded under the pixel limit, hashed (exact and perceptual), resized and encoded. The
//! memory one image costs is bounded by the pixel limit (the decoded image and its grey
//! copy) and by `size` (a center crop is cut before resizing, so the resize never makes
//! an image larger than size×size).

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, RgbImage};
use sha2::{Digest, Sha256};

use super::config::{FetchConfig, OutputFormat, ResizeMode};
use super::dedup::dhash;
use super::download::Failure;
use crate::data::image_check::{decode_checked, header, ImageProblem};
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

fn problem(p: ImageProblem) -> Failure {
    match p {
        ImageProblem::NotImage => Failure::new("not_an_image", p.to_string()),
        ImageProblem::Corrupt(_) => Failure::new("decode_failed", p.to_string()),
        ImageProblem::TooManyPixels { .. } | ImageProblem::TooThin { .. } => {
            Failure::new("image_too_large", p.to_string())
        }
    }
}

pub fn process(bytes: &[u8], c: &FetchConfig) -> Result<Processed, Failure> {
    let (_, width, height) = header(bytes).map_err(problem)?;
    if width.min(height) < c.min_image_side {
        return Err(Failure::new(
            "image_too_small",
            format!("{width}x{height}, shorter side under {}", c.min_image_side),
        ));
    }
    let ratio = width.max(height) as f64 / width.min(height).max(1) as f64;
    if ratio > c.max_aspect_ratio {
        return Err(Failure::new(
            "image_too_large",
            format!(
                "{width}x{height}: the sides' ratio {ratio:.0}:1 is over --max-aspect-ratio {}",
                c.max_aspect_ratio
            ),
        ));
    }
    let img = decode_checked(bytes, c.max_pixels).map_err(problem)?;
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

/// Brings an image to `size`, keeping its aspect ratio: the centre square resized to
/// size×size, the whole image with its long side scaled to `size` and padded to a square,
/// or only scaled. The crop comes before the resize, so a thin strip never becomes a huge
/// intermediate image.
pub fn fit(img: &RgbImage, size: u32, mode: ResizeMode) -> RgbImage {
    let (w, h) = img.dimensions();
    let scaled = |img: &RgbImage, (nw, nh): (u32, u32)| {
        if (nw, nh) == img.dimensions() {
            img.clone()
        } else {
            resize(img, nw, nh, Filter::Bicubic)
        }
    };
    let fit_long = || {
        let s = size as f64 / w.max(h) as f64;
        (
            ((w as f64 * s).round() as u32).clamp(1, size),
            ((h as f64 * s).round() as u32).clamp(1, size),
        )
    };
    match mode {
        ResizeMode::CenterCrop => {
            if w == h {
                return scaled(img, (size, size));
            }
            let side = w.min(h);
            let square = image::imageops::crop_imm(img, (w - side) / 2, (h - side) / 2, side, side)
                .to_image();
            scaled(&square, (size, size))
        }
        ResizeMode::Pad => {
            let r = scaled(img, fit_long());
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
        ResizeMode::Keep => scaled(img, fit_long()),
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
        // A thin strip is cropped before it is resized: the result is size×size whatever
        // the strip's length.
        let strip = RgbImage::new(20_000, 4);
        assert_eq!(
            fit(&strip, 64, ResizeMode::CenterCrop).dimensions(),
            (64, 64)
        );
        assert_eq!(fit(&strip, 64, ResizeMode::Keep).dimensions(), (64, 1));
    }
}
