//! AdamW over named parameters, with per-group learning rates, global-norm gradient clipping
//! and gradient accumulation.
//!
//! The optimizer works in checkpoint names, so its state is saved beside the model as one more
//! safetensors file (`exp_avg.NAME`, `exp_avg_sq.NAME`, in checkpoint layout) and a resumed run
//! continues exactly. In memory it keeps burn's own layout: the update is element-wise, and
//! reading and writing the weights that checkpoints store transposed (`nn.Linear`) would cost
//! transposed copies every step. burn's own optimizer clips per tensor, not by the global norm
//! most trainers use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::Gradients;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::weights::{
    transpose_2d, update_native, update_on_device, write_safetensors, SafetensorsFile,
};
use crate::optim::grads::{native_gradients, Grad, NamedGrads};
use crate::optim::loss_scale::LossScale;
use crate::util::Precision;

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

impl AdamWConfig {
    /// Checks every setting; `field` is where the settings sit in the stage's configuration.
    pub fn validate(&self, field: &str) -> Result<()> {
        use crate::util::check;
        check::within(&format!("{field}.beta1"), self.beta1, 0.0, 0.9999)?;
        check::within(&format!("{field}.beta2"), self.beta2, 0.0, 0.99999)?;
        check::within(&format!("{field}.eps"), self.eps, 1e-12, 1.0)?;
        check::within(
            &format!("{field}.weight_decay"),
            self.weight_decay,
            0.0,
            1.0,
        )?;
        check::non_negative(&format!("{field}.clip_norm"), self.clip_norm)
    }
}

/// Gradients summed over micro-batches, by parameter name, in burn's layout: in host memory
/// on the CPU backend, on the device elsewhere (see [`Grad`]).
#[derive(Default)]
pub struct Accumulated {
    grads: BTreeMap<String, Vec<f32>>,
    on_device: BTreeMap<String, Tensor<1>>,
}

impl Accumulated {
    /// Adds `scale` × the gradients of one micro-batch.
    pub fn add<M: Module>(&mut self, model: &M, grads: Gradients, scale: f32) {
        self.add_named(native_gradients(model, grads), scale);
    }

    /// Adds `scale` × gradients already read by name (by [`native_gradients`]).
    /// A recomputed pass gives its gradients part by part (`sft::recompute`), each added so.
    pub fn add_named(&mut self, named: NamedGrads, scale: f32) {
        for (name, g) in named {
            match g {
                None => {}
                Some(Grad::Host(g)) => match self.grads.get_mut(&name) {
                    Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += scale * b),
                    None => {
                        self.grads
                            .insert(name, g.into_iter().map(|x| scale * x).collect());
                    }
                },
                Some(Grad::Device(g)) => {
                    let g = g.mul_scalar(scale);
                    let sum = match self.on_device.remove(&name) {
                        Some(acc) => acc + g,
                        None => g,
                    };
                    self.on_device.insert(name, sum);
                }
            }
        }
    }

    /// The sums held in host memory, by parameter name, in burn's layout: all of them on the
    /// CPU backend (see [`Accumulated::into_host`] for a device's).
    pub fn grads(&self) -> &BTreeMap<String, Vec<f32>> {
        &self.grads
    }

    /// Every sum in host memory.
    pub fn into_host(mut self) -> Self {
        for (name, g) in std::mem::take(&mut self.on_device) {
            self.grads.insert(name, Grad::Device(g).into_host());
        }
        self
    }

    pub fn global_norm(&self) -> f64 {
        let host = self
            .grads
            .values()
            .map(|g| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
            .sum::<f64>();
        let squares: Vec<Tensor<1>> = self
            .on_device
            .values()
            .map(|g| (g.clone() * g.clone()).sum())
            .collect();
        let device = if squares.is_empty() {
            0.0
        } else {
            crate::tensor::floats(Tensor::cat(squares, 0))
                .iter()
                .map(|&x| x as f64)
                .sum::<f64>()
        };
        (host + device).sqrt()
    }
}

/// Elements per task of the update.
const CHUNK: usize = 1 << 16;

pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates done so far (for bias correction).
    pub step: u64,
    /// First and second moments by checkpoint name, in burn's layout.
    moments: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
    /// The same, for parameters whose gradients stay on the device.
    on_device: BTreeMap<String, (Tensor<1>, Tensor<1>)>,
    /// Parameters whose checkpoint layout is the transpose of burn's `[rows, cols]`.
    transposed: BTreeMap<String, [usize; 2]>,
    /// Moments read from a file and not used since: still in checkpoint layout.
    from_file: BTreeSet<String>,
    /// The loss scaling of f16 mixed precision (see [`AdamW::with_mixed_precision`]).
    pub loss_scale: Option<LossScale>,
}

