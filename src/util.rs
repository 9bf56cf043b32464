//! Small helpers shared by every stage.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader (or a killed run) never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut w = AtomicWriter::create(path)?;
    w.write_all(bytes)?;
    w.commit()
}

/// Reads and parses a JSON file, naming the file (and serde's line/column) on failure.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON config", path.display()))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}

/// Keeps freed memory in the process instead of returning it to the OS. A training step
/// allocates and frees tensors of tens of MB; with glibc's defaults each of those is a fresh
/// `mmap`, and the page faults and zeroing cost about a tenth of a CPU training step.
/// Blocks above [`MMAP_ABOVE`] still get their own mapping: kept in the heap, the largest
/// tensors of a real-scale model (embedding gradients, logits) fragment it, and the resident
/// size grew with every step.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        // M_MMAP_THRESHOLD = -3 (fixed, no longer adapting); M_TRIM_THRESHOLD = -1: never trim.
        libc::mallopt(-3, MMAP_ABOVE as i32);
        libc::mallopt(-1, i32::MAX);
    }
}

/// The items' distinct values by first occurrence: the position of each one's first
/// occurrence, and for each item the index of its value among them. Quadratic in the distinct
/// values: for the few pictures of a batch.
pub fn first_occurrences<T: PartialEq>(items: &[T]) -> (Vec<usize>, Vec<usize>) {
    let mut firsts: Vec<usize> = Vec::new();
    let which = items
        .iter()
        .enumerate()
        .map(|(i, x)| match firsts.iter().position(|&f| items[f] == *x) {
            Some(k) => k,
            None => {
                firsts.push(i);
                firsts.len() - 1
            }
        })
        .collect();
    (firsts, which)
}

/// Allocations above this size are mapped and unmapped on their own (see
/// [`keep_freed_memory`]).
pub const MMAP_ABOVE: usize = 64 << 20;

/// With `tuned`, has the matrix-product kernels (the `gemm` crate, under burn's CPU backend)
/// pack the weight's panels into a contiguous buffer whenever more than a few rows multiply
/// it, as they do for large products; without, restores gemm's defaults. By default gemm
/// packs only above 96 rows (multi-threaded) and otherwise reads the weight in place: when
/// decoding, a batch of a few rows against each weight, whose column panels then run down
/// rows 9–12 KB apart where the cache sets alias (figures: docs/performance.md, "Sampling at
/// scale"). A single row still reads it in place. The kernels' arithmetic is the same either
/// way (tested: the same bits).
pub fn tune_matmul(tuned: bool) {
    // Tuned: rows above 1 × the kernel's 6-column width.
    let (single, multi) = if tuned {
        (1, 1)
    } else {
        (
            gemm::DEFAULT_LHS_PACKING_THRESHOLD_SINGLE_THREAD,
            gemm::DEFAULT_LHS_PACKING_THRESHOLD_MULTI_THREAD,
        )
    };
    gemm::set_lhs_packing_threshold_single_thread(single);
    gemm::set_lhs_packing_threshold_multi_thread(multi);
}

/// Caps glibc's malloc arenas. A server's many short-lived threads (tokio's blocking pool)
/// each get an arena of their own by default, and freed memory stays spread over them: the
/// resident size creeps up for minutes under load. Two arenas keep it flat.
pub fn limit_malloc_arenas(n: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        // M_ARENA_MAX = -8
        libc::mallopt(-8, n);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}

/// Hands freed heap memory back to the system (glibc's `malloc_trim`). Freed blocks of a
/// large image decode stay resident in the heap otherwise, and the server's resident size
/// stays at its peak.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A float type: of weights and activations on a device (`--dtype`, for inference:
/// captioning, serving, evaluation), or of the matrix products in mixed-precision training
/// (`--mixed-precision`, [`crate::model::autocast`]), where the weights stay f32.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub(crate) fn dtype(self) -> burn::tensor::FloatDType {
        use burn::tensor::FloatDType;
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// What a device that cannot compute in this type can be asked for instead (every
    /// backend has f32; those without bf16 arithmetic may have f16).
    pub(crate) fn fallback(self) -> &'static str {
        match self {
            Precision::Bf16 => "f32 or f16",
            _ => "f32",
        }
    }
}

