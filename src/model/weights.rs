//! Reading and writing module parameters under Hugging Face (transformers) tensor names.
//!
//! Modules in `model/` name their fields exactly as transformers names its submodules, so a
//! parameter's burn path (`h.0.attn.c_attn.weight`) *is* its checkpoint name. Two differences
//! remain and are handled here, in one place:
//! - `nn::Linear` stores `[in, out]`; PyTorch's `nn.Linear` stores `[out, in]`: transposed.
//!   GPT-2's `Conv1D` already stores `[in, out]`, which is why it is its own module type
//!   (`Conv1D`) and never goes through the transpose.
//! - `nn::LayerNorm` calls its parameters `gamma`/`beta`; PyTorch calls them `weight`/`bias`.
//!
//! Enum variants (e.g. which vision encoder) are not part of the checkpoint name.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};

/// A tensor read from a checkpoint, as f32.
pub struct StoredTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// All tensors of one `.safetensors` file, converted to f32.
pub struct SafetensorsFile {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, StoredTensor>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display())
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                    .collect(),
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                Dtype::I32 => data
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                other => bail!(
                    "{}: tensor `{name}` has unsupported dtype {other:?}",
                    path.display()
                ),
            };
            tensors.insert(
                name.to_string(),
                StoredTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// Renames every tensor `{from}{rest}` to `{to}{rest}` (older and newer transformers
    /// versions nest some towers differently).
    pub fn rename_prefix(&mut self, from: &str, to: &str) {
        let names: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        for name in names {
            let t = self.tensors.remove(&name).expect("listed");
            self.tensors
                .insert(format!("{to}{}", &name[from.len()..]), t);
        }
    }

    /// A tensor by name, with its shape checked.
    pub fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Result<Tensor<D>> {
        let t = self
            .tensors
            .get(name)
            .with_context(|| format!("{}: tensor `{name}` is missing", self.path.display()))?;
        if t.shape.len() != D {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected rank {D}",
                self.path.display(),
                t.shape
            );
        }
        Ok(Tensor::from_data(
            TensorData::new(t.values.clone(), t.shape.clone()),
            device,
        ))
    }

    pub fn int_tensor<const D: usize>(
        &self,
        name: &str,
        device: &Device,
    ) -> Result<Tensor<D, Int>> {
        Ok(self.tensor::<D>(name, device)?.int())
    }
}

fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as i32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: renormalise.
            let shift = m.leading_zeros() - 21;
            sign | (((113 - shift as i32) as u32) << 23) | ((m << (shift + 1)) & 0x3ff) << 13
        }
        (31, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | (((e + 112) as u32) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// The checkpoint name of the parameter at `path`, and whether it is stored transposed.
pub(crate) fn hf_name(prefix: &str, path: &[(String, String)]) -> (String, bool) {
    let mut parts: Vec<&str> = Vec::with_capacity(path.len() + 1);
    if !prefix.is_empty() {
        parts.push(prefix);
    }
    let mut transpose = false;
    for (i, (name, container)) in path.iter().enumerate() {
        if container.starts_with("Enum:") {
            continue;
        }
        let last = i + 1 == path.len();
        let name = match (container.as_str(), name.as_str(), last) {
            ("Struct:LayerNorm", "gamma", true) => "weight",
            ("Struct:LayerNorm", "beta", true) => "bias",
            ("Struct:Linear", "weight", true) => {
                transpose = true;
                "weight"
            }
            _ => name.as_str(),
        };
        parts.push(name);
    }
    (parts.join("."), transpose)
}

/// What loading a module from a checkpoint did, for the caller to report.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Parameters absent from the file that were allowed to stay freshly initialised.
    pub initialized_fresh: Vec<String>,
    /// Checkpoint names that were read.
    pub used: HashSet<String>,
}

struct Loader<'a> {
    file: &'a SafetensorsFile,
    prefix: &'a str,
    path: Vec<(String, String)>,
    may_be_missing: &'a dyn Fn(&str) -> bool,
    errors: Vec<String>,
    report: LoadReport,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, transpose) = hf_name(self.prefix, &self.path);
        let Some(stored) = self.file.tensors.get(&name) else {
            if (self.may_be_missing)(&name) {
                self.report.initialized_fresh.push(name);
            } else {
                self.errors.push(format!("tensor `{name}` is missing"));
            }
            return param;
        };
        self.report.used.insert(name.clone());
        let expected = param.lazy_shape().to_vec();
        let mut stored_expected = expected.clone();
        if transpose {
            stored_expected.reverse();
        }
        if stored.shape != stored_expected {
            self.errors.push(format!(
                "tensor `{name}` has shape {:?}, the model config expects {:?}",
                stored.shape, stored_expected
            ));
            return param;
        }
        let device = param.lazy_device();
        let data = TensorData::new(stored.values.clone(), stored.shape.clone());
        let mut tensor = Tensor::<D>::from_data(data, &device);
        if transpose {
            tensor = tensor.transpose();
        }
        param.map(|_| tensor)
    }
}

