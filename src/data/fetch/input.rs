//! URL lists: TSV or CSV with a header row (columns named by `--url-col` and
//! `--caption-col`), or JSONL objects with those keys.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Line in the list (1-based), for reports.
    pub line: usize,
    pub url: String,
    pub caption: String,
}

/// A row that could not be read, with its line.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub line: usize,
    pub problem: String,
}

pub fn read_list(
    path: &Path,
    url_col: &str,
    caption_col: &str,
) -> Result<(Vec<Entry>, Vec<BadRow>)> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "json" => read_jsonl(path, url_col, caption_col),
        "tsv" => read_delimited(path, b'\t', url_col, caption_col),
        "csv" => read_delimited(path, b',', url_col, caption_col),
        _ => bail!(
            "{}: unknown list format (expected .tsv, .csv or .jsonl)",
            path.display()
        ),
    }
}

fn read_jsonl(path: &Path, url_col: &str, caption_col: &str) -> Result<(Vec<Entry>, Vec<BadRow>)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let line = line.with_context(|| format!("{}:{line_no}: cannot read", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut problem = |p: String| {
            bad.push(BadRow {
                line: line_no,
                problem: p,
            })
        };
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                problem(format!("malformed JSON: {e}"));
                continue;
            }
        };
        match (v.get(url_col).and_then(|u| u.as_str()), v.get(caption_col)) {
            (Some(url), caption) => good.push(Entry {
                line: line_no,
                url: url.to_string(),
                caption: caption.and_then(|c| c.as_str()).unwrap_or("").to_string(),
            }),
            (None, _) => problem(format!("no string field {url_col:?}")),
        }
    }
    Ok((good, bad))
}

fn read_delimited(
    path: &Path,
    delimiter: u8,
    url_col: &str,
    caption_col: &str,
) -> Result<(Vec<Entry>, Vec<BadRow>)> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        // Alt-text often holds stray quotes; TSV lists are not quoted.
        .quoting(delimiter == b',')
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header row", path.display()))?
        .clone();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let Some(url_at) = col(url_col) else {
        bail!(
            "{}: no column {url_col:?} in the header (columns: {}); name it with --url-col",
            path.display(),
            header.iter().collect::<Vec<_>>().join(", ")
        );
    };
    let caption_at = col(caption_col);
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for row in reader.records() {
        match row {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line() as usize);
                match r.get(url_at) {
                    Some(url) if !url.trim().is_empty() => good.push(Entry {
                        line,
                        url: url.trim().to_string(),
                        caption: caption_at.and_then(|c| r.get(c)).unwrap_or("").to_string(),
                    }),
                    _ => bad.push(BadRow {
                        line,
                        problem: format!("no value in column {url_col:?}"),
                    }),
                }
            }
            Err(e) => bad.push(BadRow {
                line: e.position().map_or(0, |p| p.line() as usize),
                problem: e.to_string(),
            }),
        }
    }
    Ok((good, bad))
}
