//! Reading and writing module parameters under Hugging Face (transformers) tensor names.
//!
//! Modules in `model/` name their fields exactly as transformers names its submodules, so a
//! parameter's burn path (`h.0.attn.c_attn.weight`) *is* its checkpoint name. Two differences
//! remain and are handled here, in one place:
//! - `nn::Linear` stores `[in, out]`; PyTorch's `nn.Linear` stores `[out, in]`: transposed.
//!   GPT-2's `Conv1D` already stores `[in, out]`, which is why it is its own module type
//!   (`Conv1D`) and never goes through the transpose.
//! - `nn::LayerNorm` calls its parameters `gamma`/`beta`; PyTorch calls them `weight`/`bias`.
//! - A LoRA adapter's `lora_a`/`lora_b` are PEFT's `lora_A`/`lora_B`, beside the weight they
//!   adapt (`c_attn.lora_A.weight`, no `lora.` between).
//!
//! Enum variants (e.g. which vision encoder) are not part of the checkpoint name.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};

/// A tensor read from a checkpoint, as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Where one tensor's bytes lie in the file.
#[derive(Debug, Clone)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// The bytes of a checkpoint: memory-mapped, so that opening a large checkpoint copies
/// nothing and each tensor is converted once, straight into the model's parameter.
enum Bytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Read(v) => v,
        }
    }
}