impl std::fmt::Display for Precision {
    /// The flag's own spelling (`f32`, `f16`, `bf16`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let value = self
            .to_possible_value()
            .expect("every variant is a flag value");
        f.write_str(value.get_name())
    }
}

/// The float type `device` makes tensors in (`f32`, `f16`, ...), for reports.
pub fn float_type(device: &burn::tensor::Device) -> String {
    format!("{:?}", device.settings().float_dtype).to_lowercase()
}

/// The compute device named on the command line: `cpu` (burn's flex backend, always built),
/// `wgpu` (Vulkan / Metal / DX12, the API wgpu prefers; `--features wgpu`), `vulkan` (wgpu
/// pinned to Vulkan with the SPIR-V compiler; `--features vulkan`) or `cuda`
/// (`--features cuda`), with float tensors in `precision`.
///
/// The precision is the device's default float type, which burn fixes once per device and
/// process: every float tensor made on it afterwards (weights as they load, activations)
/// takes that type, and host values read back are converted to f32.
pub fn device(name: &str, precision: Precision) -> Result<burn::tensor::Device> {
    use burn::tensor::Device;
    let device = match name {
        "cpu" | "flex" => Device::flex(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(Default::default()),
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::vulkan(Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        #[allow(unreachable_patterns)]
        "wgpu" | "vulkan" | "cuda" => anyhow::bail!(
            "device `{name}` is not built in: rebuild with `cargo build --release --features {name}`"
        ),
        other => anyhow::bail!("unknown device `{other}` (cpu, wgpu, vulkan, cuda)"),
    };
    opened(name, device, precision)
}

/// `device` set to `precision` once it has run an op. burn opens a GPU on first use and
/// panics when it finds no adapter or driver; that panic becomes an error naming the device
/// instead.
fn opened(
    name: &str,
    mut device: burn::tensor::Device,
    precision: Precision,
) -> Result<burn::tensor::Device> {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
        set_precision(name, &mut device, precision)?;
        burn::tensor::Tensor::<1>::zeros([1], &device).into_data();
        Ok(())
    }));
    std::panic::set_hook(report);
    match probe {
        Ok(result) => result.map(|()| device),
        Err(_) => anyhow::bail!(
            "device `{name}` could not be opened: no GPU or no driver for it was found (for \
             `vulkan` and `wgpu`, the Vulkan loader libvulkan1 and the GPU vendor's driver)"
        ),
    }
}

/// Makes `precision` the float type of `device`, before any tensor is made on it (burn fixes
/// it at the first).
fn set_precision(
    name: &str,
    device: &mut burn::tensor::Device,
    precision: Precision,
) -> Result<()> {
    if precision == Precision::F32 {
        return Ok(());
    }
    let dtype = precision.dtype();
    anyhow::ensure!(
        device.supports_dtype(dtype),
        "--dtype {precision} is not supported on device `{name}` (it cannot compute in it); \
         use {}",
        precision.fallback()
    );
    device
        .configure(dtype)
        .map_err(|e| anyhow::anyhow!("--dtype {precision} on device `{name}`: {e:?}"))
}

/// A progress bar on stderr with rate and ETA; hidden when `show` is false (tests, `--quiet`)
/// or when stderr is not a terminal.
pub fn progress_bar(total: u64, label: &str, show: bool) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// A file written to a temporary name in its folder and renamed into place by `commit`, so a
/// reader (or a killed run) never sees it half-written; also for outputs too large to build in
/// memory. Dropped without `commit`, it leaves no file.
pub struct AtomicWriter {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
}

