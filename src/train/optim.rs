//! AdamW over named parameters, with per-group learning rates, global-norm gradient clipping
//! and gradient accumulation.
//!
//! The optimizer works in checkpoint names and layout, so its state is saved beside the model
//! as one more safetensors file (`exp_avg.NAME`, `exp_avg_sq.NAME`) and a resumed run continues
//! exactly. burn's own optimizer clips per tensor, not by the global norm most trainers use.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::tensor::Gradients;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::weights::{
    read_named, replace_named, write_safetensors, SafetensorsFile, StoredTensor, Values,
};
use crate::train::grads::named_gradients;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices and embeddings (not biases, LayerNorms).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub clip_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            clip_norm: 1.0,
        }
    }
}

/// Gradients summed over micro-batches, by parameter name.
#[derive(Default)]
pub struct Accumulated {
    grads: BTreeMap<String, Vec<f32>>,
    micro_batches: usize,
}

impl Accumulated {
    /// Adds `scale` × the gradients of one micro-batch.
    pub fn add<M: Module>(&mut self, model: &M, grads: &Gradients, scale: f32) {
        self.add_named(named_gradients(model, grads), scale);
    }

    /// Adds `scale` × gradients already read by name.
    pub fn add_named(&mut self, named: Vec<(String, Option<Vec<f32>>)>, scale: f32) {
        for (name, g) in named {
            let Some(g) = g else { continue };
            match self.grads.get_mut(&name) {
                Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += scale * b),
                None => {
                    self.grads
                        .insert(name, g.into_iter().map(|x| scale * x).collect());
                }
            }
        }
        self.micro_batches += 1;
    }

    pub fn global_norm(&self) -> f64 {
        self.grads
            .values()
            .map(|g| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
            .sum::<f64>()
            .sqrt()
    }
}

pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates done so far (for bias correction).
    pub step: u64,
    moments: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
}

/// What one update did, for logging.
pub struct UpdateStats {
    pub grad_norm: f64,
    pub clipped: bool,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient, with learning rate `lr(name)`.
    pub fn update<M: Module>(
        &mut self,
        model: M,
        grads: Accumulated,
        lr: impl Fn(&str) -> f64,
    ) -> (M, UpdateStats) {
        let c = self.config.clone();
        let grad_norm = grads.global_norm();
        let clip = if c.clip_norm > 0.0 && grad_norm > c.clip_norm {
            c.clip_norm / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let values: BTreeMap<String, StoredTensor> = read_named(&model, "", &mut Values)
            .into_iter()
            .filter(|(name, _)| grads.grads.contains_key(name))
            .map(|(name, v)| (name, v.expect("values are always read")))
            .collect();
        let mut updated: BTreeMap<String, StoredTensor> = BTreeMap::new();
        for (name, g) in grads.grads {
            let Some(mut p) = values.get(&name).cloned() else {
                continue;
            };
            let rate = lr(&name);
            let (m, v) = self
                .moments
                .entry(name.clone())
                .or_insert_with(|| (vec![0.0; g.len()], vec![0.0; g.len()]));
            let decay = if p.shape.len() >= 2 {
                c.weight_decay
            } else {
                0.0
            };
            let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
            let (clip, bc1, bc2, eps) = (clip as f32, bc1 as f32, bc2 as f32, c.eps as f32);
            let (rate, shrink) = (rate as f32, (1.0 - rate * decay) as f32);
            p.values
                .par_iter_mut()
                .zip(m.par_iter_mut())
                .zip(v.par_iter_mut())
                .zip(g.par_iter())
                .for_each(|(((p, m), v), &g)| {
                    let g = g * clip;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    let step = (*m / bc1) / ((*v / bc2).sqrt() + eps);
                    *p = *p * shrink - rate * step;
                });
            updated.insert(name, p);
        }
        let model = replace_named(model, "", |name, _| updated.remove(name));
        (
            model,
            UpdateStats {
                grad_norm,
                clipped: clip < 1.0,
            },
        )
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = vec![("step".to_string(), vec![1], vec![self.step as f32])];
        for (name, (m, v)) in &self.moments {
            tensors.push((format!("exp_avg.{name}"), vec![m.len()], m.clone()));
            tensors.push((format!("exp_avg_sq.{name}"), vec![v.len()], v.clone()));
        }
        write_safetensors(path, &tensors)
    }

    pub fn load(config: AdamWConfig, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let step = file
            .tensors
            .get("step")
            .with_context(|| format!("{}: no `step`", path.display()))?
            .values[0] as u64;
        let mut moments = BTreeMap::new();
        for (key, t) in &file.tensors {
            if let Some(name) = key.strip_prefix("exp_avg.") {
                let sq = file
                    .tensors
                    .get(&format!("exp_avg_sq.{name}"))
                    .with_context(|| format!("{}: no exp_avg_sq for {name}", path.display()))?;
                moments.insert(name.to_string(), (t.values.clone(), sq.values.clone()));
            }
        }
        Ok(AdamW {
            config,
            step,
            moments,
        })
    }
}
