//! The run folder: one layout for every trainer (`train`, `critic train`, `align`).
//!
//! ```text
//! RUN/config.json     the resolved configuration, written when the run starts
//! RUN/metrics.jsonl   one JSON object per logged step, appended
//! RUN/checkpoint/     the last checkpoint (its `state.json` holds the step), replaced atomically
//! RUN/model/          the trained model
//! RUN/eval.json       the final figures; a run is complete when it exists
//! ```
//!
//! A folder that holds a `config.json` holds a run: starting another there is refused, and
//! `--resume` (where a stage supports it) continues it from its checkpoint, with the saved
//! configuration and without the metrics logged after that checkpoint.
//!
//! A checkpoint is written into a temporary folder, synced to disk with its files, and only
//! then renamed into place (the previous one moved aside first). Its `state.json`, written
//! last, marks it complete. A run killed between the two renames has no `checkpoint/`, but
//! a complete one aside or in the temporary folder: resuming picks the newest complete one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::util::{read_json, write_atomic, write_json};

pub const CONFIG: &str = "config.json";
pub const METRICS: &str = "metrics.jsonl";
pub const CHECKPOINT: &str = "checkpoint";
pub const MODEL: &str = "model";
pub const EVAL: &str = "eval.json";
/// The checkpoint's own file naming its step.
const STATE: &str = "state.json";

/// How to run (not part of the configuration: it does not change the result).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub show_progress: bool,
    /// Stop after this step as if killed (after its checkpoint, if one is due): for tests.
    pub stop_after: Option<usize>,
}

/// A run folder (see the module documentation).
#[derive(Clone, Debug)]
pub struct RunFolder {
    dir: PathBuf,
}

/// The state a run resumes from.
pub struct Resumed<C> {
    pub run: RunFolder,
    pub config: C,
    /// Steps completed at the checkpoint.
    pub step: usize,
}

impl<C> Resumed<C> {
    /// Refuses a checkpoint past the run's last step (a changed `state.json` or `config.json`).
    pub fn check_step(&self, steps: usize) -> Result<()> {
        if self.step > steps {
            bail!(
                "{}: the checkpoint is at step {}, past the run's {} steps (0..={} allowed): \
                 its state.json or the run's config.json was changed",
                self.run.checkpoint_dir().display(),
                self.step,
                steps,
                steps
            );
        }
        Ok(())
    }
}

