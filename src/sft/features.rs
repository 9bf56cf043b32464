//! Encoder features kept across steps while the vision encoder is frozen
//! (`train_vision_layers = 0`): each picture goes through the encoder once per run instead
//! of at every step that shows it, in memory up to a budget and then, optionally, in a file
//! up to a second budget (for datasets whose features do not fit in memory: ViT-B/16's are
//! 0.6 MB per picture).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::prelude::*;

use crate::model::Captioner;

/// A picture's identity for the cache: its index in the training data, or [`BLANK`].
pub type PictureKey = u64;

/// The blank picture shown with style texts that have none.
pub const BLANK: PictureKey = u64::MAX;

/// Encoder output states `[S, d]` by picture, up to a budget in memory and another on disk.
pub struct FeatureCache {
    /// Most f32 values kept in memory.
    budget: usize,
    /// The spill file and the most f32 values written to it.
    disk: Option<(PathBuf, usize)>,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    states: HashMap<PictureKey, Arc<Vec<f32>>>,
    /// f32 values in `states`.
    kept: usize,
    /// Pictures found held so far (in memory or on disk).
    hits: usize,
    /// `[S, d]` of one picture's states, known from the first encoding.
    shape: Option<[usize; 2]>,
    /// The spill file, created at the first picture that does not fit in memory.
    file: Option<File>,
    /// Where each spilled picture's states start in the file, in f32 values.
    spilled: HashMap<PictureKey, usize>,
    /// f32 values in the file.
    written: usize,
}

impl Held {
    /// Writes a picture's states at the end of the spill file; false (and nothing recorded)
    /// if the file cannot be written, so that the picture is encoded again when next shown.
    fn spill(&mut self, path: &std::path::Path, key: PictureKey, values: &[f32]) -> bool {
        if self.file.is_none() {
            self.file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .ok();
        }
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let at = self.written;
        let ok =
            file.seek(SeekFrom::Start(at as u64 * 4)).is_ok() && file.write_all(&bytes).is_ok();
        if ok {
            self.spilled.insert(key, at);
            self.written += values.len();
        }
        ok
    }

    /// A spilled picture's states; None (and the picture forgotten) if they cannot be read.
    fn read_back(&mut self, key: PictureKey, len: usize) -> Option<Vec<f32>> {
        let at = *self.spilled.get(&key)?;
        let file = self.file.as_mut()?;
        let mut bytes = vec![0u8; len * 4];
        let ok = file.seek(SeekFrom::Start(at as u64 * 4)).is_ok()
            && file.read_exact(&mut bytes).is_ok();
        if !ok {
            self.spilled.remove(&key);
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }
}

impl FeatureCache {
    pub fn new(budget_mb: usize) -> Self {
        FeatureCache {
            budget: budget_mb * (1 << 20) / 4,
            disk: None,
            held: Mutex::default(),
        }
    }

    /// Pictures that do not fit in memory go to the file `path` (created when first needed,
    /// removed when the cache is dropped) up to `budget_mb` MiB.
    pub fn spilling_to(mut self, path: PathBuf, budget_mb: usize) -> Self {
        self.disk = (budget_mb > 0).then_some((path, budget_mb * (1 << 20) / 4));
        self
    }

    /// Pictures kept in the spill file.
    pub fn spilled(&self) -> usize {
        self.held().spilled.len()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().expect("not poisoned")
    }

    /// Pictures found in the cache so far.
    pub fn hits(&self) -> usize {
        self.held().hits
    }

    /// Pictures held, in memory or on disk.
    pub fn len(&self) -> usize {
        let held = self.held();
        held.states.len() + held.spilled.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoder's output states `[B, S, d]` of the pictures `keys` (preprocessed as
    /// `pixels`): those held are read, the others encoded by `model`'s (frozen) encoder, once
    /// per distinct picture, and kept while the budget allows.
    pub fn states(&self, model: &Captioner, keys: &[PictureKey], pixels: Tensor<4>) -> Tensor<3> {
        let device = pixels.device();
        let mut held = self.held();
        // Spilled pictures are read back first: one that cannot be read is encoded again.
        let mut fresh: HashMap<PictureKey, Arc<Vec<f32>>> = HashMap::new();
        let mut read: HashMap<PictureKey, Arc<Vec<f32>>> = HashMap::new();
        if let Some([s, d]) = held.shape {
            for k in keys {
                if held.spilled.contains_key(k) && !read.contains_key(k) {
                    if let Some(v) = held.read_back(*k, s * d) {
                        read.insert(*k, Arc::new(v));
                    }
                }
            }
        }
        // The first row of each picture not held.
        let mut missing: Vec<usize> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if held.states.contains_key(k) || read.contains_key(k) {
                held.hits += 1;
            } else if !missing.iter().any(|&j| keys[j] == *k) {
                missing.push(i);
            }
        }
        if !missing.is_empty() {
            let index = crate::tensor::index_tensor(&missing, &device);
            let encoded = model.encoder.forward(pixels.select(0, index)).detach();
            let [_, s, d] = encoded.dims();
            held.shape = Some([s, d]);
            let values = crate::tensor::floats(encoded);
            for (&i, row) in missing.iter().zip(values.chunks_exact(s * d)) {
                fresh.insert(keys[i], Arc::new(row.to_vec()));
            }
        }
        let [s, d] = held.shape.expect("set by the first encoding");
        let mut values = Vec::with_capacity(keys.len() * s * d);
        for k in keys {
            let row = fresh
                .get(k)
                .or_else(|| read.get(k))
                .or_else(|| held.states.get(k))
                .expect("encoded");
            values.extend_from_slice(row);
        }
        // Kept in encoding order, so that which pictures land in memory is deterministic.
        for &i in &missing {
            let (k, v) = (keys[i], fresh.remove(&keys[i]).expect("encoded"));
            if held.kept + v.len() <= self.budget {
                held.kept += v.len();
                held.states.insert(k, v);
            } else if let Some((path, budget)) = &self.disk {
                if held.written + v.len() <= *budget {
                    held.spill(path, k, &v);
                }
            }
        }
        Tensor::from_data(TensorData::new(values, [keys.len(), s, d]), &device)
    }
}

impl Drop for FeatureCache {
    fn drop(&mut self) {
        if let (Some((path, _)), Ok(held)) = (&self.disk, self.held.get_mut()) {
            if held.file.take().is_some() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
