//! Loaders for the datasets users have. Each returns records that remember their file and
//! line, and either stops at the first bad record with an error naming it, or (with
//! `skip_bad`) skips and lists every bad record.

pub mod coco;
pub mod folder;
pub mod manifest;
pub mod style_corpus;

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::data::image_check::{jpeg_file_is_complete, TRUNCATED_JPEG};

/// Image file types the loaders decode.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// The kinds of data `stylecap` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// COCO captions JSON.
    Coco,
    /// JSONL `{"image", "caption"}`.
    Manifest,
    /// Images with `.txt` captions beside them.
    ImageFolder,
    /// JSONL `{"text", "style"}`.
    StyleJsonl,
    /// A folder of `STYLE.txt` files.
    StyleFolder,
    /// A dataset written by `stylecap data synth` (splits + style corpus).
    World,
}

impl Format {
    pub fn describe(self) -> &'static str {
        match self {
            Format::Coco => "COCO captions JSON",
            Format::Manifest => "JSONL image-caption manifest",
            Format::ImageFolder => "image folder with .txt captions",
            Format::StyleJsonl => "JSONL style corpus",
            Format::StyleFolder => "style corpus folder (one STYLE.txt per style)",
            Format::World => "built-in scene world dataset",
        }
    }
}

/// Tells the format of `path` from its name and first record.
pub fn detect(path: &Path) -> Result<Format> {
    if path.is_dir() {
        if path.join(crate::data::synth::DATASET_FILE).is_file() {
            return Ok(Format::World);
        }
        let mut has_image = false;
        let mut has_txt = false;
        for entry in std::fs::read_dir(path)
            .with_context(|| format!("cannot read folder {}", path.display()))?
        {
            let p = entry?.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            has_image |= IMAGE_EXTENSIONS.contains(&ext.as_str()) || p.is_dir();
            has_txt |= ext == "txt";
        }
        return match (has_image, has_txt) {
            (true, _) => Ok(Format::ImageFolder),
            (false, true) => Ok(Format::StyleFolder),
            (false, false) => bail!("{}: no images or .txt files found", path.display()),
        };
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "json" => Ok(Format::Coco),
        "jsonl" => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .with_context(|| format!("{}: empty file", path.display()))?;
            let value: serde_json::Value = serde_json::from_str(first)
                .with_context(|| format!("{}: line 1: malformed JSON", path.display()))?;
            if value.get("image").is_some() {
                Ok(Format::Manifest)
            } else if value.get("text").is_some() && value.get("style").is_some() {
                Ok(Format::StyleJsonl)
            } else {
                bail!(
                    "{}: line 1 has neither \"image\" (a caption manifest) nor \"text\" and \
                     \"style\" (a style corpus)",
                    path.display()
                )
            }
        }
        _ if !path.exists() => bail!("{}: no such file or folder", path.display()),
        _ => bail!(
            "{}: unknown data format (expected .json COCO captions, .jsonl, or a folder)",
            path.display()
        ),
    }
}

/// Checks that an image exists, its header reads as a supported image and a JPEG is not cut
/// short (from its last bytes), without decoding it. Returns its size.
pub fn check_image_file(path: &Path) -> Result<(u32, u32), String> {
    if !path.is_file() {
        return Err(format!("image not found: {}", path.display()));
    }
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("cannot read image {}: {e}", path.display()))?;
    let jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let size = reader
        .into_dimensions()
        .map_err(|e| format!("not a readable image {}: {e}", path.display()))?;
    use crate::data::image_check::{check_pixels, check_shape};
    check_pixels(size.0, size.1, crate::data::image::MAX_FILE_PIXELS)
        .and_then(|()| check_shape(size.0, size.1))
        .map_err(|p| format!("{}: {p}", path.display()))?;
    if jpeg {
        let complete = std::fs::File::open(path)
            .and_then(|mut f| jpeg_file_is_complete(&mut f))
            .map_err(|e| format!("cannot read image {}: {e}", path.display()))?;
        if !complete {
            return Err(format!(
                "not a readable image {}: {TRUNCATED_JPEG}",
                path.display()
            ));
        }
    }
    Ok(size)
}