impl RunFolder {
    /// Starts a new run in `dir` with `config`; refused when `dir` holds a run already.
    pub fn create<C: Serialize>(dir: &Path, config: &C) -> Result<Self> {
        if dir.join(CONFIG).exists() {
            bail!(
                "{} already holds a run: pass --resume to continue it (where the stage can), \
                 or choose another --out",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_json(&dir.join(CONFIG), config)?;
        Ok(RunFolder {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens the run in `dir` to continue it from its checkpoint: its saved configuration, the
    /// checkpoint's step, and the metrics cut back to that step.
    pub fn resume<C: DeserializeOwned>(dir: &Path) -> Result<Resumed<C>> {
        let run = RunFolder {
            dir: dir.to_path_buf(),
        };
        run.recover_checkpoint()?;
        let Some(step) = run.checkpoint_step()? else {
            bail!("{}: no checkpoint to resume from", dir.display());
        };
        let config = read_json(&dir.join(CONFIG))?;
        run.truncate_metrics(step)?;
        Ok(Resumed { run, config, step })
    }

    /// Whether `dir` holds a checkpoint to resume from.
    pub fn has_checkpoint(dir: &Path) -> bool {
        complete_checkpoints(dir).is_ok_and(|c| !c.is_empty())
    }

    /// Makes `checkpoint/` the newest complete checkpoint, and removes the other checkpoint
    /// folders (complete or not) that a killed run left behind.
    fn recover_checkpoint(&self) -> Result<()> {
        let complete = complete_checkpoints(&self.dir)?;
        let final_dir = self.checkpoint_dir();
        if let Some((_, newest)) = complete.iter().max_by_key(|(step, _)| *step) {
            if *newest != final_dir {
                if final_dir.exists() {
                    let aside = self.dir.join(format!(".{CHECKPOINT}.superseded"));
                    let _ = std::fs::remove_dir_all(&aside);
                    std::fs::rename(&final_dir, &aside)?;
                }
                std::fs::rename(newest, &final_dir).with_context(|| {
                    format!(
                        "cannot move {} to {}",
                        newest.display(),
                        final_dir.display()
                    )
                })?;
                sync_dir(&self.dir)?;
            }
        }
        for leftover in checkpoint_folders(&self.dir)? {
            if leftover != final_dir {
                std::fs::remove_dir_all(&leftover)
                    .with_context(|| format!("cannot remove {}", leftover.display()))?;
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.dir.join(CHECKPOINT)
    }

    pub fn model_dir(&self) -> PathBuf {
        self.dir.join(MODEL)
    }

    /// The step of the checkpoint, if there is one.
    pub fn checkpoint_step(&self) -> Result<Option<usize>> {
        let path = self.checkpoint_dir().join(STATE);
        if !path.is_file() {
            return Ok(None);
        }
        let state: serde_json::Value = read_json(&path)?;
        let step = state["step"]
            .as_u64()
            .with_context(|| format!("{}: no step", path.display()))?;
        Ok(Some(step as usize))
    }

    /// The metrics log, opened for appending.
    pub fn metrics(&self) -> Result<Metrics> {
        let path = self.dir.join(METRICS);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Metrics { file, path })
    }

    /// Writes a checkpoint of `step`: `write` fills a fresh folder, which then replaces the
    /// previous checkpoint, only once it is complete.
    pub fn save_checkpoint(
        &self,
        step: usize,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let tmp = self
            .dir
            .join(format!(".{CHECKPOINT}.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        write(&tmp)?;
        write_json(&tmp.join(STATE), &serde_json::json!({ "step": step }))?;
        sync_tree(&tmp)?;
        let final_dir = self.checkpoint_dir();
        let old = self.dir.join(format!("{CHECKPOINT}.old"));
        let _ = std::fs::remove_dir_all(&old);
        if final_dir.exists() {
            std::fs::rename(&final_dir, &old)?;
        }
        std::fs::rename(&tmp, &final_dir)
            .with_context(|| format!("cannot move the checkpoint into {}", final_dir.display()))?;
        sync_dir(&self.dir)?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// Writes the final figures; the run is complete from then on.
    pub fn write_eval<T: Serialize>(&self, value: &T) -> Result<()> {
        write_json(&self.dir.join(EVAL), value)
    }

    /// Whether the run in `dir` is complete.
    pub fn is_complete(dir: &Path) -> bool {
        dir.join(EVAL).is_file()
    }

    /// Drops metrics logged after `step` (by a run killed after its last checkpoint).
    fn truncate_metrics(&self, step: usize) -> Result<()> {
        let path = self.dir.join(METRICS);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s as usize <= step)
            })
            .collect();
        let mut out = kept.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        write_atomic(&path, out.as_bytes())
    }
}

/// The checkpoint folders in a run folder: `checkpoint/`, the previous one moved aside, and
/// temporary ones.
fn checkpoint_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let ours = name == CHECKPOINT
            || name == format!("{CHECKPOINT}.old")
            || name.starts_with(&format!(".{CHECKPOINT}."));
        if ours && entry.path().is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The complete checkpoints (those whose `state.json`, written last, is readable) with their
/// steps.
fn complete_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    Ok(checkpoint_folders(dir)?
        .into_iter()
        .filter_map(|p| {
            let state: serde_json::Value = read_json(&p.join(STATE)).ok()?;
            Some((state["step"].as_u64()? as usize, p))
        })
        .collect())
}

/// Flushes a folder's entries (renames into it) to disk.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Flushes every file of a folder (one level: checkpoints are flat) and the folder itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot sync {}", path.display()))?;
        }
    }
    sync_dir(dir)
}

/// The run's `metrics.jsonl`, one JSON object a line.
pub struct Metrics {
    file: std::fs::File,
    path: PathBuf,
}

impl Metrics {
    pub fn log<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let line = serde_json::to_string(record)?;
        writeln!(self.file, "{line}")
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_refused_twice_and_resumes_from_its_checkpoint() {
        let dir = std::env::temp_dir().join(format!("stylecap-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = RunFolder::create(&dir, &serde_json::json!({"steps": 3})).unwrap();
        let e = RunFolder::create(&dir, &serde_json::json!({})).unwrap_err();
        assert!(e.to_string().contains("already holds a run"), "{e}");
        assert!(RunFolder::resume::<serde_json::Value>(&dir).is_err());
        let mut m = run.metrics().unwrap();
        for step in 1..=3 {
            m.log(&serde_json::json!({ "step": step })).unwrap();
        }
        m.log(&serde_json::json!({ "validation": {"step": 3} }))
            .unwrap();
        drop(m);
        run.save_checkpoint(2, |tmp| write_json(&tmp.join("x.json"), &1))
            .unwrap();
        assert!(RunFolder::has_checkpoint(&dir));
        let r = RunFolder::resume::<serde_json::Value>(&dir).unwrap();
        assert_eq!((r.step, r.config["steps"].as_u64()), (2, Some(3)));
        let log = std::fs::read_to_string(dir.join(METRICS)).unwrap();
        assert_eq!(log, "{\"step\":1}\n{\"step\":2}\n");
        assert!(dir.join("checkpoint/x.json").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The folders a run killed between the checkpoint's two renames leaves, with a newer
    /// complete checkpoint in the temporary folder or only the previous one aside.
    #[test]
    fn a_run_killed_between_the_renames_resumes_from_the_newest_complete_checkpoint() {
        let dir = std::env::temp_dir().join(format!("stylecap-run-kill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = RunFolder::create(&dir, &serde_json::json!({"steps": 9})).unwrap();
        run.save_checkpoint(3, |tmp| write_json(&tmp.join("w.json"), &3))
            .unwrap();
        // Killed after moving checkpoint/ aside, with the new one complete in its temporary
        // folder, and an older incomplete temporary folder beside them.
        std::fs::rename(dir.join(CHECKPOINT), dir.join("checkpoint.old")).unwrap();
        let tmp = dir.join(".checkpoint.tmp77");
        std::fs::create_dir_all(&tmp).unwrap();
        write_json(&tmp.join("w.json"), &6).unwrap();
        write_json(&tmp.join(STATE), &serde_json::json!({"step": 6})).unwrap();
        std::fs::create_dir_all(dir.join(".checkpoint.tmp12")).unwrap();
        assert!(RunFolder::has_checkpoint(&dir));
        let r = RunFolder::resume::<serde_json::Value>(&dir).unwrap();
        assert_eq!(r.step, 6);
        let w: u32 = read_json(&dir.join("checkpoint/w.json")).unwrap();
        assert_eq!(w, 6);
        let left: Vec<PathBuf> = checkpoint_folders(&dir).unwrap();
        assert_eq!(left, vec![dir.join(CHECKPOINT)], "leftovers are removed");

        // Killed with only the previous checkpoint aside (the new one incomplete).
        std::fs::rename(dir.join(CHECKPOINT), dir.join("checkpoint.old")).unwrap();
        std::fs::create_dir_all(dir.join(".checkpoint.tmp78")).unwrap();
        let r = RunFolder::resume::<serde_json::Value>(&dir).unwrap();
        assert_eq!(r.step, 6);
        assert_eq!(
            checkpoint_folders(&dir).unwrap(),
            vec![dir.join(CHECKPOINT)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
