//! The `--out` file of `caption`: JSON Lines, one record a caption, written as batches finish
//! and resumable. Until the last batch, lines go to `OUT.partial`: first the job's signature,
//! then each finished batch's lines and a mark `{"batch_done": b}`, synced to disk before the
//! next batch starts. A rerun of the same job keeps the batches marked done (a batch cut short
//! by a kill is dropped and decoded again) and goes on from there; a rerun of another job is
//! refused, naming what differs. After the last batch the records move to `OUT` (synced,
//! then renamed into place) and the partial file is removed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{BatchOutput, Unreadable};
use crate::util::AtomicWriter;

const JOB: &str = "stylecap_caption_job";
const DONE: &str = "batch_done";

pub struct Resumable {
    out: PathBuf,
    partial: PathBuf,
    file: File,
    done: usize,
    unreadable: Vec<Unreadable>,
}

/// `OUT.partial` beside `OUT`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

impl Resumable {
    /// Opens the output of the job with signature `job`: the unfinished run's partial file
    /// when there is one of the same job, a new one otherwise.
    pub fn open(out: &Path, job: &Value) -> Result<Resumable> {
        anyhow::ensure!(
            !out.is_dir(),
            "--out {}: a folder; name a file (JSON Lines)",
            out.display()
        );
        let partial = partial_path(out);
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let (keep, done, unreadable) = match std::fs::read(&partial) {
            Ok(bytes) => read_partial(&partial, &bytes, job)?,
            Err(_) => {
                let mut header = serde_json::json!({ JOB: job }).to_string();
                header.push('\n');
                std::fs::write(&partial, &header)
                    .with_context(|| format!("cannot write {}", partial.display()))?;
                (header.len() as u64, 0, Vec::new())
            }
        };
        let file = OpenOptions::new()
            .write(true)
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        // Whatever follows the last mark is a batch a kill cut short.
        file.set_len(keep)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let mut r = Resumable {
            out: out.to_path_buf(),
            partial,
            file,
            done,
            unreadable,
        };
        use std::io::Seek;
        r.file.seek(std::io::SeekFrom::End(0))?;
        Ok(r)
    }

    /// Batches finished by earlier runs of the job (they are batches `0..done`).
    pub fn batches_done(&self) -> usize {
        self.done
    }

    /// The pictures earlier runs could not read.
    pub fn unreadable(&self) -> &[Unreadable] {
        &self.unreadable
    }

    /// Appends batch `b` (the next one) and syncs it.
    pub fn push(&mut self, b: usize, batch: &BatchOutput) -> Result<()> {
        assert_eq!(b, self.done, "batches are written in order");
        let mut text = String::new();
        for r in &batch.records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        for u in &batch.unreadable {
            text.push_str(&serde_json::to_string(u)?);
            text.push('\n');
        }
        text.push_str(&serde_json::json!({ DONE: b }).to_string());
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot write {}", self.partial.display()))?;
        self.done += 1;
        self.unreadable.extend(batch.unreadable.iter().cloned());
        Ok(())
    }

    /// Writes `OUT` with every record, in order, and removes the partial file.
    pub fn finish(self) -> Result<()> {
        let text = std::fs::read_to_string(&self.partial)
            .with_context(|| format!("cannot read {}", self.partial.display()))?;
        let mut w = AtomicWriter::create(&self.out)?;
        for line in text.lines().skip(1) {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: a line is not JSON", self.partial.display()))?;
            if v.get(DONE).is_none() && v.get("unreadable").is_none() {
                w.write_line(line)?;
            }
        }
        w.commit()?;
        std::fs::remove_file(&self.partial)
            .with_context(|| format!("cannot remove {}", self.partial.display()))
    }
}

