//! Training data for the supervised captioner: image–caption examples (the built-in world made
//! on the fly, or records of a real dataset read from disk) and style texts, and the batches
//! of each step.
//!
//! A batch is a pure function of the seed and the step (each epoch is a seeded permutation),
//! so a resumed run sees exactly the batches an uninterrupted one would.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use rayon::prelude::*;

use crate::data::loaders::{self, coco, folder, manifest, style_corpus, Format};
use crate::data::records::{CaptionRecord, LoadOptions, Loaded, StyleText};
use crate::data::stream::decode;
use crate::data::synth::{DatasetInfo, STYLES_FILE};
use crate::rng::{streams, Rng};
use crate::world::styles;
use crate::world::{Scene, Split, World, WorldConfig};

/// One image with its captions (and its scene graph, for the built-in world).
pub struct CaptionExample {
    pub image: RgbImage,
    pub captions: Vec<String>,
    pub scene: Option<Scene>,
}

/// Where image–caption examples come from.
pub enum CaptionSource {
    /// The built-in world, rendered when asked for.
    World {
        world: World,
        split: Split,
        len: usize,
    },
    /// Records of a dataset on disk, decoded when asked for.
    Records(Vec<CaptionRecord>),
}

impl CaptionSource {
    /// `len` pictures of `split` of the built-in world with `seed`, rendered at `image_size`.
    pub fn world(seed: u64, image_size: usize, split: Split, len: usize) -> Self {
        let world = World::new(WorldConfig {
            seed,
            image_size: image_size as u32,
            ..WorldConfig::default()
        });
        CaptionSource::World { world, split, len }
    }

    /// The held-out pictures an evaluation captions: `split` of the built-in world (None), the
    /// split's manifest of a `data synth` folder, or any caption dataset as a whole.
    pub fn held_out(
        data: Option<&Path>,
        split: Split,
        image_size: usize,
        images: usize,
    ) -> Result<Self> {
        let options = LoadOptions::default();
        Ok(match data {
            None => CaptionSource::world(0, image_size, split, images),
            Some(path) if loaders::detect(path)? == Format::World => {
                let file = path.join(format!("{}.jsonl", split.name()));
                CaptionSource::Records(manifest::load(&file, options)?.records)
            }
            Some(path) => CaptionSource::Records(load_captions(path, options)?.records),
        })
    }