/// One `.safetensors` file: its header is read and checked on opening, each tensor is
/// converted to f32 when it is asked for.
pub struct SafetensorsFile {
    pub path: PathBuf,
    bytes: Bytes,
    entries: BTreeMap<String, Entry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        // SAFETY: the map is read-only and lives as long as `self`; a checkpoint rewritten
        // underneath a running process is not supported (stylecap itself writes checkpoints
        // to a temporary file and renames it, which leaves a mapped file intact).
        let bytes = match unsafe { memmap2::Mmap::map(&file) } {
            Ok(m) => Bytes::Mapped(m),
            Err(_) => Bytes::Read(
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
        };
        let (header, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display())
        })?;
        let base = 8 + header;
        let mut entries = BTreeMap::new();
        for (name, info) in metadata.tensors() {
            if !matches!(
                info.dtype,
                Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16 | Dtype::I64 | Dtype::I32
            ) {
                bail!(
                    "{}: tensor `{name}` has unsupported dtype {:?}",
                    path.display(),
                    info.dtype
                );
            }
            let (start, end) = info.data_offsets;
            entries.insert(
                name,
                Entry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: base + start,
                    end: base + end,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            entries,
        })
    }

    /// Whether the file holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Every tensor name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// A tensor's shape, without reading it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// A tensor converted to f32.
    pub fn get(&self, name: &str) -> Option<StoredTensor> {
        let e = self.entries.get(name)?;
        let data = &self.bytes[e.start..e.end];
        let values: Vec<f32> = match e.dtype {
            Dtype::F32 => f32_values(data),
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
            _ => unreachable!("dtypes are checked on opening"),
        };
        Some(StoredTensor {
            shape: e.shape.clone(),
            values,
        })
    }

    /// Renames every tensor `{from}{rest}` to `{to}{rest}` (older and newer transformers
    /// versions nest some towers differently).
    pub fn rename_prefix(&mut self, from: &str, to: &str) {
        let names: Vec<String> = self
            .entries
            .keys()
            .filter(|k| k.starts_with(from))
            .cloned()
            .collect();
        for name in names {
            let t = self.entries.remove(&name).expect("listed");
            self.entries
                .insert(format!("{to}{}", &name[from.len()..]), t);
        }
    }

    /// A tensor by name, with its shape checked.
    pub fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Result<Tensor<D>> {
        let t = self
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
            TensorData::new(t.values, t.shape),
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

/// Little-endian f32 bytes as values: one copy where the bytes are aligned (as safetensors
/// writers align them), else a conversion per value.
fn f32_values(data: &[u8]) -> Vec<f32> {
    // SAFETY: every bit pattern is a valid f32.
    let (head, body, tail) = unsafe { data.align_to::<f32>() };
    if cfg!(target_endian = "little") && head.is_empty() && tail.is_empty() {
        return body.to_vec();
    }
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
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
        let last = i + 1 == path.len();
        // A LoRA adapter's tensors sit beside the weight in PEFT's names (`c_attn.lora_A.weight`).
        if container.starts_with("Enum:") || (container == "Struct:Conv1D" && name == "lora") {
            continue;
        }
        let name = match (container.as_str(), name.as_str(), last) {
            ("Struct:LayerNorm", "gamma", true) => "weight",
            ("Struct:LayerNorm", "beta", true) => "bias",
            ("Struct:Linear", "weight", true) => {
                transpose = true;
                "weight"
            }
            ("Struct:LoraAdapter", "lora_a", false) => "lora_A",
            ("Struct:LoraAdapter", "lora_b", false) => "lora_B",
            // `self` is a Rust keyword (BERT's `attention.self`).
            (_, "self_", _) => "self",
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
    let mut errors = Vec::new();
    let mut report = LoadReport::default();
    let module = replace_named(module, prefix, |name, expected| {
        let Some(shape) = file.shape(name) else {
            if may_be_missing(name) {
                report.initialized_fresh.push(name.to_string());
            } else {
                errors.push(format!("tensor `{name}` is missing"));
            }
            return None;
        };
        report.used.insert(name.to_string());
        if shape != expected {
            errors.push(format!(
                "tensor `{name}` has shape {shape:?}, the model config expects {expected:?}"
            ));
            return None;
        }
        file.get(name)
    });
    if !errors.is_empty() {
        bail!("{}: {}", file.path.display(), errors.join("; "));
    }
    materialize(&module);
    Ok((module, report))
}

/// Checkpoint tensors that no parameter claimed, except known non-parameter buffers.
pub fn unused_tensors(
    file: &SafetensorsFile,
    used: &HashSet<String>,
    ignore: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    file.names()
        .filter(|k| !used.contains(*k) && !ignore(k))
        .map(str::to_string)
        .collect()
}

/// Every parameter of `module` under its checkpoint name, appended to `out`.
pub fn collect_module<M: Module>(
    module: &M,
    prefix: &str,
    out: &mut Vec<(String, Vec<usize>, Vec<f32>)>,
) {
    for (name, t) in read_named(module, prefix, &mut Values) {
        let t = t.expect("every parameter has a value");
        out.push((name, t.shape, t.values));
    }
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

/// A tensor in checkpoint layout (transposed back where the checkpoint stores `[out, in]`).
pub fn stored<const D: usize>(t: Tensor<D>, transpose: bool) -> StoredTensor {
    let t = if transpose { t.transpose() } else { t };
    let shape = t.dims().to_vec();
    let values = crate::tensor::floats(t);
    StoredTensor { shape, values }
}

/// Reads one thing per parameter (its value, its gradient, ...) in checkpoint layout.
pub trait ParamReader {
    /// What is read: values in host memory ([`StoredTensor`]) for most readers.
    type Out;
    fn read<const D: usize>(
        &mut self,
        name: &str,
        param: &Param<Tensor<D>>,
        transpose: bool,
    ) -> Option<Self::Out>;
}

/// Reads parameter values.
pub struct Values;

impl ParamReader for Values {
    type Out = StoredTensor;
    fn read<const D: usize>(
        &mut self,
        _name: &str,
        param: &Param<Tensor<D>>,
        transpose: bool,
    ) -> Option<StoredTensor> {
        Some(stored(param.val(), transpose))
    }
}

/// The `enter_module` and `exit_module` of a visitor or mapper that keeps its parameters'
/// module path in `self.path`.
macro_rules! follow_path {
    () => {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.exit();
        }
    };
}

/// The module path of the parameter being visited, from burn's enter/exit callbacks.
#[derive(Default)]
struct ParamPath(Vec<(String, String)>);

impl ParamPath {
    fn enter(&mut self, name: &str, container_type: &str) {
        self.0.push((name.to_string(), container_type.to_string()));
    }
    fn exit(&mut self) {
        self.0.pop();
    }
}

struct NamedReader<'a, R: ParamReader> {
    prefix: &'a str,
    path: ParamPath,
    reader: &'a mut R,
    out: Vec<(String, Option<R::Out>)>,
}

impl<R: ParamReader> ModuleVisitor for NamedReader<'_, R> {
    follow_path!();
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (name, transpose) = hf_name(self.prefix, &self.path.0);
        let value = self.reader.read(&name, param, transpose);
        self.out.push((name, value));
    }
}

