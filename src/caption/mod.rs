//! `stylecap caption`: pictures in, captions out. Each picture is captioned in each style
//! asked for. Pictures are decoded a batch at a time, the rows of a picture's styles sharing
//! its one encoding, and each row samples from its own random stream, keyed by the picture's
//! place in the list and the style's (`streams::CAPTION_SAMPLING`), not by its batch. A batch's
//! size still moves log-probabilities in their last digits (and so, rarely, a near tie), so
//! batches are always cut at the same pictures: a resumed run decodes exactly the batches an
//! uninterrupted one would, and writes the same file.

pub mod output;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use burn::prelude::*;
use image::RgbImage;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::image::open_rgb;
use crate::data::loaders::folder::image_files;
use crate::model::generate::{decode_rows, Choice};
use crate::model::{generate, DecodeOptions, Generation, LoadedCaptioner, Strategy};
use crate::rng::{streams, Rng};
use crate::tensor::index_tensor;

/// Most pictures in one batch.
pub const MAX_BATCH_SIZE: usize = 256;

/// What to caption and how.
#[derive(Debug, Clone)]
pub struct Job {
    pub pictures: Vec<PathBuf>,
    /// The captioner's style indices, in the order of the output; empty for a captioner
    /// without styles.
    pub styles: Vec<usize>,
    pub decoding: DecodeOptions,
    /// Pictures per batch (1 to [`MAX_BATCH_SIZE`]).
    pub batch_size: usize,
}

impl Job {
    /// Rows of one picture: one per style, or one for a captioner without styles.
    fn rows_per_picture(&self) -> usize {
        self.styles.len().max(1)
    }

    pub fn batches(&self) -> usize {
        self.pictures.len().div_ceil(self.batch_size)
    }
}

/// One caption of one picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The picture's path as listed.
    pub image: String,
    pub style: Option<String>,
    pub caption: String,
    /// Generated token ids (without the start token).
    pub token_ids: Vec<u32>,
    /// Each generated token's log-probability under the captioner.
    pub logprobs: Vec<f32>,
}

/// A picture that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The picture's path as listed.
    #[serde(rename = "unreadable")]
    pub path: String,
    pub reason: String,
}

/// What one batch gave: its captions, picture-major, and the pictures that could not be read.
#[derive(Debug, Default)]
pub struct BatchOutput {
    pub records: Vec<Record>,
    pub unreadable: Vec<Unreadable>,
}

/// What a job did.
#[derive(Debug, Default)]
pub struct Summary {
    pub captions: usize,
    /// Batches an earlier run of the job had finished.
    pub resumed_batches: usize,
    /// Every picture that could not be read, earlier runs' included.
    pub unreadable: Vec<Unreadable>,
}

/// Runs the job batch by batch, calling `on_batch` with each batch's output. With `out` (a
/// file and the job's [`job_signature`]) the records go to that file, resumably (see
/// [`output`]); `on_batch` is not called for batches an earlier run finished.
pub fn run(
    loaded: &LoadedCaptioner,
    job: &Job,
    device: &Device,
    out: Option<(&Path, &serde_json::Value)>,
    mut on_batch: impl FnMut(&BatchOutput) -> Result<()>,
) -> Result<Summary> {
    anyhow::ensure!(
        (1..=MAX_BATCH_SIZE).contains(&job.batch_size),
        "batch size {}: it must be 1 to {MAX_BATCH_SIZE}",
        job.batch_size
    );
    let mut file = out
        .map(|(path, signature)| output::Resumable::open(path, signature))
        .transpose()?;
    let first = file.as_ref().map_or(0, |f| f.batches_done());
    let mut summary = Summary {
        resumed_batches: first,
        unreadable: file
            .as_ref()
            .map_or(Vec::new(), |f| f.unreadable().to_vec()),
        ..Summary::default()
    };
    let bar =
        crate::util::progress_bar(job.pictures.len() as u64, "caption", job.pictures.len() > 1);
    bar.set_position((first * job.batch_size).min(job.pictures.len()) as u64);
    for b in first..job.batches() {
        let batch = caption_batch(loaded, job, b, device)?;
        if let Some(f) = file.as_mut() {
            f.push(b, &batch)?;
        }
        on_batch(&batch)?;
        summary.captions += batch.records.len();
        summary.unreadable.extend(batch.unreadable);
        bar.set_position(((b + 1) * job.batch_size).min(job.pictures.len()) as u64);
    }
    bar.finish_and_clear();
    if let Some(f) = file {
        f.finish()?;
    }
    Ok(summary)
}

