//! Uploaded images: PNG or JPEG only, size checked from the header before decoding (so a
//! decompression bomb is refused without allocating it), truncated files refused.

use std::io::Cursor;

use axum::http::StatusCode;
use image::{ImageFormat, ImageReader, Limits, RgbImage};

use super::error::ApiError;

pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ApiError> {
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_image",
                "the image is not a PNG or JPEG file",
            ))
        }
    };
    let name = if format == ImageFormat::Png {
        "PNG"
    } else {
        "JPEG"
    };
    let bad = |e: &dyn std::fmt::Display| {
        ApiError::bad_request("bad_image", format!("cannot decode the {name} image: {e}"))
    };
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| bad(&e))?;
    if w as u64 * h as u64 > max_pixels {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
            format!("the image is {w}x{h} pixels; at most {max_pixels} pixels are accepted"),
        ));
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a cut-off scan with grey instead of failing.
        return Err(bad(&"the file is truncated (no end-of-image marker)"));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(&e))?;
    Ok(img.to_rgb8())
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
        let img = RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 90]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .unwrap();
        out
    }

    #[test]
    fn whole_jpeg_decodes_and_cut_jpeg_is_refused() {
        let j = jpeg();
        assert_eq!(decode_image(&j, 10_000).unwrap().dimensions(), (40, 30));
        let e = decode_image(&j[..j.len() * 2 / 3], 10_000).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_image"));
        let e = decode_image(&j, 1000).unwrap_err();
        assert_eq!(e.code, "image_too_large");
        let e = decode_image(b"hello, not an image", 1000).unwrap_err();
        assert_eq!(e.code, "unsupported_image");
    }
}