/// Replaces every parameter of `module` with the checkpoint tensor of the same name
/// (`prefix.` + its path). Parameters for which `may_be_missing(name)` is true keep their
/// fresh initialisation when absent; any other absence or shape mismatch is an error that
/// names the file and every offending tensor.
pub fn load_module<M: Module>(
    module: M,
    file: &SafetensorsFile,
    prefix: &str,
    may_be_missing: &dyn Fn(&str) -> bool,
) -> Result<(M, LoadReport)> {
    let mut loader = Loader {
        file,
        prefix,
        path: Vec::new(),
        may_be_missing,
        errors: Vec::new(),
        report: LoadReport::default(),
    };
    let module = module.map(&mut loader);
    if !loader.errors.is_empty() {
        bail!("{}: {}", file.path.display(), loader.errors.join("; "));
    }
    Ok((module, loader.report))
}

/// Checkpoint tensors that no parameter claimed, except known non-parameter buffers.
pub fn unused_tensors(
    file: &SafetensorsFile,
    used: &HashSet<String>,
    ignore: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    file.tensors
        .keys()
        .filter(|k| !used.contains(*k) && !ignore(k))
        .cloned()
        .collect()
}

struct Collector<'a> {
    prefix: &'a str,
    path: Vec<(String, String)>,
    out: &'a mut Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Collector<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (name, transpose) = hf_name(self.prefix, &self.path);
        let mut t = param.val();
        if transpose {
            t = t.transpose();
        }
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 tensor");
        self.out.push((name, shape, values));
    }
}

/// Every parameter of `module` under its checkpoint name, appended to `out`.
pub fn collect_module<M: Module>(
    module: &M,
    prefix: &str,
    out: &mut Vec<(String, Vec<usize>, Vec<f32>)>,
) {
    module.visit(&mut Collector {
        prefix,
        path: Vec::new(),
        out,
    });
}

/// Writes tensors as an f32 safetensors file, atomically (temp file + rename).
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let data = safetensors::serialize(views, Some(meta))?;
    crate::util::write_atomic(path, &data)
}

struct NamedMapper<'a, F: FnMut(&str, TensorData) -> TensorData> {
    path: Vec<(String, String)>,
    f: &'a mut F,
}

impl<F: FnMut(&str, TensorData) -> TensorData> ModuleMapper for NamedMapper<'_, F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, _) = hf_name("", &self.path);
        let f = &mut self.f;
        param.map(|t| {
            let device = t.device();
            Tensor::from_data(f(&name, t.into_data()), &device)
        })
    }
}

/// Rewrites every parameter through `f(name, values)` (names as in checkpoints, layouts as
/// burn stores them). Used by finite-difference checks and weight surgery.
pub fn map_named<M: Module>(module: M, mut f: impl FnMut(&str, TensorData) -> TensorData) -> M {
    module.map(&mut NamedMapper {
        path: Vec::new(),
        f: &mut f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_decodes() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0000), 0.0);
        assert!((half_to_f32(0x0001) - 5.960_464_5e-8).abs() < 1e-12);
        assert!((half_to_f32(0x3555) - 0.333_25).abs() < 1e-4);
    }

    #[test]
    fn names_follow_pytorch() {
        let p = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            hf_name(
                "decoder",
                &p(&[
                    ("transformer", "Struct:Gpt2LmHeadModel"),
                    ("ln_f", "Struct:Gpt2Model"),
                    ("gamma", "Struct:LayerNorm")
                ])
            ),
            ("decoder.transformer.ln_f.weight".to_string(), false)
        );
        assert_eq!(
            hf_name(
                "",
                &p(&[
                    ("Vit", "Enum:VisionEncoder"),
                    ("pooler", "Struct:ViTModel"),
                    ("weight", "Struct:Linear")
                ])
            ),
            ("pooler.weight".to_string(), true)
        );
        assert_eq!(
            hf_name(
                "",
                &p(&[("c_attn", "Struct:Block"), ("weight", "Struct:Conv1D")])
            ),
            ("c_attn.weight".to_string(), false)
        );
    }
}