/// What one update did, for logging.
pub struct UpdateStats {
    pub grad_norm: f64,
    pub clipped: bool,
    /// False when the gradients were not finite: nothing was changed (with loss scaling, the
    /// scale was halved).
    pub applied: bool,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            moments: BTreeMap::new(),
            on_device: BTreeMap::new(),
            transposed: BTreeMap::new(),
            from_file: BTreeSet::new(),
            loss_scale: None,
        }
    }

    /// The optimizer of a run whose matrix products are in `precision`
    /// ([`crate::model::autocast`]): f16's loss scaling, kept as it was if this optimizer was
    /// loaded with one (a resumed run), else started afresh; none for f32 and bf16.
    pub fn with_mixed_precision(mut self, precision: Precision) -> Self {
        self.loss_scale = match LossScale::for_products(precision) {
            Some(fresh) => Some(self.loss_scale.unwrap_or(fresh)),
            None => None,
        };
        self
    }

    /// What the trainers multiply the loss by before the backward pass, and divide the
    /// gradients by as they are summed: the loss scale, or 1.
    pub fn loss_factor(&self) -> f32 {
        self.loss_scale.map_or(1.0, |s| s.scale)
    }

    /// One update of every parameter that has a gradient, with learning rate `lr(name)`.
    pub fn update<M: Module>(
        &mut self,
        model: M,
        mut grads: Accumulated,
        lr: impl Fn(&str) -> f64,
    ) -> (M, UpdateStats) {
        let c = self.config.clone();
        let grad_norm = grads.global_norm();
        let finite = grad_norm.is_finite();
        let applied = match &mut self.loss_scale {
            Some(scale) => scale.after_step(finite),
            None => finite,
        };
        if !applied {
            let stats = UpdateStats {
                grad_norm,
                clipped: false,
                applied,
            };
            return (model, stats);
        }
        let clip = if c.clip_norm > 0.0 && grad_norm > c.clip_norm {
            c.clip_norm / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let (clip, bc1, bc2, eps) = (clip as f32, bc1 as f32, bc2 as f32, c.eps as f32);
        // One parameter at a time, so that one parameter's values are copied out at a time
        // (not the model's); the update is element-wise and memory-bound, a plain loop over
        // four slices that vectorizes, in chunks on all threads.
        let names: BTreeSet<String> = grads.grads.keys().cloned().collect();
        let model = update_native(
            model,
            "",
            |name| names.contains(name),
            |name, transposed, mut p| {
                let g = grads.grads.remove(name)?;
                if transposed && p.shape.len() == 2 && !self.transposed.contains_key(name) {
                    self.transposed
                        .insert(name.to_string(), [p.shape[0], p.shape[1]]);
                }
                let (m, v) = self
                    .moments
                    .entry(name.to_string())
                    .or_insert_with(|| (vec![0.0; p.values.len()], vec![0.0; p.values.len()]));
                if self.from_file.remove(name) {
                    if let Some(&[rows, cols]) = self.transposed.get(name) {
                        *m = transpose_2d(m, cols, rows);
                        *v = transpose_2d(v, cols, rows);
                    }
                }
                let decay = if p.shape.len() >= 2 {
                    c.weight_decay
                } else {
                    0.0
                };
                let rate = lr(name);
                let (rate, shrink) = (rate as f32, (1.0 - rate * decay) as f32);
                p.values
                    .par_chunks_mut(CHUNK)
                    .zip(m.par_chunks_mut(CHUNK))
                    .zip(v.par_chunks_mut(CHUNK))
                    .zip(g.par_chunks(CHUNK))
                    .for_each(|(((p, m), v), g)| {
                        for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                            let g = g * clip;
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                            let step = (*m / bc1) / ((*v / bc2).sqrt() + eps);
                            *p = *p * shrink - rate * step;
                        }
                    });
                Some(p)
            },
        );
        let model = self.update_on_device(model, grads.on_device, (clip, bc1, bc2, eps), &lr);
        (
            model,
            UpdateStats {
                grad_norm,
                clipped: clip < 1.0,
                applied,
            },
        )
    }

    /// [`AdamW::update`]'s step for gradients held on the device: the same arithmetic in
    /// tensor ops, moments kept where the parameters are (from the host's, in burn's layout,
    /// the first time: a run resumed from a checkpoint).
    fn update_on_device<M: Module>(
        &mut self,
        model: M,
        mut grads: BTreeMap<String, Tensor<1>>,
        (clip, bc1, bc2, eps): (f32, f32, f32, f32),
        lr: &impl Fn(&str) -> f64,
    ) -> M {
        if grads.is_empty() {
            return model;
        }
        let c = self.config.clone();
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let names: BTreeSet<String> = grads.keys().cloned().collect();
        update_on_device(
            model,
            "",
            |name| names.contains(name),
            |name, transposed, shape, p| {
                let g = grads.remove(name)?;
                if transposed && shape.len() == 2 && !self.transposed.contains_key(name) {
                    self.transposed
                        .insert(name.to_string(), [shape[0], shape[1]]);
                }
                let device = p.device();
                let (m, v) = match self.on_device.remove(name) {
                    Some(mv) => mv,
                    None => match self.moments.remove(name) {
                        Some((mut m, mut v)) => {
                            if self.from_file.remove(name) {
                                if let Some(&[rows, cols]) = self.transposed.get(name) {
                                    m = transpose_2d(&m, cols, rows);
                                    v = transpose_2d(&v, cols, rows);
                                }
                            }
                            (
                                Tensor::from_floats(m.as_slice(), &device),
                                Tensor::from_floats(v.as_slice(), &device),
                            )
                        }
                        None => {
                            let n = p.dims()[0];
                            (Tensor::zeros([n], &device), Tensor::zeros([n], &device))
                        }
                    },
                };
                let decay = if shape.len() >= 2 {
                    c.weight_decay
                } else {
                    0.0
                };
                let rate = lr(name);
                let (rate, shrink) = (rate as f32, (1.0 - rate * decay) as f32);
                let g = g.mul_scalar(clip);
                let m = m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
                let v = v.mul_scalar(b2) + (g.clone() * g).mul_scalar(1.0 - b2);
                let step =
                    m.clone().div_scalar(bc1) / (v.clone().div_scalar(bc2).sqrt().add_scalar(eps));
                let p = p.mul_scalar(shrink) - step.mul_scalar(rate);
                self.on_device.insert(name.to_string(), (m, v));
                Some(p)
            },
        )
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = vec![("step".to_string(), vec![1], vec![self.step as f32])];
        if let Some(s) = self.loss_scale {
            tensors.push((
                "loss_scale".to_string(),
                vec![2],
                vec![s.scale, s.good_steps as f32],
            ));
        }
        let from_device: BTreeMap<String, (Vec<f32>, Vec<f32>)> = self
            .on_device
            .iter()
            .map(|(name, (m, v))| {
                let host = |t: &Tensor<1>| crate::tensor::floats(t.clone());
                (name.clone(), (host(m), host(v)))
            })
            .collect();
        for (name, (m, v)) in self.moments.iter().chain(&from_device) {
            let checkpoint_layout = |x: &Vec<f32>| match self.transposed.get(name) {
                Some(&[rows, cols]) if !self.from_file.contains(name) => {
                    transpose_2d(x, rows, cols)
                }
                _ => x.clone(),
            };
            tensors.push((
                format!("exp_avg.{name}"),
                vec![m.len()],
                checkpoint_layout(m),
            ));
            tensors.push((
                format!("exp_avg_sq.{name}"),
                vec![v.len()],
                checkpoint_layout(v),
            ));
        }
        write_safetensors(path, &tensors)
    }

    pub fn load(config: AdamWConfig, path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let step = file
            .get("step")
            .with_context(|| format!("{}: no `step`", path.display()))?
            .values[0] as u64;
        let mut moments = BTreeMap::new();
        for key in file.names() {
            if let Some(name) = key.strip_prefix("exp_avg.") {
                let sq = file
                    .get(&format!("exp_avg_sq.{name}"))
                    .with_context(|| format!("{}: no exp_avg_sq for {name}", path.display()))?;
                let m = file.get(key).expect("listed");
                moments.insert(name.to_string(), (m.values, sq.values));
            }
        }
        let loss_scale = file.get("loss_scale").and_then(|t| match t.values[..] {
            [scale, good] => Some(LossScale {
                scale,
                good_steps: good as u32,
            }),
            _ => None,
        });
        Ok(AdamW {
            config,
            step,
            from_file: moments.keys().cloned().collect(),
            moments,
            on_device: BTreeMap::new(),
            transposed: BTreeMap::new(),
            loss_scale,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::Linear;

    use crate::model::weights::{read_named, replace_named, Values};

    /// A `[3, 2]` linear layer (stored transposed in checkpoints) with a bias.
    fn layer(device: &Device) -> Linear {
        let w: Vec<f32> = (0..6).map(|i| i as f32 * 0.1 - 0.2).collect();
        Linear {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [3, 2]), device)),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![0.5f32, -0.5], [2]),
                device,
            ))),
        }
    }

    /// Gradients in burn's layout, different at each step, in host memory.
    fn grads(step: usize) -> Accumulated {
        held_grads(step, None)
    }

    /// [`grads`], held as device tensors on `device` when given (two halves added, as
    /// micro-batches are).
    fn held_grads(step: usize, device: Option<&Device>) -> Accumulated {
        let mut acc = Accumulated::default();
        let g =
            |n: usize| -> Vec<f32> { (0..n).map(|i| ((i + step) as f32 * 0.7).sin()).collect() };
        let held = |v: Vec<f32>| match device {
            None => Grad::Host(v),
            Some(d) => Grad::Device(Tensor::from_floats(v.as_slice(), d)),
        };
        for _ in 0..2 {
            acc.add_named(
                vec![
                    ("weight".to_string(), Some(held(g(6)))),
                    ("bias".to_string(), Some(held(g(2)))),
                ],
                0.5,
            );
        }
        acc
    }

    /// The update of gradients held on the device (a GPU's path, run here on the CPU
    /// backend) gives the host loop's weights, norm and saved state, also when it resumes
    /// from a state saved by the host path.
    #[test]
    fn the_device_update_is_the_host_update() {
        let device = Device::flex();
        let dir = std::env::temp_dir().join(format!("stylecap-adamw-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = AdamWConfig {
            weight_decay: 0.1,
            clip_norm: 1.5,
            ..AdamWConfig::default()
        };
        let (mut host, mut on_device) = (AdamW::new(config.clone()), AdamW::new(config.clone()));
        let (mut a, mut b) = (layer(&device), layer(&device));
        let close = |x: &[f32], y: &[f32]| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1e-6)
        };
        for step in 0..3 {
            let (ga, gb) = (grads(step), held_grads(step, Some(&device)));
            assert!(gb.grads().is_empty(), "the sums stay on the device");
            assert!((ga.global_norm() - gb.global_norm()).abs() <= 1e-6);
            let (na, sa) = host.update(a, ga, |n| if n == "bias" { 0.02 } else { 0.01 });
            let (nb, sb) = on_device.update(b, gb, |n| if n == "bias" { 0.02 } else { 0.01 });
            (a, b) = (na, nb);
            assert_eq!(sa.clipped, sb.clipped);
            assert!(close(&values(&a), &values(&b)), "step {step}");
        }
        assert!(values(&a) != values(&layer(&device)), "the weights moved");
        host.save(&dir.join("host.safetensors")).unwrap();
        on_device.save(&dir.join("device.safetensors")).unwrap();
        let (fa, fb) = (
            SafetensorsFile::open(&dir.join("host.safetensors")).unwrap(),
            SafetensorsFile::open(&dir.join("device.safetensors")).unwrap(),
        );
        for name in fa.names() {
            assert!(
                close(&fa.get(name).unwrap().values, &fb.get(name).unwrap().values),
                "{name}"
            );
        }
        // A parameter updated on the device still takes gradients on an autodiff device.
        let trained = device.clone().autodiff();
        let mut on_tape = AdamW::new(AdamWConfig::default());
        let d = on_tape
            .update(layer(&trained), held_grads(0, Some(&device)), |_| 0.01)
            .0;
        let y = d.forward(Tensor::<2>::ones([1, 3], &trained)).sum();
        let g = y.backward();
        assert!(
            d.weight.val().grad(&g).is_some() && d.bias.as_ref().unwrap().val().grad(&g).is_some()
        );
        // Resumed from the host's state, the device path continues as the host does.
        let mut resumed = AdamW::load(config, &dir.join("host.safetensors")).unwrap();
        let mut c = b;
        for step in 3..5 {
            a = host.update(a, grads(step), |_| 0.01).0;
            c = resumed
                .update(c, held_grads(step, Some(&device)), |_| 0.01)
                .0;
            assert!(close(&values(&a), &values(&c)), "resumed step {step}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A step whose gradients are not finite changes nothing, on either path: without loss
    /// scaling it reports so (the trainers stop); with f16's, it halves the scale, and the
    /// scale is saved and read back with the moments.
    #[test]
    fn non_finite_gradients_skip_the_step() {
        let device = Device::flex();
        for held in [None, Some(&device)] {
            let mut bad = held_grads(0, held);
            bad.add_named(
                vec![(
                    "bias".to_string(),
                    Some(match held {
                        None => Grad::Host(vec![f32::INFINITY, 0.0]),
                        Some(d) => Grad::Device(Tensor::from_floats([f32::INFINITY, 0.0], d)),
                    }),
                )],
                1.0,
            );
            let mut plain = AdamW::new(AdamWConfig::default());
            let (m, stats) = plain.update(layer(&device), bad, |_| 0.01);
            assert!(!stats.applied && plain.step == 0);
            assert_eq!(values(&m), values(&layer(&device)));

            let mut scaled =
                AdamW::new(AdamWConfig::default()).with_mixed_precision(Precision::F16);
            assert_eq!(scaled.loss_factor(), LossScale::INITIAL);
            let (m, _) = scaled.update(layer(&device), held_grads(0, held), |_| 0.01);
            let moved = values(&m);
            let inf = Grad::Host(vec![f32::NAN; 2]);
            let mut bad = held_grads(1, held).into_host();
            bad.add_named(vec![("bias".to_string(), Some(inf))], 1.0);
            let (m, stats) = scaled.update(m, bad, |_| 0.01);
            assert!(!stats.applied && scaled.step == 1);
            assert_eq!(values(&m), moved, "a skipped step leaves the weights");
            assert_eq!(scaled.loss_factor(), LossScale::INITIAL / 2.0);
            let path = std::env::temp_dir().join(format!(
                "stylecap-adamw-scale-{}-{}.safetensors",
                std::process::id(),
                held.is_some()
            ));
            scaled.save(&path).unwrap();
            let back = AdamW::load(AdamWConfig::default(), &path)
                .unwrap()
                .with_mixed_precision(Precision::F16);
            assert_eq!(back.loss_scale, scaled.loss_scale);
            let off = AdamW::load(AdamWConfig::default(), &path)
                .unwrap()
                .with_mixed_precision(Precision::Bf16);
            assert_eq!(off.loss_factor(), 1.0);
            let _ = std::fs::remove_file(&path);
        }
    }

    fn values(m: &Linear) -> Vec<f32> {
        read_named(m, "", &mut crate::model::weights::Values)
            .into_iter()
            .flat_map(|(_, v)| v.unwrap().values)
            .collect()
    }

    /// The state saved in checkpoint layout and read back continues exactly as the optimizer
    /// that never stopped, and is saved again unchanged before its first update.
    #[test]
    fn saved_state_continues_exactly() {
        let device = Device::flex();
        let dir = std::env::temp_dir().join(format!("stylecap-adamw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let mut whole = AdamW::new(config.clone());
        let mut model = layer(&device);
        for step in 0..2 {
            model = whole.update(model, grads(step), |_| 0.01).0;
        }
        whole.save(&dir.join("a.safetensors")).unwrap();
        // Checkpoint layout: the weight's first moment is the transpose of burn's [3, 2].
        let file = SafetensorsFile::open(&dir.join("a.safetensors")).unwrap();
        let m = &file.get("exp_avg.weight").unwrap().values;
        let (burn_m, _) = &whole.moments["weight"];
        assert_eq!(
            m[1], burn_m[2],
            "checkpoint [2, 3] row 0 col 1 = burn [3, 2] row 1 col 0"
        );

        let mut resumed = AdamW::load(config, &dir.join("a.safetensors")).unwrap();
        resumed.save(&dir.join("b.safetensors")).unwrap();
        assert_eq!(
            std::fs::read(dir.join("a.safetensors")).unwrap(),
            std::fs::read(dir.join("b.safetensors")).unwrap()
        );
        let mut copy = layer(&device);
        copy = replace_named(copy, "", |name, _| {
            let (n, v) = read_named(&model, "", &mut Values)
                .into_iter()
                .find(|(n, _)| n == name)?;
            assert_eq!(n, name);
            v
        });
        for step in 2..5 {
            model = whole.update(model, grads(step), |_| 0.01).0;
            copy = resumed.update(copy, grads(step), |_| 0.01).0;
        }
        assert_eq!(values(&model), values(&copy));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
