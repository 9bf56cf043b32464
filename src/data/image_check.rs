//! Decoding untrusted image bytes (uploads, downloads): PNG or JPEG only, the pixel count
//! checked from the header before decoding (so a decompression bomb is refused without
//! allocating it), truncated files refused.

use std::fmt;
use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits, RgbImage};

#[derive(Debug, Clone, PartialEq)]
pub enum ImageProblem {
    /// Neither PNG nor JPEG by its magic bytes.
    NotImage,
    /// PNG or JPEG by its magic bytes, but unreadable or cut short.
    Corrupt(String),
    TooManyPixels {
        width: u32,
        height: u32,
        max: u64,
    },
}

impl fmt::Display for ImageProblem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ImageProblem::NotImage => write!(f, "not a PNG or JPEG file"),
            ImageProblem::Corrupt(e) => write!(f, "cannot decode the image: {e}"),
            ImageProblem::TooManyPixels { width, height, max } => write!(
                f,
                "the image is {width}x{height} pixels; at most {max} pixels are accepted"
            ),
        }
    }
}

pub fn decode_checked(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageProblem> {
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        _ => return Err(ImageProblem::NotImage),
    };
    let corrupt = |e: &dyn fmt::Display| ImageProblem::Corrupt(e.to_string());
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| corrupt(&e))?;
    if width as u64 * height as u64 > max_pixels {
        return Err(ImageProblem::TooManyPixels {
            width,
            height,
            max: max_pixels,
        });
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a cut-off scan with grey instead of failing.
        return Err(corrupt(&"the JPEG is truncated (no end-of-image marker)"));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    reader.limits(limits);
    // `into_rgb8` keeps an RGB decode's buffer where `to_rgb8` would copy it.
    Ok(reader.decode().map_err(|e| corrupt(&e))?.into_rgb8())
}

/// A JPEG's last scan (after the last start-of-scan marker FFDA) must be followed by the
/// end-of-image marker FFD9; entropy-coded data never contains FF followed by D9 (FF is
/// byte-stuffed), so a file cut inside the scan lacks it.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let img = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
        });
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .unwrap();
        out
    }

    #[test]
    fn whole_jpeg_decodes_and_cut_jpeg_is_refused() {
        let j = jpeg();
        assert_eq!(decode_checked(&j, 10_000).unwrap().dimensions(), (40, 30));
        let e = decode_checked(&j[..j.len() * 2 / 3], 10_000).unwrap_err();
        assert!(matches!(e, ImageProblem::Corrupt(_)), "{e}");
        let e = decode_checked(&j, 1000).unwrap_err();
        assert!(matches!(
            e,
            ImageProblem::TooManyPixels {
                width: 40,
                height: 30,
                ..
            }
        ));
        assert_eq!(decode_checked(b"hello", 1000), Err(ImageProblem::NotImage));
    }
}
