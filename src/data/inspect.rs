//! `stylecap data inspect`: what a dataset holds and what is wrong with it: counts, style
//! balance, caption lengths, image sizes (every image is decoded), shortcut probes for style
//! corpora, and every bad record with its file and line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::data::loaders::{self, coco, folder, manifest, style_corpus, Format};
use crate::data::probe::{self, LengthPunctuationProbe, MarkerWord};
use crate::data::records::{CaptionRecord, LoadOptions, Loaded, Problem, StyleText};
use crate::data::stream::image_chunks;
use crate::data::synth::{DatasetInfo, STYLES_FILE};
use crate::world::Split;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub min: f32,
    pub median: f32,
    pub mean: f32,
    pub max: f32,
}

impl Summary {
    pub fn of(mut values: Vec<f32>) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        values.sort_by(f32::total_cmp);
        Summary {
            min: values[0],
            median: values[values.len() / 2],
            mean: values.iter().sum::<f32>() / values.len() as f32,
            max: values[values.len() - 1],
        }
    }

    /// The summary of integer values given as value → count.
    pub fn of_histogram(counts: &BTreeMap<usize, usize>) -> Summary {
        let n: usize = counts.values().sum();
        if n == 0 {
            return Summary::default();
        }
        let mut seen = 0;
        let median = counts
            .iter()
            .find(|(_, &c)| {
                seen += c;
                seen > n / 2
            })
            .map_or(0, |(&v, _)| v);
        Summary {
            min: *counts.keys().next().unwrap() as f32,
            median: median as f32,
            mean: counts.iter().map(|(&v, &c)| (v * c) as f32).sum::<f32>() / n as f32,
            max: *counts.keys().next_back().unwrap() as f32,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CaptionStats {
    pub name: String,
    pub images: usize,
    pub captions: usize,
    pub caption_words: Summary,
    pub images_decoded: usize,
    /// The most common image sizes, `WxH` → count.
    pub image_sizes: Vec<(String, usize)>,
    pub distinct_image_sizes: usize,
}

#[derive(Debug, Serialize)]
pub struct StyleCount {
    pub style: String,
    pub texts: usize,
    pub share: f32,
    pub words: Summary,
}

#[derive(Debug, Serialize)]
pub struct StyleStats {
    pub texts: usize,
    pub duplicate_texts: usize,
    pub styles: Vec<StyleCount>,
    pub length_punctuation_probe: LengthPunctuationProbe,
    pub marker_words: Vec<MarkerWord>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub path: String,
    pub format: String,
    pub caption_sets: Vec<CaptionStats>,
    pub styles: Option<StyleStats>,
    pub problems: Vec<Problem>,
}

pub fn inspect(path: &Path, images: Option<&Path>) -> Result<Report> {
    let format = loaders::detect(path)?;
    // Inspect lists every problem rather than stopping at the first.
    let options = LoadOptions { skip_bad: true };
    let mut report = Report {
        path: path.display().to_string(),
        format: format.describe().to_string(),
        caption_sets: Vec::new(),
        styles: None,
        problems: Vec::new(),
    };
    let add_captions = |name: &str, loaded: Loaded<CaptionRecord>, report: &mut Report| {
        report.problems.extend(loaded.skipped);
        let (stats, problems) = caption_stats(name, loaded.records.into_iter().map(Ok));
        report.caption_sets.push(stats);
        report.problems.extend(problems);
    };
    let stream_manifest = |name: &str, file: &Path, report: &mut Report| -> Result<()> {
        let (stats, problems) = caption_stats(name, manifest::read(file)?);
        report.caption_sets.push(stats);
        report.problems.extend(problems);
        Ok(())
    };
    match format {
        Format::Coco => add_captions("all", coco::load(path, images, options)?, &mut report),
        Format::Manifest => stream_manifest("all", path, &mut report)?,
        Format::ImageFolder => add_captions("all", folder::load(path, options)?, &mut report),
        Format::StyleJsonl | Format::StyleFolder => {
            let loaded = if format == Format::StyleJsonl {
                style_corpus::load_jsonl(path, None, options)?
            } else {
                style_corpus::load_dir(path, None, options)?
            };
            report.problems.extend(loaded.skipped);
            report.styles = Some(style_stats(&loaded.records));
        }
        Format::World => {
            let info = DatasetInfo::read(path)?;
            for split in Split::ALL {
                let file = path.join(format!("{}.jsonl", split.name()));
                stream_manifest(split.name(), &file, &mut report)?;
            }
            let known = info.styles.clone();
            let loaded = style_corpus::load_jsonl(&path.join(STYLES_FILE), Some(&known), options)?;
            report.problems.extend(loaded.skipped);
            report.styles = Some(style_stats(&loaded.records));
        }
    }
    Ok(report)
}

/// Statistics of a stream of records, decoding every image; holds one chunk at a time.
fn caption_stats(
    name: &str,
    records: impl Iterator<Item = Result<CaptionRecord, Problem>>,
) -> (CaptionStats, Vec<Problem>) {
    let mut word_counts: BTreeMap<usize, usize> = BTreeMap::new();
    let mut sizes: HashMap<(u32, u32), usize> = HashMap::new();
    let mut problems = Vec::new();
    let (mut images, mut decoded) = (0, 0);
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut records = records.peekable();
    while records.peek().is_some() {
        chunk.clear();
        for item in records.by_ref().take(CHUNK) {
            match item {
                Ok(r) => chunk.push(r),
                Err(p) => problems.push(p),
            }
        }
        images += chunk.len();
        for r in &chunk {
            for c in &r.captions {
                *word_counts.entry(c.split_whitespace().count()).or_default() += 1;
            }
        }
        for (_, result) in image_chunks(&chunk, CHUNK, |_, img| img.dimensions()).flatten() {
            match result {
                Ok(dims) => {
                    *sizes.entry(dims).or_default() += 1;
                    decoded += 1;
                }
                Err(p) => problems.push(p),
            }
        }
    }
    let mut common: Vec<((u32, u32), usize)> = sizes.iter().map(|(&k, &v)| (k, v)).collect();
    common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let stats = CaptionStats {
        name: name.to_string(),
        images,
        captions: word_counts.values().sum(),
        caption_words: Summary::of_histogram(&word_counts),
        images_decoded: decoded,
        image_sizes: common
            .iter()
            .take(5)
            .map(|((w, h), n)| (format!("{w}x{h}"), *n))
            .collect(),
        distinct_image_sizes: sizes.len(),
    };
    (stats, problems)
}

/// Records decoded together (in parallel) while inspecting.
const CHUNK: usize = 512;

fn style_stats(texts: &[StyleText]) -> StyleStats {
    let mut by_style: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for t in texts {
        by_style
            .entry(&t.style)
            .or_default()
            .push(t.text.split_whitespace().count() as f32);
    }
    let distinct: HashSet<(&str, &str)> = texts
        .iter()
        .map(|t| (t.text.as_str(), t.style.as_str()))
        .collect();
    let pairs: Vec<(&str, &str)> = texts
        .iter()
        .map(|t| (t.text.as_str(), t.style.as_str()))
        .collect();
    StyleStats {
        texts: texts.len(),
        duplicate_texts: texts.len() - distinct.len(),
        styles: by_style
            .into_iter()
            .map(|(style, words)| StyleCount {
                style: style.to_string(),
                texts: words.len(),
                share: words.len() as f32 / texts.len().max(1) as f32,
                words: Summary::of(words),
            })
            .collect(),
        length_punctuation_probe: probe::length_punctuation_probe(&pairs),
        marker_words: probe::marker_words(&pairs),
    }
}

/// The report as a terminal would show it.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{} ({})", report.path, report.format);
    for c in &report.caption_sets {
        let _ = writeln!(
            s,
            "  [{}] images {}  captions {} ({:.1} per image)",
            c.name,
            c.images,
            c.captions,
            c.captions as f32 / c.images.max(1) as f32
        );
        let w = &c.caption_words;
        let _ = writeln!(
            s,
            "      caption words: min {} median {} mean {:.1} max {}",
            w.min, w.median, w.mean, w.max
        );
        let sizes: Vec<String> = c
            .image_sizes
            .iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        let _ = writeln!(
            s,
            "      images decoded {} of {}; {} distinct sizes, most common: {}",
            c.images_decoded,
            c.images,
            c.distinct_image_sizes,
            sizes.join(", ")
        );
    }
    if let Some(st) = &report.styles {
        let _ = writeln!(
            s,
            "  style texts {} in {} styles ({} duplicates)",
            st.texts,
            st.styles.len(),
            st.duplicate_texts
        );
        let _ = writeln!(
            s,
            "      {:<16} {:>7} {:>6}  words (min/median/mean/max)",
            "style", "texts", "share"
        );
        for c in &st.styles {
            let _ = writeln!(
                s,
                "      {:<16} {:>7} {:>5.1}%  {}/{}/{:.1}/{}",
                c.style,
                c.texts,
                100.0 * c.share,
                c.words.min,
                c.words.median,
                c.words.mean,
                c.words.max
            );
        }
        let p = &st.length_punctuation_probe;
        let _ = writeln!(
            s,
            "      length+punctuation probe: accuracy {:.3} on {} held-out texts (majority baseline {:.3})",
            p.accuracy, p.held_out, p.chance
        );
        for m in &st.marker_words {
            let _ = writeln!(
                s,
                "      strongest marker word of {:<12} {:<16} in {:.1}% of its texts",
                m.style,
                m.word
                    .as_deref()
                    .map_or("(none)".to_string(), |w| format!("{w:?}")),
                100.0 * m.coverage
            );
        }
    }
    if report.problems.is_empty() {
        let _ = writeln!(s, "  problems: none");
    } else {
        let _ = writeln!(s, "  problems: {}", report.problems.len());
        for p in report.problems.iter().take(20) {
            let _ = writeln!(s, "    {p}");
        }
        if report.problems.len() > 20 {
            let _ = writeln!(
                s,
                "    ... ({} more; --json lists all)",
                report.problems.len() - 20
            );
        }
    }
    s
}