impl AtomicWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name = path
            .file_name()
            .context("path has no file name")?
            .to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(AtomicWriter {
            path: path.to_path_buf(),
            tmp,
            out: Some(std::io::BufWriter::new(file)),
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let out = self.out.as_mut().expect("not committed");
        out.write_all(bytes)
            .with_context(|| format!("cannot write {}", self.tmp.display()))
    }

    pub fn write_line(&mut self, line: &str) -> Result<()> {
        self.write_all(line.as_bytes())?;
        self.write_all(b"\n")
    }

    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("not committed");
        // Synced before the rename: a crash then leaves the old file or the whole new one,
        // never a renamed file whose blocks were not yet written.
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| {
            format!(
                "cannot move {} to {}",
                self.tmp.display(),
                self.path.display()
            )
        })
    }
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Reads a settings file: TOML for `.toml`, JSON otherwise; errors name the file and place.
pub fn read_config_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).with_context(|| format!("{}: invalid TOML config", path.display()))
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON config", path.display()))
    }
}

/// Range checks of configuration values, each naming the field and what it allows. A NaN
/// fails every check (comparisons with NaN are false).
pub mod check {
    use anyhow::{ensure, Result};
    use std::fmt::Display;

    /// `lo ≤ value ≤ hi`.
    pub fn within<T: PartialOrd + Display>(field: &str, value: T, lo: T, hi: T) -> Result<()> {
        ensure!(
            value >= lo && value <= hi,
            "{field} = {value} is out of range: allowed {lo} to {hi}"
        );
        Ok(())
    }

    /// `value ≥ lo` (for counts: at least one step, one image, ...).
    pub fn at_least<T: PartialOrd + Display>(field: &str, value: T, lo: T) -> Result<()> {
        ensure!(
            value >= lo,
            "{field} = {value} is out of range: allowed {lo} or more"
        );
        Ok(())
    }

    /// A finite number above 0 (learning rates, epsilons, horizons).
    pub fn positive(field: &str, value: f64) -> Result<()> {
        ensure!(
            value.is_finite() && value > 0.0,
            "{field} = {value} is out of range: allowed a finite number above 0"
        );
        Ok(())
    }

    /// A finite number of 0 or more (weights, penalties, coefficients).
    pub fn non_negative(field: &str, value: f64) -> Result<()> {
        ensure!(
            value.is_finite() && value >= 0.0,
            "{field} = {value} is out of range: allowed a finite number of 0 or more"
        );
        Ok(())
    }

    /// A finite number (a seed-like float that may take any sign).
    pub fn finite(field: &str, value: f64) -> Result<()> {
        ensure!(
            value.is_finite(),
            "{field} = {value} is not a finite number"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn first_occurrences_group_equal_items() {
        let (firsts, which) = super::first_occurrences(&[7, 3, 7, 9, 3, 3]);
        assert_eq!(firsts, vec![0, 1, 3]);
        assert_eq!(which, vec![0, 1, 0, 2, 1, 1]);
        assert_eq!(super::first_occurrences::<u8>(&[]), (vec![], vec![]));
    }

    use burn::prelude::*;
    use burn::tensor::Distribution;

    /// Packing changes where gemm reads the weight from, not the arithmetic: the products of
    /// few rows are bit for bit those of gemm's default threshold.
    #[test]
    fn tuned_packing_changes_no_bits() {
        let device = Device::flex();
        for (m, k, n) in [(8, 768, 3072), (32, 3072, 768), (7, 96, 200), (33, 64, 33)] {
            let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), &device);
            super::tune_matmul(false);
            let values = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().expect("f32");
            let plain = values(x.clone().matmul(w.clone()));
            super::tune_matmul(true);
            let packed = values(x.matmul(w));
            assert!(
                plain
                    .iter()
                    .zip(&packed)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{m}x{k}x{n}: the packed product differs"
            );
        }
    }
}