/// The pictures of `paths`: files as given, folders replaced by the PNG and JPEG files under
/// them in path order.
pub fn list_pictures(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let found = image_files(p)?;
            if found.is_empty() {
                bail!("{}: no PNG or JPEG files in this folder", p.display());
            }
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    Ok(out)
}

/// Captions batch `b` of the job.
pub fn caption_batch(
    loaded: &LoadedCaptioner,
    job: &Job,
    b: usize,
    device: &Device,
) -> Result<BatchOutput> {
    let first = b * job.batch_size;
    let paths = &job.pictures[first..(first + job.batch_size).min(job.pictures.len())];
    let mut out = BatchOutput::default();
    // (index in the job, picture) of the readable ones.
    let mut readable: Vec<(usize, RgbImage)> = Vec::with_capacity(paths.len());
    for (k, path) in paths.iter().enumerate() {
        match open_rgb(path) {
            Ok(image) => readable.push((first + k, image)),
            Err(e) => out.unreadable.push(Unreadable {
                path: path.display().to_string(),
                reason: format!("{e:#}"),
            }),
        }
    }
    if readable.is_empty() {
        return Ok(out);
    }
    let images: Vec<RgbImage> = readable.iter().map(|(_, im)| im.clone()).collect();
    let pixels = loaded.preprocess.batch(&images, device)?;
    let gens = decode(loaded, job, &readable, pixels)?;
    let names = &loaded.model.config.style.styles;
    let per = job.rows_per_picture();
    for (k, g) in gens.into_iter().enumerate() {
        let (index, _) = &readable[k / per];
        out.records.push(Record {
            image: job.pictures[*index].display().to_string(),
            style: job.styles.get(k % per).map(|&s| names[s].clone()),
            caption: loaded.tokenizer.decode_caption(&g.tokens)?,
            token_ids: g.tokens,
            logprobs: g.logprobs,
        });
    }
    Ok(out)
}

/// The generations of the pictures' rows, picture-major (style order within a picture).
fn decode(
    loaded: &LoadedCaptioner,
    job: &Job,
    pictures: &[(usize, RgbImage)],
    pixels: Tensor<4>,
) -> Result<Vec<Generation>> {
    let model = &loaded.model;
    let per = job.rows_per_picture();
    let image_of_row: Vec<usize> = (0..pictures.len() * per).map(|r| r / per).collect();
    let style_of_row: Vec<usize> = (0..pictures.len() * per)
        .map(|r| job.styles.get(r % per).copied().unwrap_or(0))
        .collect();
    let styles =
        (!job.styles.is_empty() && model.style_prefix.is_some()).then_some(style_of_row.as_slice());
    let opts = &job.decoding;
    let (temperature, top_k, top_p) = match opts.strategy {
        Strategy::Beam { .. } => {
            // Beam search is deterministic; each row is its own picture of the batch.
            let rows = index_tensor(&image_of_row, &pixels.device());
            let rows = pixels.select(0, rows);
            return generate(model, rows, styles, opts);
        }
        Strategy::Greedy => (0.0, 0, 1.0),
        Strategy::Sample {
            temperature,
            top_k,
            top_p,
        } => (temperature, top_k, top_p),
    };
    let mut rngs: Vec<StdRng> = (0..image_of_row.len())
        .map(|r| {
            let item = (pictures[r / per].0 * per + r % per) as u64;
            StdRng::seed_from_u64(
                Rng::for_item(opts.seed, streams::CAPTION_SAMPLING, item).next_u64(),
            )
        })
        .collect();
    let encoded = model.encode(pixels).for_rows(&image_of_row);
    let rows = image_of_row.len();
    Ok(decode_rows(
        model,
        &encoded,
        styles,
        &vec![opts.max_new_tokens; rows],
        &vec![opts.repeats; rows],
        |r| Choice::draw(temperature, top_k, top_p, &mut rngs[r]),
    ))
}

/// What the output of a job depends on, for the resume check of [`output::Resumable`]: the
/// captioner, the pictures, the styles, the decoding, the batches and the float type.
pub fn job_signature(
    model_dir: &Path,
    loaded: &LoadedCaptioner,
    job: &Job,
    float_type: &str,
) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in &job.pictures {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update([0]);
    }
    let names = &loaded.model.config.style.styles;
    let model = std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.to_path_buf());
    serde_json::json!({
        "model": model.display().to_string(),
        "pictures": job.pictures.len(),
        "pictures_sha256": format!("{:x}", h.finalize()),
        "styles": job.styles.iter().map(|&s| names[s].clone()).collect::<Vec<_>>(),
        "decoding": job.decoding,
        "batch_size": job.batch_size,
        "float_type": float_type,
    })
}