/// `reader`'s result for every parameter, under its checkpoint name (`prefix.` + path).
pub fn read_named<M: Module, R: ParamReader>(
    module: &M,
    prefix: &str,
    reader: &mut R,
) -> Vec<(String, Option<R::Out>)> {
    let mut v = NamedReader {
        prefix,
        path: ParamPath::default(),
        reader,
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

struct NamedReplacer<'a, F> {
    prefix: &'a str,
    path: ParamPath,
    f: F,
}

impl<F: FnMut(&str, &[usize]) -> Option<StoredTensor>> ModuleMapper for NamedReplacer<'_, F> {
    follow_path!();
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, transpose) = hf_name(self.prefix, &self.path.0);
        let mut shape = param.lazy_shape().to_vec();
        if transpose {
            shape.reverse();
        }
        let Some(new) = (self.f)(&name, &shape) else {
            return param;
        };
        assert_eq!(
            new.shape, shape,
            "replacement for `{name}` has the wrong shape"
        );
        // Transposed on the host, so that every parameter is a contiguous tensor in burn's
        // layout however it was set: a transposed view would take other kernels (and other
        // rounding) than the contiguous weight the optimizer writes back.
        let new = match (transpose, new.shape.as_slice()) {
            (true, &[rows, cols]) => StoredTensor {
                values: transpose_2d(&new.values, rows, cols),
                shape: vec![cols, rows],
            },
            _ => new,
        };
        set_values(param, new)
    }
}

/// `param` holding `new` (in burn's layout), with its id and gradient setting, and without
/// drawing the initial value of a parameter that has not been initialised yet.
fn set_values<const D: usize>(param: Param<Tensor<D>>, new: StoredTensor) -> Param<Tensor<D>> {
    let device = param.lazy_device();
    let tensor = Tensor::<D>::from_data(TensorData::new(new.values, new.shape), &device);
    let id = param.id;
    param.transform_for_load(tensor, id)
}

/// Updates parameters one at a time from their values: `f(name, transposed, value)` gets
/// each parameter that `select`s by checkpoint name, whether checkpoints store it transposed,
/// and its values in burn's layout, and returns its new values in burn's layout (None keeps
/// it). Only one parameter's values are copied out at a time: the optimizer's update does not
/// hold a second copy of the model, nor pay for transposed copies (it is element-wise).
pub fn update_native<M: Module>(
    module: M,
    prefix: &str,
    select: impl Fn(&str) -> bool,
    mut f: impl FnMut(&str, bool, StoredTensor) -> Option<StoredTensor>,
) -> M {
    update_on_device(module, prefix, select, |name, transposed, shape, flat| {
        let device = flat.device();
        let values = crate::tensor::floats(flat);
        let n = values.len();
        let shape = shape.to_vec();
        let new = f(
            name,
            transposed,
            StoredTensor {
                shape: shape.clone(),
                values,
            },
        )?;
        assert_eq!(new.shape, shape, "update of `{name}` has the wrong shape");
        Some(Tensor::from_data(TensorData::new(new.values, [n]), &device))
    })
}

struct DeviceUpdater<'a, S, F> {
    prefix: &'a str,
    path: ParamPath,
    select: S,
    f: F,
}

impl<S, F> ModuleMapper for DeviceUpdater<'_, S, F>
where
    S: Fn(&str) -> bool,
    F: FnMut(&str, bool, &[usize], Tensor<1>) -> Option<Tensor<1>>,
{
    follow_path!();
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, transpose) = hf_name(self.prefix, &self.path.0);
        if !(self.select)(&name) {
            return param;
        }
        let value = param.val().inner();
        let dims = value.dims();
        let flat = value.reshape([dims.iter().product::<usize>()]);
        let Some(new) = (self.f)(&name, transpose, &dims, flat) else {
            return param;
        };
        // The new value was made outside autodiff: a trained model's parameter goes back onto
        // its autodiff device (where it takes gradients again).
        let device = param.lazy_device();
        let new = new.reshape(dims);
        let new = if device.is_autodiff() {
            new.autodiff()
        } else {
            new
        };
        let id = param.id;
        param.transform_for_load(new, id)
    }
}

