//! JSONL manifests: one `{"image": path, "caption": text}` per line (or `"captions": [...]`),
//! with optional `"id"` and, for the built-in world, `"scene"`. Image paths are relative to the
//! manifest's folder.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::check_image_file;
use crate::data::records::{CaptionRecord, LoadOptions, Loaded, Problem, Source};

pub fn load(path: &Path, options: LoadOptions) -> Result<Loaded<CaptionRecord>> {
    let mut out = Loaded::new();
    for item in read(path)? {
        match item {
            Ok(record) => out.records.push(record),
            Err(problem) => out.bad(options, problem)?,
        }
    }
    Ok(out)
}

/// Streams the manifest line by line: each item is a record or the problem with its line.
/// Memory stays flat however long the file is (only the ids seen are kept, to catch
/// duplicates).
pub fn read(path: &Path) -> Result<impl Iterator<Item = Result<CaptionRecord, Problem>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let root = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let path = path.to_path_buf();
    let mut ids = HashSet::new();
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .map(move |(i, line)| {
            let at = Source::line(&path, i + 1);
            let line = line.map_err(|e| Problem::new(at.clone(), format!("cannot read: {e}")))?;
            let record =
                parse_line(&line, &root, &at, i + 1).map_err(|m| Problem::new(at.clone(), m))?;
            if !ids.insert(record.id.clone()) {
                return Err(Problem::new(at, format!("duplicate id {:?}", record.id)));
            }
            Ok(record)
        }))
}

fn parse_line(
    line: &str,
    root: &Path,
    at: &Source,
    line_no: usize,
) -> Result<CaptionRecord, String> {
    if line.trim().is_empty() {
        return Err("empty line (expected a JSON object)".into());
    }
    let value: Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let obj = value.as_object().ok_or("expected a JSON object")?;
    let image = obj
        .get("image")
        .ok_or("missing field \"image\"")?
        .as_str()
        .ok_or("field \"image\" must be a string")?;
    let captions: Vec<String> = match (obj.get("caption"), obj.get("captions")) {
        (Some(Value::String(c)), None) => vec![c.clone()],
        (None, Some(Value::Array(cs))) => cs
            .iter()
            .map(|c| c.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or("field \"captions\" must be an array of strings")?,
        (Some(_), Some(_)) => return Err("give \"caption\" or \"captions\", not both".into()),
        (Some(_), None) => return Err("field \"caption\" must be a string".into()),
        (None, Some(_)) => return Err("field \"captions\" must be an array of strings".into()),
        (None, None) => return Err("missing field \"caption\"".into()),
    };
    if captions.is_empty() || captions.iter().any(|c| c.trim().is_empty()) {
        return Err("empty caption".into());
    }
    let id = match obj.get("id") {
        None => format!("line{line_no}"),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err("field \"id\" must be a non-empty string or a number".into()),
    };
    let scene = match obj.get("scene") {
        None => None,
        Some(v) => {
            Some(serde_json::from_value(v.clone()).map_err(|e| format!("invalid \"scene\": {e}"))?)
        }
    };
    let image = root.join(image);
    check_image_file(&image)?;
    Ok(CaptionRecord {
        id,
        image,
        captions,
        scene,
        source: at.clone(),
    })
}
