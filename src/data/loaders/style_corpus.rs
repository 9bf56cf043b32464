//! Style corpora: JSONL `{"text": ..., "style": ...}`, or a folder with one text file per style
//! (`noir.txt`, one text per line).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::data::records::{LoadOptions, Loaded, Problem, Source, StyleText};

/// Style names are identifiers: they become CLI arguments, file names and JSON keys.
pub fn valid_style_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check_style(style: &str, known: Option<&[String]>) -> Result<(), String> {
    if !valid_style_name(style) {
        return Err(format!(
            "invalid style name {style:?} (letters, digits, '_' and '-')"
        ));
    }
    if let Some(known) = known {
        if !known.iter().any(|k| k == style) {
            return Err(format!(
                "unknown style {style:?} (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// Loads a JSONL corpus. With `known`, a style outside it is a bad record.
pub fn load_jsonl(
    path: &Path,
    known: Option<&[String]>,
    options: LoadOptions,
) -> Result<Loaded<StyleText>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Loaded::new();
    for (i, line) in text.lines().enumerate() {
        let at = Source::line(path, i + 1);
        match parse_line(line, known) {
            Ok((text, style)) => out.records.push(StyleText {
                text,
                style,
                source: at,
            }),
            Err(message) => out.bad(options, Problem::new(at, message))?,
        }
    }
    Ok(out)
}

fn parse_line(line: &str, known: Option<&[String]>) -> Result<(String, String), String> {
    if line.trim().is_empty() {
        return Err("empty line (expected a JSON object)".into());
    }
    let value: Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let field = |name: &str| -> Result<String, String> {
        match value.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("field \"{name}\" must be a string")),
            None => Err(format!("missing field \"{name}\"")),
        }
    };
    let (text, style) = (field("text")?, field("style")?);
    if text.trim().is_empty() {
        return Err("empty text".into());
    }
    check_style(&style, known)?;
    Ok((text.trim().to_string(), style))
}

/// Loads a folder of `STYLE.txt` files.
pub fn load_dir(
    dir: &Path,
    known: Option<&[String]>,
    options: LoadOptions,
) -> Result<Loaded<StyleText>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("{}: no STYLE.txt files", dir.display());
    }
    let mut out = Loaded::new();
    for file in files {
        let style = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if let Err(message) = check_style(&style, known) {
            out.bad(options, Problem::new(Source::file(&file), message))?;
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            let at = Source::line(&file, i + 1);
            if line.trim().is_empty() {
                out.bad(options, Problem::new(at, "empty text"))?;
                continue;
            }
            out.records.push(StyleText {
                text: line.trim().to_string(),
                style: style.clone(),
                source: at,
            });
        }
    }
    Ok(out)
}
