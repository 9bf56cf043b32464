//! Encoder features kept across steps while the vision encoder is frozen
//! (`train_vision_layers = 0`): each picture goes through the encoder once per run instead
//! of at every step that shows it, in memory up to a budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::prelude::*;

use crate::model::Captioner;

/// A picture's identity for the cache: its index in the training data, or [`BLANK`].
pub type PictureKey = u64;

/// The blank picture shown with style texts that have none.
pub const BLANK: PictureKey = u64::MAX;

/// Encoder output states `[S, d]` by picture, up to a budget.
pub struct FeatureCache {
    /// Most f32 values kept.
    budget: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    states: HashMap<PictureKey, Arc<Vec<f32>>>,
    /// f32 values in `states`.
    kept: usize,
    /// Pictures found held so far.
    hits: usize,
    /// `[S, d]` of one picture's states, known from the first encoding.
    shape: Option<[usize; 2]>,
}

impl FeatureCache {
    pub fn new(budget_mb: usize) -> Self {
        FeatureCache {
            budget: budget_mb * (1 << 20) / 4,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().expect("not poisoned")
    }

    /// Pictures found in the cache so far.
    pub fn hits(&self) -> usize {
        self.held().hits
    }

    /// Pictures held.
    pub fn len(&self) -> usize {
        self.held().states.len()
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
        // The first row of each picture not held.
        let mut missing: Vec<usize> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if held.states.contains_key(k) {
                held.hits += 1;
            } else if !missing.iter().any(|&j| keys[j] == *k) {
                missing.push(i);
            }
        }
        let mut fresh: HashMap<PictureKey, Arc<Vec<f32>>> = HashMap::new();
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
                .or_else(|| held.states.get(k))
                .expect("encoded");
            values.extend_from_slice(row);
        }
        for (k, v) in fresh {
            if held.kept + v.len() <= self.budget {
                held.kept += v.len();
                held.states.insert(k, v);
            }
        }
        Tensor::from_data(TensorData::new(values, [keys.len(), s, d]), &device)
    }
}