/// Updates parameters one at a time where they live: `f(name, transposed, shape, value)`
/// gets each parameter that `select`s by checkpoint name, whether checkpoints store it
/// transposed, its shape and its value flattened, as a tensor on its device (outside any
/// autodiff graph), and returns its new value (None keeps it). A GPU's optimizer step so
/// never copies weights through the host; [`update_native`] is this with the values read out.
pub fn update_on_device<M: Module>(
    module: M,
    prefix: &str,
    select: impl Fn(&str) -> bool,
    f: impl FnMut(&str, bool, &[usize], Tensor<1>) -> Option<Tensor<1>>,
) -> M {
    module.map(&mut DeviceUpdater {
        prefix,
        path: ParamPath::default(),
        select,
        f,
    })
}

/// `[rows, cols]` values, row-major, as `[cols, rows]`: in tiles, so that both sides are read
/// and written a cache line at a time, and in parallel over bands of output rows.
pub fn transpose_2d(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const TILE: usize = 32;
    let mut out = vec![0f32; values.len()];
    if rows == 0 {
        return out;
    }
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, out)| {
            let j0 = band * TILE;
            let width = out.len() / rows;
            let mut tile = [[0f32; TILE]; TILE];
            for i0 in (0..rows).step_by(TILE) {
                let height = TILE.min(rows - i0);
                for (t, i) in tile.iter_mut().zip(i0..i0 + height) {
                    t[..width].copy_from_slice(&values[i * cols + j0..i * cols + j0 + width]);
                }
                for (j, out_row) in out.chunks_exact_mut(rows).enumerate() {
                    for (o, t) in out_row[i0..i0 + height].iter_mut().zip(&tile) {
                        *o = t[j];
                    }
                }
            }
        });
    out
}

/// Draws the initial value of every parameter still waiting for one, in module order, so
/// that no draw is left to whichever thread first touches the parameter (which would make
/// the values depend on scheduling).
pub fn materialize<M: Module>(module: &M) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.is_initialized() {
                let _ = param.val();
            }
        }
    }
    module.visit(&mut Touch);
}

struct NamedFreezer<'a, F> {
    prefix: &'a str,
    path: ParamPath,
    frozen: F,
}

impl<F: FnMut(&str) -> bool> ModuleMapper for NamedFreezer<'_, F> {
    follow_path!();
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (name, _) = hf_name(self.prefix, &self.path.0);
        if (self.frozen)(&name) {
            param.set_require_grad(false)
        } else {
            param
        }
    }
}

/// Whether any parameter of `module` takes a gradient.
pub fn trains<M: Module>(module: &M) -> bool {
    struct Any(bool);
    impl ModuleVisitor for Any {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 |= param.val().is_require_grad();
        }
    }
    let mut any = Any(false);
    module.visit(&mut any);
    any.0
}

/// Stops gradients for the parameters whose checkpoint names `frozen` selects.
pub fn freeze_named<M: Module>(module: M, prefix: &str, frozen: impl FnMut(&str) -> bool) -> M {
    module.map(&mut NamedFreezer {
        prefix,
        path: ParamPath::default(),
        frozen,
    })
}

/// Replaces parameters: `f(name, shape)` gets each checkpoint name and checkpoint-layout shape
/// and returns the new values in that layout, or None to keep the parameter as it is. Ids
/// (and so optimizer state) are kept.
pub fn replace_named<M: Module>(
    module: M,
    prefix: &str,
    f: impl FnMut(&str, &[usize]) -> Option<StoredTensor>,
) -> M {
    module.map(&mut NamedReplacer {
        prefix,
        path: ParamPath::default(),
        f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_in_tiles() {
        for (rows, cols) in [(1, 1), (3, 70), (37, 33), (64, 32), (5, 1)] {
            let v: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
            let t = transpose_2d(&v, rows, cols);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(t[j * rows + i], v[i * cols + j], "{rows}x{cols} at {i},{j}");
                }
            }
        }
    }

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
        assert_eq!(
            hf_name(
                "",
                &p(&[
                    ("c_attn", "Struct:Block"),
                    ("lora", "Struct:Conv1D"),
                    ("lora_a", "Struct:LoraAdapter"),
                    ("weight", "Struct:Linear")
                ])
            ),
            ("c_attn.lora_A.weight".to_string(), true)
        );
    }
}
