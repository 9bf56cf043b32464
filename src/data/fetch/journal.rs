//! The fetch journal: one JSON line per finished record (kept or dropped), appended as each
//! finishes, and one before a downloaded image is decoded. A rerun reads it and skips what
//! is final, so nothing is downloaded twice; a line cut short by a kill is ignored (that
//! record is simply fetched again).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    /// Image path relative to the output folder.
    pub file: String,
    pub sha256: String,
    pub phash: u64,
    /// Size of the downloaded image.
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// Index of the record in the list (0-based, over readable rows).
    pub i: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<Kept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Written before decoding: found as a record's last line, the run died while decoding
    /// it (perhaps because of it), and the record is dropped rather than decoded again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decoding: bool,
}

impl Done {
    pub fn decoding(i: usize) -> Done {
        Done {
            i,
            kept: None,
            reason: None,
            detail: None,
            decoding: true,
        }
    }
}

/// Every complete line of the journal, by record index (a later line wins).
pub fn read(path: &Path) -> Result<BTreeMap<usize, Done>> {
    let mut out = BTreeMap::new();
    let Ok(file) = File::open(path) else {
        return Ok(out);
    };
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if let Ok(d) = serde_json::from_str::<Done>(&line) {
            out.insert(d.i, d);
        }
    }
    Ok(out)
}

pub struct Journal {
    file: Mutex<File>,
}

impl Journal {
    pub fn open(path: &Path) -> Result<Journal> {
        // A line cut by a kill is ended first, so the next line starts clean.
        let cut = std::fs::read(path).is_ok_and(|b| !b.is_empty() && !b.ends_with(b"\n"));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if cut {
            file.write_all(b"\n")?;
        }
        Ok(Journal {
            file: Mutex::new(file),
        })
    }

    pub fn append(&self, d: &Done) -> Result<()> {
        let mut line = serde_json::to_string(d)?;
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(line.as_bytes())?;
        Ok(())
    }
}
