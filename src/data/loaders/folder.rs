//! An image folder with captions beside the images: `dog.jpg` and `dog.txt` (one caption per
//! line). Subfolders are included; ids are paths relative to the folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{check_image_file, IMAGE_EXTENSIONS};
use crate::data::records::{CaptionRecord, LoadOptions, Loaded, Problem, Source};

pub fn load(dir: &Path, options: LoadOptions) -> Result<Loaded<CaptionRecord>> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    // Group by path without extension: one image and one .txt each.
    let mut groups: BTreeMap<PathBuf, (Vec<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    for f in files {
        let ext = extension(&f);
        let key = f.with_extension("");
        if ext == "txt" {
            groups.entry(key).or_default().1 = Some(f);
        } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            groups.entry(key).or_default().0.push(f);
        }
    }
    let mut out = Loaded::new();
    for (key, (images, txt)) in groups {
        let id = key
            .strip_prefix(dir)
            .unwrap_or(&key)
            .to_string_lossy()
            .into_owned();
        let (image, txt) = match (images.as_slice(), txt) {
            ([image], Some(txt)) => (image.clone(), txt),
            ([], Some(txt)) => {
                let problem = Problem::new(Source::file(&txt), "caption file without an image");
                out.bad(options, problem)?;
                continue;
            }
            ([image], None) => {
                let problem =
                    Problem::new(Source::file(image), "image without a caption file (.txt)");
                out.bad(options, problem)?;
                continue;
            }
            (many, _) => {
                let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
                let problem = Problem::new(
                    Source::file(&many[0]),
                    format!(
                        "several images share one caption name: {}",
                        names.join(", ")
                    ),
                );
                out.bad(options, problem)?;
                continue;
            }
        };
        let text = std::fs::read_to_string(&txt)
            .with_context(|| format!("cannot read {}", txt.display()))?;
        let captions: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
        if let Some(i) = captions.iter().position(String::is_empty) {
            out.bad(
                options,
                Problem::new(Source::line(&txt, i + 1), "empty caption"),
            )?;
            continue;
        }
        if captions.is_empty() {
            out.bad(options, Problem::new(Source::file(&txt), "empty caption"))?;
            continue;
        }
        if let Err(message) = check_image_file(&image) {
            out.bad(options, Problem::new(Source::file(&image), message))?;
            continue;
        }
        out.records.push(CaptionRecord {
            id,
            image,
            captions,
            scene: None,
            source: Source::file(&txt),
        });
    }
    Ok(out)
}

/// The PNG and JPEG files under `dir` (subfolders included), sorted by path.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.retain(|f| IMAGE_EXTENSIONS.contains(&extension(f).as_str()));
    Ok(files)
}

fn extension(p: &Path) -> String {
    p.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The files under `dir`, sorted. A folder reached twice (through a symbolic link to it, or
/// to a folder above it) is read once: a link loop would otherwise list every picture again
/// at each level, under new names, until the path grows too long.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    walk_once(dir, out, &mut std::collections::HashSet::new())
}

fn walk_once(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    seen: &mut std::collections::HashSet<PathBuf>,
) -> Result<()> {
    let real = std::fs::canonicalize(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?;
    if !seen.insert(real) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read folder {}", dir.display()))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk_once(&p, out, seen)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}