    pub fn len(&self) -> usize {
        match self {
            CaptionSource::World { len, .. } => *len,
            CaptionSource::Records(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Result<CaptionExample> {
        match self {
            CaptionSource::World { world, split, .. } => {
                let e = world.example(*split, i as u64);
                Ok(CaptionExample {
                    image: e.image,
                    captions: e.captions,
                    scene: Some(e.scene),
                })
            }
            CaptionSource::Records(records) => {
                let r = &records[i];
                Ok(CaptionExample {
                    image: decode(r)?,
                    captions: r.captions.clone(),
                    scene: r.scene.clone(),
                })
            }
        }
    }

    /// The reference captions of example `i`, without decoding or rendering its picture.
    pub fn references(&self, i: usize) -> Vec<String> {
        match self {
            CaptionSource::World { world, split, .. } => world.captions(*split, i as u64),
            CaptionSource::Records(records) => records[i].captions.clone(),
        }
    }

    /// Whether every example has a scene graph (the built-in world, `data synth` folders).
    pub fn has_scene_graphs(&self) -> bool {
        match self {
            CaptionSource::World { .. } => true,
            CaptionSource::Records(records) => records.iter().all(|r| r.scene.is_some()),
        }
    }

    /// The first `n` examples.
    pub fn first(self, n: usize) -> Self {
        match self {
            CaptionSource::World { world, split, len } => CaptionSource::World {
                world,
                split,
                len: len.min(n),
            },
            CaptionSource::Records(mut records) => {
                records.truncate(n);
                CaptionSource::Records(records)
            }
        }
    }

    /// Examples `indices`, decoded in parallel.
    pub fn get_many(&self, indices: &[usize]) -> Result<Vec<CaptionExample>> {
        indices.par_iter().map(|&i| self.get(i)).collect()
    }
}

/// The data of a supervised run.
pub struct TrainData {
    pub train: CaptionSource,
    pub val: CaptionSource,
    /// Held-out test sets evaluated at the end (the world's test and compositional splits).
    pub tests: Vec<(String, CaptionSource)>,
    pub styles: Vec<StyleText>,
    /// Problems skipped with `skip_bad`.
    pub skipped: Vec<String>,
}

fn take<T>(loaded: Loaded<T>, skipped: &mut Vec<String>) -> Vec<T> {
    skipped.extend(loaded.skipped.iter().map(|p| p.to_string()));
    loaded.records
}

/// Loads a caption dataset in any supported format.
pub fn load_captions(path: &Path, options: LoadOptions) -> Result<Loaded<CaptionRecord>> {
    match loaders::detect(path)? {
        Format::Coco => coco::load(path, None, options),
        Format::Manifest => manifest::load(path, options),
        Format::ImageFolder => folder::load(path, options),
        other => bail!(
            "{}: a {} holds no image captions",
            path.display(),
            other.describe()
        ),
    }
}

/// Loads a style corpus (JSONL or folder).
pub fn load_styles(path: &Path, options: LoadOptions) -> Result<Loaded<StyleText>> {
    match loaders::detect(path)? {
        Format::StyleJsonl => style_corpus::load_jsonl(path, None, options),
        Format::StyleFolder => style_corpus::load_dir(path, None, options),
        other => bail!(
            "{}: a {} is not a style corpus",
            path.display(),
            other.describe()
        ),
    }
}

/// The built-in style corpus, as style texts.
pub fn builtin_style_texts(per_style: usize, seed: u64) -> Vec<StyleText> {
    let names = styles::builtin_styles();
    let corpora = styles::builtin_corpora(per_style, seed);
    let source = crate::data::records::Source::file(Path::new("<built-in styles>"));
    let mut out = Vec::new();
    for j in 0..per_style {
        for (name, corpus) in names.iter().zip(&corpora) {
            if let Some(t) = corpus.get(j) {
                out.push(StyleText {
                    text: t.clone(),
                    style: name.to_string(),
                    source: source.clone(),
                });
            }
        }
    }
    out
}

/// Where a run's image–caption data comes from (the data part of its configuration).
pub struct DataSpec<'a> {
    /// A dataset on disk; None: the built-in world.
    pub data: Option<&'a Path>,
    /// Validation pictures in place of the held-out validation slice of `data`.
    pub val_data: Option<&'a Path>,
    /// Test pictures in place of the held-out test slice of `data`.
    pub test_data: Option<&'a Path>,
    /// A style corpus; None: the dataset's own (`data synth` folders) or the built-in styles.
    pub styles: Option<&'a Path>,
    pub skip_bad: bool,
    /// Seed of the held-out slices of a dataset without splits of its own.
    pub split_seed: u64,
    pub world_seed: u64,
    pub world_train: usize,
    pub world_val: usize,
    pub image_size: usize,
    /// Built-in style sentences per style.
    pub style_texts: usize,
}

/// The share of a dataset without splits held out for validation, and again for testing.
pub const HELD_OUT_SHARE: usize = 20;
/// The most pictures each held-out slice takes.
pub const HELD_OUT_MAX: usize = 1000;

/// The validation and test slices of a dataset of `len` pictures without splits of its own:
/// one seeded order, its first `n` for validation and the next `n` for testing (`n` = 5%, 1
/// to 1,000). They depend on nothing but `len` and `split_seed`, so every stage given the
/// same data holds out the same pictures: what `train` and `align` learn from is never
/// what `eval` and the report test on, whatever else their settings say.
pub fn held_out_slices(len: usize, split_seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..len).collect();
    Rng::keyed(split_seed, streams::KEY_VALIDATION_SLICE).shuffle(&mut order);
    let n = (len / HELD_OUT_SHARE).clamp(1, HELD_OUT_MAX);
    let mut val = order[..n].to_vec();
    let mut test = order[n..2 * n].to_vec();
    val.sort_unstable();
    test.sort_unstable();
    (val, test)
}

/// The image–caption splits of a dataset.
pub struct CaptionSplits {
    pub train: CaptionSource,
    pub val: CaptionSource,
    /// Held-out test sets: the world's test and compositional splits, a `data synth`
    /// folder's, or the test slice of any other dataset (`test_data` in its place).
    pub tests: Vec<(String, CaptionSource)>,
    /// The style corpus that came with the data (a `data synth` folder's).
    pub styles: Option<std::path::PathBuf>,
}

impl CaptionSplits {
    /// The built-in world (no `data`), a `data synth` folder's own splits, or any caption
    /// dataset with fixed held-out slices ([`held_out_slices`]); `val_data` and `test_data`
    /// replace the validation and test pictures. Records skipped with `skip_bad` are listed
    /// in `skipped`.
    pub fn load(config: &DataSpec, skipped: &mut Vec<String>) -> Result<Self> {
        let options = LoadOptions {
            skip_bad: config.skip_bad,
        };
        let mut splits = match config.data {
            None => {
                let n = config.world_val;
                let source = |split, len| {
                    CaptionSource::world(config.world_seed, config.image_size, split, len)
                };
                CaptionSplits {
                    train: source(Split::Train, config.world_train),
                    val: source(Split::Val, n),
                    tests: vec![
                        ("test".to_string(), source(Split::Test, n)),
                        ("compositional".to_string(), source(Split::Compositional, n)),
                    ],
                    styles: None,
                }
            }
            Some(path) if loaders::detect(path)? == Format::World => {
                DatasetInfo::read(path)?;
                let split = |name: &str, skipped: &mut Vec<String>| -> Result<CaptionSource> {
                    let file = path.join(format!("{name}.jsonl"));
                    Ok(CaptionSource::Records(take(
                        manifest::load(&file, options)?,
                        skipped,
                    )))
                };
                CaptionSplits {
                    train: split("train", skipped)?,
                    val: split("val", skipped)?,
                    tests: vec![
                        ("test".to_string(), split("test", skipped)?),
                        (
                            "compositional".to_string(),
                            split("compositional", skipped)?,
                        ),
                    ],
                    styles: Some(path.join(STYLES_FILE)),
                }
            }
            Some(path) => {
                let records = take(load_captions(path, options)?, skipped);
                if records.len() < 3 {
                    bail!(
                        "{}: {} images; need at least 3 to train, validate and test",
                        path.display(),
                        records.len()
                    );
                }
                let (val_ids, test_ids) = held_out_slices(records.len(), config.split_seed);
                let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
                for (i, r) in records.into_iter().enumerate() {
                    if val_ids.binary_search(&i).is_ok() {
                        val.push(r);
                    } else if test_ids.binary_search(&i).is_ok() {
                        test.push(r);
                    } else {
                        train.push(r);
                    }
                }
                CaptionSplits {
                    train: CaptionSource::Records(train),
                    val: CaptionSource::Records(val),
                    tests: vec![("test".to_string(), CaptionSource::Records(test))],
                    styles: None,
                }
            }
        };
        let mut replace = |path: &Path, what: &str| -> Result<CaptionSource> {
            let records = take(load_captions(path, options)?, skipped);
            if records.is_empty() {
                bail!("{}: no {what} images", path.display());
            }
            Ok(CaptionSource::Records(records))
        };
        if let Some(path) = config.val_data {
            splits.val = replace(path, "validation")?;
        }
        if let Some(path) = config.test_data {
            splits.tests = vec![("test".to_string(), replace(path, "test")?)];
        }
        if splits.train.is_empty() {
            bail!("no training images");
        }
        Ok(splits)
    }

