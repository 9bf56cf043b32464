//! `stylecap data synth`: writes the built-in world to a folder as an ordinary dataset: PNG
//! images, a JSONL manifest per split (with each picture's scene graph), the built-in style
//! corpus, a contact sheet to look at, and `dataset.json` with the full configuration, written
//! last so that its presence means the dataset is complete.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::util::{progress_bar, write_atomic, write_json, AtomicWriter};
use crate::world::styles;
use crate::world::{Colour, Example, Kind, Split, World, WorldConfig};

pub const DATASET_FILE: &str = "dataset.json";
pub const STYLES_FILE: &str = "styles.jsonl";
pub const CONTACT_SHEET: &str = "contact_sheet.png";
const FORMAT: &str = "stylecap-world/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    pub world: WorldConfig,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub compositional: usize,
    /// Sentences per built-in style in the style corpus.
    pub style_texts: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            world: WorldConfig::default(),
            train: 1000,
            val: 100,
            test: 100,
            compositional: 100,
            style_texts: 5000,
        }
    }
}

/// Largest side `data synth` renders (`--size`): a 4096-pixel square is 48 MB as RGB.
pub const MAX_IMAGE_SIZE: u32 = 4096;

impl SynthConfig {
    pub fn validate(&self) -> Result<()> {
        let size = self.world.image_size;
        ensure!(
            (1..=MAX_IMAGE_SIZE).contains(&size),
            "--size (world.image_size) must be 1 to {MAX_IMAGE_SIZE} pixels; got {size}"
        );
        Ok(())
    }

    pub fn count(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train,
            Split::Val => self.val,
            Split::Test => self.test,
            Split::Compositional => self.compositional,
        }
    }
}

/// `dataset.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub format: String,
    pub config: SynthConfig,
    pub styles: Vec<String>,
    pub held_out_pairs: Vec<(Kind, Colour)>,
}

impl DatasetInfo {
    pub fn read(dir: &Path) -> Result<DatasetInfo> {
        let info: DatasetInfo = crate::util::read_json(&dir.join(DATASET_FILE))?;
        if info.format != FORMAT {
            bail!(
                "{}: format {:?} is not {FORMAT:?}",
                dir.join(DATASET_FILE).display(),
                info.format
            );
        }
        Ok(info)
    }
}

/// The manifest line of one example.
pub fn manifest_line(example: &Example, image: &str) -> String {
    serde_json::json!({
        "id": example.id,
        "image": image,
        "captions": example.captions,
        "scene": example.scene,
    })
    .to_string()
}

pub fn encode_png(image: &image::RgbImage) -> Vec<u8> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Sub)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("encoding a PNG in memory cannot fail");
    bytes
}

/// Writes the dataset. If `out` already holds a complete dataset of the same configuration,
/// does nothing; a different configuration is an error (remove the folder or pick another).
pub fn synth(out: &Path, config: &SynthConfig, show_progress: bool) -> Result<DatasetInfo> {
    config.validate()?;
    if out.join(DATASET_FILE).is_file() {
        let existing = DatasetInfo::read(out)?;
        if existing.config == *config {
            return Ok(existing);
        }
        bail!(
            "{} already holds a dataset with another configuration; choose another --out",
            out.display()
        );
    }
    let world = World::new(config.world.clone());
    let total: usize = Split::ALL.iter().map(|&s| config.count(s)).sum();
    let bar = progress_bar(total as u64, "synth images", show_progress);
    for split in Split::ALL {
        let dir = out.join("images").join(split.name());
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Lines go to a temporary file renamed at the end: memory stays flat and the manifest
        // is never seen half-written.
        let manifest = out.join(format!("{}.jsonl", split.name()));
        let mut writer = AtomicWriter::create(&manifest)?;
        for start in (0..config.count(split)).step_by(2048) {
            let end = (start + 2048).min(config.count(split));
            let chunk: Vec<String> = (start..end)
                .into_par_iter()
                .map(|i| -> Result<String> {
                    let example = world.example(split, i as u64);
                    let rel = format!("images/{}/{}.png", split.name(), example.id);
                    write_atomic(&out.join(&rel), &encode_png(&example.image))?;
                    bar.inc(1);
                    Ok(manifest_line(&example, &rel))
                })
                .collect::<Result<_>>()?;
            for line in chunk {
                writer.write_line(&line)?;
            }
        }
        writer.commit()?;
    }
    bar.finish_and_clear();

    let style_names = styles::builtin_styles();
    let corpora = styles::builtin_corpora(config.style_texts, config.world.seed);
    let mut text = String::new();
    // Interleaved, so any prefix of the file is balanced.
    for j in 0..config.style_texts {
        for (style, corpus) in style_names.iter().zip(&corpora) {
            if let Some(t) = corpus.get(j) {
                text.push_str(&serde_json::json!({"text": t, "style": style}).to_string());
                text.push('\n');
            }
        }
    }
    write_atomic(&out.join(STYLES_FILE), text.as_bytes())?;

    let sample: Vec<Example> = (0..config.test.min(16))
        .map(|i| world.example(Split::Test, i as u64))
        .collect();
    if !sample.is_empty() {
        let items: Vec<(&image::RgbImage, &str)> = sample
            .iter()
            .map(|e| (&e.image, e.captions[0].as_str()))
            .collect();
        let sheet = crate::data::contact_sheet::contact_sheet(&items, 4);
        write_atomic(&out.join(CONTACT_SHEET), &encode_png(&sheet))?;
    }

    let info = DatasetInfo {
        format: FORMAT.into(),
        config: config.clone(),
        styles: style_names.iter().map(|s| s.to_string()).collect(),
        held_out_pairs: world.held_out_pairs().to_vec(),
    };
    write_json(&out.join(DATASET_FILE), &info)?;
    Ok(info)
}
