//! Decoding untrusted image bytes (uploads, downloads): PNG or JPEG only, the pixel count
//! checked from the header before decoding (so a decompression bomb is refused without
//! allocating it), truncated files refused. Local files go through the same checks
//! (`data::image::open_rgb`, `loaders::check_image_file`).

use std::fmt;
use std::io::{Cursor, Read, Seek, SeekFrom};

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
    /// One side over [`MAX_ASPECT_RATIO`] times the other.
    TooThin {
        width: u32,
        height: u32,
    },
}

/// Most times one side of an image may be the other's where it goes to a captioner's
/// preprocessing ([`check_shape`]: uploads to the server, local files). Preprocessing
/// resizes one axis at a time, and a thin image within the pixel limit (1 × 25,000,000)
/// would pass through an intermediate of its long side times the output's other side
/// (16 GB at 224), or, resized by its short side, come out billions of pixels long.
/// Downloads have their own limit, `fetch --max-aspect-ratio`: they are cropped or padded to
/// a square before they are resized, or, kept as they are, held to this one.
pub const MAX_ASPECT_RATIO: u64 = 100;

impl fmt::Display for ImageProblem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ImageProblem::NotImage => write!(f, "not a PNG or JPEG file"),
            ImageProblem::Corrupt(e) => write!(f, "cannot decode the image: {e}"),
            ImageProblem::TooManyPixels { width, height, max } => write!(
                f,
                "the image is {width}x{height} pixels; at most {max} pixels are accepted"
            ),
            ImageProblem::TooThin { width, height } => write!(
                f,
                "the image is {width}x{height} pixels; one side may be at most \
                 {MAX_ASPECT_RATIO} times the other"
            ),
        }
    }
}

/// The format and size from the header, without decoding.
pub fn header(bytes: &[u8]) -> Result<(ImageFormat, u32, u32), ImageProblem> {
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        _ => return Err(ImageProblem::NotImage),
    };
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| ImageProblem::Corrupt(e.to_string()))?;
    Ok((format, width, height))
}

pub fn decode_checked(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageProblem> {
    let corrupt = |e: &dyn fmt::Display| ImageProblem::Corrupt(e.to_string());
    let (format, width, height) = header(bytes)?;
    check_pixels(width, height, max_pixels)?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a cut-off scan with grey instead of failing.
        return Err(corrupt(&TRUNCATED_JPEG));
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

/// Refuses an image size (from its header) over `max_pixels`.
pub fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), ImageProblem> {
    if width as u64 * height as u64 > max_pixels {
        return Err(ImageProblem::TooManyPixels {
            width,
            height,
            max: max_pixels,
        });
    }
    Ok(())
}

/// Refuses an image size (from its header) whose sides differ more than
/// [`MAX_ASPECT_RATIO`] times.
pub fn check_shape(width: u32, height: u32) -> Result<(), ImageProblem> {
    let (long, short) = (width.max(height) as u64, width.min(height) as u64);
    if long > short.saturating_mul(MAX_ASPECT_RATIO) {
        return Err(ImageProblem::TooThin { width, height });
    }
    Ok(())
}

pub const TRUNCATED_JPEG: &str = "the JPEG is truncated (no end-of-image marker)";

/// A JPEG's last scan (after the last start-of-scan marker FFDA) must be followed by the
/// end-of-image marker FFD9; entropy-coded data never contains FF followed by D9 (FF is
/// byte-stuffed), so a file cut inside the scan lacks it. `bytes` may be the whole file or
/// only its end (a tail cut inside a scan holds no FFD9 either); a file without any scan
/// does not decode, so an end-of-image with no scan before it in `bytes` passes here.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        (None, Some(_)) => true,
        _ => false,
    }
}

/// Bytes read from the end of a JPEG file to find its end-of-image marker: checking a file
/// costs one short read, not a read of the whole file.
const JPEG_TAIL: u64 = 64 << 10;

/// `jpeg_is_complete` on a file's last bytes.
pub fn jpeg_file_is_complete(file: &mut (impl Read + Seek)) -> std::io::Result<bool> {
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(len.saturating_sub(JPEG_TAIL)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(jpeg_is_complete(&tail))
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

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        RgbImage::new(width, height)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    /// Thin images are refused from the header before any pixel is decoded or resized.
    #[test]
    fn thin_images_are_refused_at_their_header() {
        let limit = MAX_ASPECT_RATIO as u32;
        let checked = |bytes: &[u8]| {
            let (_, w, h) = header(bytes)?;
            check_shape(w, h)
        };
        assert!(checked(&png(1, limit)).is_ok());
        assert!(checked(&png(3 * limit, 3)).is_ok());
        for (w, h) in [(1, limit + 1), (3 * limit + 1, 3)] {
            let e = checked(&png(w, h)).unwrap_err();
            assert_eq!(
                e,
                ImageProblem::TooThin {
                    width: w,
                    height: h
                }
            );
            assert!(e.to_string().contains("at most 100 times the other"), "{e}");
        }
        // A zero-sized side counts as thin.
        assert!(check_shape(0, 5).is_err());
    }

    #[test]
    fn a_file_tail_tells_a_cut_jpeg_from_a_whole_one() {
        let j = jpeg();
        let whole = jpeg_file_is_complete(&mut Cursor::new(&j)).unwrap();
        let cut = jpeg_file_is_complete(&mut Cursor::new(&j[..j.len() - 10])).unwrap();
        assert!(whole && !cut);
        // Only the tail of a long file is read; the scan marker is far before it.
        let mut long = j.clone();
        let eoi = long.split_off(long.len() - 2);
        let at = long.len() - 100;
        let padding = vec![0u8; JPEG_TAIL as usize * 2];
        long.splice(at..at, padding);
        assert!(!jpeg_file_is_complete(&mut Cursor::new(&long)).unwrap());
        long.extend(eoi);
        assert!(jpeg_file_is_complete(&mut Cursor::new(&long)).unwrap());
    }
}
