//! COCO captions JSON (`captions_train2017.json`): `images[]` with `id` and `file_name`,
//! `annotations[]` with `image_id` and `caption`, images in a folder beside it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use super::check_image_file;
use crate::data::records::{CaptionRecord, LoadOptions, Loaded, Problem, Source};

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    caption: String,
}

/// The image folder of a COCO file: `images/` beside it, or `train2017/` for
/// `captions_train2017.json`, or the file's own folder.
pub fn default_image_dir(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let split = stem.strip_prefix("captions_").unwrap_or(stem);
    [dir.join("images"), dir.join(split)]
        .into_iter()
        .find(|d| d.is_dir())
        .unwrap_or(dir)
}

pub fn load(
    path: &Path,
    image_dir: Option<&Path>,
    options: LoadOptions,
) -> Result<Loaded<CaptionRecord>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let root: Value = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("{}: malformed JSON", path.display()))?;
    let list = |field: &str| -> Result<Vec<Value>> {
        match root.get(field) {
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => bail!("{}: field \"{field}\" must be an array", path.display()),
            None => bail!(
                "{}: missing field \"{field}\" (not a COCO captions file?)",
                path.display()
            ),
        }
    };
    let image_dir = image_dir.map_or_else(|| default_image_dir(path), Path::to_path_buf);
    let mut out = Loaded::new();

    // Images in file order; BTreeMap for their captions keeps output deterministic.
    let mut images: Vec<(u64, PathBuf, Source)> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    for (i, value) in list("images")?.into_iter().enumerate() {
        let at = Source::at(path, format!("images[{i}]"));
        match serde_json::from_value::<CocoImage>(value) {
            Err(e) => out.bad(options, Problem::new(at, e.to_string()))?,
            Ok(img) if index.contains_key(&img.id) => out.bad(
                options,
                Problem::new(at, format!("duplicate image id {}", img.id)),
            )?,
            Ok(img) => {
                index.insert(img.id, images.len());
                images.push((img.id, image_dir.join(&img.file_name), at));
            }
        }
    }
    let mut captions: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, value) in list("annotations")?.into_iter().enumerate() {
        let at = Source::at(path, format!("annotations[{i}]"));
        match serde_json::from_value::<CocoAnnotation>(value) {
            Err(e) => out.bad(options, Problem::new(at, e.to_string()))?,
            Ok(a) if a.caption.trim().is_empty() => {
                out.bad(options, Problem::new(at, "empty caption"))?
            }
            Ok(a) => match index.get(&a.image_id) {
                None => out.bad(
                    options,
                    Problem::new(at, format!("image_id {} is not in images[]", a.image_id)),
                )?,
                Some(&k) => captions
                    .entry(k)
                    .or_default()
                    .push(a.caption.trim().to_string()),
            },
        }
    }
    for (k, (id, image, at)) in images.into_iter().enumerate() {
        let Some(caps) = captions.remove(&k) else {
            out.bad(
                options,
                Problem::new(at, format!("image {id} has no captions")),
            )?;
            continue;
        };
        if let Err(message) = check_image_file(&image) {
            out.bad(options, Problem::new(at, message))?;
            continue;
        }
        out.records.push(CaptionRecord {
            id: id.to_string(),
            image,
            captions: caps,
            scene: None,
            source: at,
        });
    }
    Ok(out)
}