    /// The first `n` pictures of the (first) test set.
    pub fn test(self, n: usize) -> Result<CaptionSource> {
        let (_, source) = self
            .tests
            .into_iter()
            .next()
            .context("this data has no test pictures")?;
        Ok(source.first(n))
    }
}

impl TrainData {
    pub fn load(config: &DataSpec) -> Result<TrainData> {
        let mut skipped = Vec::new();
        let splits = CaptionSplits::load(config, &mut skipped)?;
        let options = LoadOptions {
            skip_bad: config.skip_bad,
        };
        let styles = match config.styles.map(Path::to_path_buf).or(splits.styles) {
            Some(path) => take(
                load_styles(&path, options).with_context(|| "loading the style corpus")?,
                &mut skipped,
            ),
            None => builtin_style_texts(config.style_texts, config.world_seed),
        };
        Ok(TrainData {
            train: splits.train,
            val: splits.val,
            tests: splits.tests,
            styles,
            skipped,
        })
    }
}

/// Seeded epoch permutations of `0..len`, with the latest one kept.
pub struct EpochOrder {
    seed: u64,
    stream: u64,
    len: usize,
    cache: Mutex<Option<(usize, Vec<usize>)>>,
}

impl EpochOrder {
    pub fn new(seed: u64, stream: u64, len: usize) -> Self {
        EpochOrder {
            seed,
            stream,
            len,
            cache: Mutex::new(None),
        }
    }

    /// The item at global position `k` (epoch `k / len`).
    pub fn at(&self, k: usize) -> usize {
        let (epoch, pos) = (k / self.len, k % self.len);
        let mut cache = self.cache.lock().expect("not poisoned");
        if cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<usize> = (0..self.len).collect();
            Rng::for_item(self.seed, self.stream, epoch as u64).shuffle(&mut order);
            *cache = Some((epoch, order));
        }
        cache.as_ref().expect("filled").1[pos]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_slices_are_disjoint_fixed_by_their_seed_and_a_twentieth_each() {
        let (val, test) = held_out_slices(200, 0);
        assert_eq!((val.len(), test.len()), (10, 10));
        assert!(val.iter().all(|i| !test.contains(i) && *i < 200));
        assert_eq!(held_out_slices(200, 0), (val.clone(), test.clone()));
        assert_ne!(held_out_slices(200, 1).0, val);
        // At least one picture each, at most HELD_OUT_MAX.
        assert_eq!(held_out_slices(3, 0).0.len(), 1);
        assert_eq!(held_out_slices(100_000, 0).1.len(), HELD_OUT_MAX);
    }
}