/// The length of the partial file's part to keep (through its last batch mark), the batches
/// it holds and the pictures they could not read; refused when it belongs to another job.
fn read_partial(path: &Path, bytes: &[u8], job: &Value) -> Result<(u64, usize, Vec<Unreadable>)> {
    let mut offset = 0u64;
    let mut keep = None;
    let mut done = 0;
    let mut unreadable = Vec::new();
    let mut pending = Vec::new();
    for (i, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        offset += line.len() as u64;
        // A line without its newline was cut by a kill; it and what follows are dropped.
        let Some(line) = line.strip_suffix(b"\n") else {
            break;
        };
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            break;
        };
        if i == 0 {
            match v.get(JOB) {
                Some(found) if found == job => {
                    keep = Some(offset);
                    continue;
                }
                Some(found) => bail!(
                    "{}: the unfinished output of another caption job (its {} differ); \
                     finish it with the same settings, or delete the file to start anew",
                    path.display(),
                    differences(found, job).join(", ")
                ),
                None => bail!(
                    "{}: not the partial output of `stylecap caption`; delete it or choose \
                     another --out",
                    path.display()
                ),
            }
        }
        if let Some(b) = v.get(DONE) {
            anyhow::ensure!(
                b.as_u64() == Some(done as u64),
                "{}: line {}: batch mark {b} where batch {done} was due",
                path.display(),
                i + 1
            );
            done += 1;
            keep = Some(offset);
            unreadable.append(&mut pending);
        } else if let Ok(u) = serde_json::from_value::<Unreadable>(v) {
            pending.push(u);
        }
    }
    match keep {
        Some(keep) => Ok((keep, done, unreadable)),
        None => bail!(
            "{}: its first line is cut short; delete the file to start anew",
            path.display()
        ),
    }
}

/// The keys of two job signatures whose values differ.
fn differences(a: &Value, b: &Value) -> Vec<String> {
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut all = keys(a);
    all.extend(keys(b));
    all.sort();
    all.dedup();
    all.into_iter().filter(|k| a.get(k) != b.get(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caption::Record;

    fn batch(image: &str) -> BatchOutput {
        BatchOutput {
            records: vec![Record {
                image: image.into(),
                style: Some("noir".into()),
                caption: format!("a caption of {image}"),
                token_ids: vec![1, 2],
                logprobs: vec![-0.5, -1.0],
            }],
            unreadable: vec![],
        }
    }

    #[test]
    fn a_run_cut_mid_batch_resumes_after_its_last_whole_batch() {
        let dir = std::env::temp_dir().join(format!("stylecap-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = dir.join("captions.jsonl");
        let job = serde_json::json!({"seed": 1, "styles": ["noir"]});
        let mut r = Resumable::open(&out, &job).unwrap();
        r.push(0, &batch("a.png")).unwrap();
        r.push(1, &batch("b.png")).unwrap();
        drop(r);
        // A kill while batch 2 was being written: its record without its mark, and half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(partial_path(&out))
            .unwrap();
        f.write_all(b"{\"image\": \"c.png\", \"caption\": \"cut\"}\n{\"image\": \"c.p")
            .unwrap();
        drop(f);

        let other = serde_json::json!({"seed": 2, "styles": ["noir"]});
        let e = format!("{:#}", Resumable::open(&out, &other).err().unwrap());
        assert!(
            e.contains("captions.jsonl.partial") && e.contains("seed differ"),
            "{e}"
        );

        let mut r = Resumable::open(&out, &job).unwrap();
        assert_eq!(r.batches_done(), 2);
        let mut last = batch("c.png");
        last.unreadable.push(Unreadable {
            path: "d.png".into(),
            reason: "not a readable image".into(),
        });
        r.push(2, &last).unwrap();
        let r = Resumable::open(&out, &job).unwrap();
        assert_eq!(r.batches_done(), 3);
        assert_eq!(r.unreadable().len(), 1);
        r.finish().unwrap();
        assert!(!partial_path(&out).exists());
        let lines: Vec<Record> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let images: Vec<&str> = lines.iter().map(|l| l.image.as_str()).collect();
        assert_eq!(images, ["a.png", "b.png", "c.png"]);
        assert_eq!(lines[2], batch("c.png").records[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
