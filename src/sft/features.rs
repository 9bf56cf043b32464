//! Encoder features kept across steps while the vision encoder is frozen
//! (`train_vision_layers = 0`): each picture goes through the encoder once per run instead
//! of at every step that shows it, in memory up to a budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    states: Mutex<HashMap<PictureKey, Arc<Vec<f32>>>>,
    kept: Mutex<usize>,
    hits: Mutex<usize>,
    /// `[S, d]` of one picture's states, known from the first encoding.
    shape: Mutex<Option<[usize; 2]>>,
}

impl FeatureCache {
    pub fn new(budget_mb: usize) -> Self {
        FeatureCache {
            budget: budget_mb * (1 << 20) / 4,
            states: Mutex::default(),
            kept: Mutex::default(),
            hits: Mutex::default(),
            shape: Mutex::default(),
        }
    }

    /// Pictures found in the cache so far.
    pub fn hits(&self) -> usize {
        *self.hits.lock().expect("not poisoned")
    }

    /// Pictures held.
    pub fn len(&self) -> usize {
        self.states.lock().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoder's output states `[B, S, d]` of the pictures `keys` (preprocessed as
    /// `pixels`): those held are read, the others encoded by `model`'s (frozen) encoder, and
    /// kept while the budget allows.
    pub fn states(&self, model: &Captioner, keys: &[PictureKey], pixels: Tensor<4>) -> Tensor<3> {
        let device = pixels.device();
        let missing: Vec<usize> = {
            let held = self.states.lock().expect("not poisoned");
            (0..keys.len())
                .filter(|&i| !held.contains_key(&keys[i]))
                .collect()
        };
        *self.hits.lock().expect("not poisoned") += keys.len() - missing.len();
        let mut fresh: HashMap<PictureKey, Arc<Vec<f32>>> = HashMap::new();
        if !missing.is_empty() {
            let index = crate::tensor::index_tensor(&missing, &device);
            let encoded = model.encoder.forward(pixels.select(0, index)).detach();
            let [_, s, d] = encoded.dims();
            *self.shape.lock().expect("not poisoned") = Some([s, d]);
            let values = crate::tensor::floats(encoded);
            for (&i, row) in missing.iter().zip(values.chunks_exact(s * d)) {
                fresh.insert(keys[i], Arc::new(row.to_vec()));
            }
        }
        let mut held = self.states.lock().expect("not poisoned");
        let mut kept = self.kept.lock().expect("not poisoned");
        let rows: Vec<Arc<Vec<f32>>> = keys
            .iter()
            .map(|k| {
                fresh
                    .get(k)
                    .or_else(|| held.get(k))
                    .expect("encoded")
                    .clone()
            })
            .collect();
        for (k, v) in fresh {
            if *kept + v.len() <= self.budget {
                *kept += v.len();
                held.insert(k, v);
            }
        }
        let [s, d] = self
            .shape
            .lock()
            .expect("not poisoned")
            .expect("set by the first encoding");
        let mut values = Vec::with_capacity(keys.len() * s * d);
        for r in &rows {
            values.extend_from_slice(r);
        }
        Tensor::from_data(TensorData::new(values, [keys.len(), s, d]), &device)
    }
}
