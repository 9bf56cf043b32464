//! `stylecap report`: one self-contained HTML page for a demo folder (or a single training
//! run): the metrics table from `eval.json`, training and alignment curves (inline SVG), and a
//! gallery of test pictures (embedded PNG) with the factual reference and a caption per style
//! from the base and the aligned captioner, each with the judge's score and its content
//! fidelity.

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine as _;
use burn::prelude::Device;
use serde_json::Value;

use super::captioner::EvalConfig;
use super::plots::{line_chart, smooth, Series, BLUE_, GREEN_, GREY, ORANGE, PURPLE};
use crate::critic::Critic;
use crate::data::tokenizer::TextTokenizer;
use crate::model::folder::LoadedCaptioner;
use crate::sft::TrainConfig;
use crate::util::write_atomic;
use crate::world::{content_fidelity, Lexicon};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportOptions {
    /// Test pictures in the gallery.
    pub images: usize,
    pub seed: u64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { images: 8, seed: 0 }
    }
}

/// Most pictures in a report's gallery: each is captioned in every style and embedded in
/// the page.
pub const MAX_GALLERY_IMAGES: usize = 200;

impl ReportOptions {
    pub fn validate(&self) -> Result<()> {
        crate::util::check::within("images", self.images, 1, MAX_GALLERY_IMAGES)
    }
}

/// Where a run's parts are: a demo folder (`base/`, `align/`, `judge/`, `eval.json`) or a
/// single supervised run (`model/`, `metrics.jsonl`).
struct Layout {
    base: PathBuf,
    align: Option<PathBuf>,
    judge: Option<PathBuf>,
    eval: Option<PathBuf>,
}

fn layout(dir: &Path) -> Result<Layout> {
    let some = |p: PathBuf| p.exists().then_some(p);
    if dir.join("base/model/config.json").is_file() {
        return Ok(Layout {
            base: dir.join("base"),
            align: some(dir.join("align")).filter(|a| a.join("model/config.json").is_file()),
            judge: some(dir.join("judge")),
            eval: some(dir.join("eval.json")),
        });
    }
    anyhow::ensure!(
        dir.join("model/config.json").is_file(),
        "{}: neither a demo folder (base/model/) nor a training run (model/)",
        dir.display()
    );
    Ok(Layout {
        base: dir.to_path_buf(),
        align: None,
        judge: None,
        eval: some(dir.join("eval.json")),
    })
}

fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn points(rows: &[Value], key: &str) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
        .collect()
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The picture as an embedded image: small pictures (the built-in world's) scaled up by
/// whole pixels, photographs shrunk to at most 256 pixels a side and kept as JPEG, so eight
/// of them cost a few hundred kilobytes of page.
fn picture_data_uri(img: &image::RgbImage) -> Result<String> {
    use image::imageops::{resize, FilterType};
    let side = img.width().max(img.height()).max(1);
    let mut bytes = Vec::new();
    let mime = if side <= 128 {
        let scale = (128 / side).max(1);
        let big = resize(
            img,
            img.width() * scale,
            img.height() * scale,
            FilterType::Nearest,
        );
        big.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)?;
        "image/png"
    } else {
        let k = 256.0 / side as f64;
        let (w, h) = (
            ((img.width() as f64 * k).round() as u32).clamp(1, 256),
            ((img.height() as f64 * k).round() as u32).clamp(1, 256),
        );
        let small = resize(img, w, h, FilterType::Triangle);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85).encode_image(&small)?;
        "image/jpeg"
    };
    Ok(format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// What the report says of the judge: whether it learnt from texts the reward critic never
/// saw (a user's corpus, cut in halves), or from the same built-in corpus as the critic.
fn judge_note(l: &Layout) -> String {
    let part = |dir: &Path| -> Option<String> {
        let c: Value = crate::util::read_json(&dir.join("config.json")).ok()?;
        Some(c.get("corpus_part")?.as_str()?.to_string())
    };
    let critic = l.base.parent().map(|d| d.join("critic"));
    match (
        l.judge.as_deref().and_then(part),
        critic.as_deref().and_then(part),
    ) {
        (Some(j), Some(c)) if j == "judge" && c == "critic" => {
            "The judge was trained on one half of the style corpus and the reward critic on the \
             other: the judge never saw a text the critic learnt from."
                .into()
        }
        (Some(_), _) => "The judge and the reward critic were trained on the same style corpus, \
             with another seed, held-out split and architecture: the judge is independent of \
             the critic's weights, not of its texts."
            .into(),
        _ => String::new(),
    }
}

fn curves(l: &Layout) -> Result<String> {
    let mut html = String::new();
    let size = (520, 300);
    let base_rows = read_jsonl(&l.base.join("metrics.jsonl")).unwrap_or_default();
    let (val, train): (Vec<Value>, Vec<Value>) = base_rows
        .into_iter()
        .partition(|r| r.get("split").is_some());
    html.push_str(&line_chart(
        "Supervised training: loss",
        "step",
        &[
            Series {
                name: "",
                points: points(&train, "loss"),
                color: BLUE_,
                faint: true,
            },
            Series {
                name: "train loss (smoothed)",
                points: smooth(&points(&train, "loss"), 0.1),
                color: BLUE_,
                faint: false,
            },
            Series {
                name: "validation loss",
                points: points(&val, "loss"),
                color: ORANGE,
                faint: false,
            },
        ],
        size,
    )?);
    html.push_str(&line_chart(
        "Supervised training: validation content and CIDEr-D",
        "step",
        &[
            Series {
                name: "content fidelity",
                points: points(&val, "content_fidelity"),
                color: GREEN_,
                faint: false,
            },
            Series {
                name: "CIDEr-D / 10",
                points: points(&val, "cider_d")
                    .into_iter()
                    .map(|(x, y)| (x, y / 10.0))
                    .collect(),
                color: PURPLE,
                faint: false,
            },
        ],
        size,
    )?);
    if let Some(a) = &l.align {
        let rows = read_jsonl(&a.join("metrics.jsonl")).unwrap_or_default();
        let steps: Vec<Value> = rows
            .iter()
            .filter(|r| r.get("validation").is_none())
            .cloned()
            .collect();
        // Validation rows carry their own step.
        let val: Vec<Value> = rows
            .iter()
            .filter_map(|r| r.get("validation").cloned())
            .collect();
        for (title, key, color) in [
            ("Alignment: reward", "reward", BLUE_),
            ("Alignment: KL to the base (nats per caption)", "kl", ORANGE),
            (
                "Alignment: style (critic probability)",
                "style_prob",
                PURPLE,
            ),
            ("Alignment: content fidelity", "content", GREEN_),
        ] {
            let raw = points(&steps, key);
            let mut series = vec![
                Series {
                    name: "",
                    points: raw.clone(),
                    color,
                    faint: true,
                },
                Series {
                    name: "per step (smoothed)",
                    points: smooth(&raw, 0.1),
                    color,
                    faint: false,
                },
            ];
            let vpoints = points(&val, key);
            if !vpoints.is_empty() {
                series.push(Series {
                    name: "validation",
                    points: vpoints,
                    color: GREY,
                    faint: false,
                });
            }
            html.push_str(&line_chart(title, "step", &series, size)?);
        }
    }
    Ok(html)
}

fn metric_table(eval: &Value) -> String {
    let mut h = String::new();
    let all: [(&str, &str); 15] = [
        ("style_accuracy", "style acc"),
        ("style_score", "judge p"),
        ("content_fidelity", "content"),
        ("bleu4", "BLEU-4"),
        ("cider_d", "CIDEr-D"),
        ("concept_f1", "concept F1"),
        ("embedding_similarity", "embedding sim"),
        ("clip_score", "CLIP-S"),
        ("ref_clip_score", "RefCLIP-S"),
        ("distinct2", "distinct-2"),
        ("self_bleu", "self-BLEU"),
        ("repetition_rate", "repetition"),
        ("excess_repetition_rate", "excess repetition"),
        ("base_perplexity", "base ppl"),
        ("kl_to_base", "KL to base"),
    ];
    // CLIP's columns only where an evaluation has them (`eval --clip`).
    let has = |key: &str| {
        ["base", "aligned"].iter().any(|m| {
            eval[*m]["styles"].as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|r| r.get(key).is_some_and(Value::is_number))
            })
        })
    };
    let cols: Vec<(&str, &str)> = all
        .into_iter()
        .filter(|(key, _)| !key.contains("clip") || has(key))
        .collect();
    h.push_str("<table class=\"metrics\"><tr><th>style</th><th>model</th>");
    for (_, label) in &cols {
        let _ = write!(h, "<th>{label}</th>");
    }
    h.push_str("</tr>");
    let models: Vec<&str> = ["base", "aligned"]
        .into_iter()
        .filter(|m| eval.get(*m).is_some())
        .collect();
    let styles = eval[models.first().copied().unwrap_or("base")]["styles"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, s) in styles.iter().enumerate() {
        for (k, m) in models.iter().enumerate() {
            let row = &eval[*m]["styles"][i];
            h.push_str("<tr>");
            if k == 0 {
                let _ = write!(
                    h,
                    "<td rowspan=\"{}\"><b>{}</b></td>",
                    models.len(),
                    escape(s["style"].as_str().unwrap_or(""))
                );
            }
            let _ = write!(h, "<td>{m}</td>");
            for (key, _) in &cols {
                let cell = row
                    .get(*key)
                    .and_then(Value::as_f64)
                    .map_or("–".into(), |v| format!("{v:.3}"));
                let _ = write!(h, "<td>{cell}</td>");
            }
            h.push_str("</tr>");
        }
    }
    h.push_str("</table>");
    h
}

struct Judge {
    critic: Critic,
    tokenizer: TextTokenizer,
}

fn gallery(l: &Layout, o: &ReportOptions, device: &Device) -> Result<(String, Vec<String>)> {
    let base = LoadedCaptioner::load(&l.base.join("model"), device)?;
    let aligned = match &l.align {
        Some(a) => Some(LoadedCaptioner::load(&a.join("model"), device)?),
        None => None,
    };
    let judge = match &l.judge {
        Some(j) => {
            let (critic, tokenizer) = Critic::load(j, device)?;
            Some(Judge { critic, tokenizer })
        }
        None => None,
    };
    let size = base.model.config.encoder.image_size();
    let config_path = l.base.join("config.json");
    let train: TrainConfig = crate::util::read_json(&config_path)
        .with_context(|| format!("{}: not a training run's settings", config_path.display()))?;
    let source = train.test_pictures(size, o.images)?;
    let ids: Vec<usize> = (0..source.len().min(o.images)).collect();
    let examples = source.get_many(&ids)?;
    let images: Vec<image::RgbImage> = examples.iter().map(|e| e.image.clone()).collect();
    // Decoded as `stylecap eval` decodes by default.
    let opts = EvalConfig {
        seed: o.seed,
        ..EvalConfig::default()
    }
    .decode_options();
    let lexicon = Lexicon::new();
    let styles = base.model.config.style.styles.clone();
    let mut models: Vec<(&str, &LoadedCaptioner)> = vec![("base", &base)];
    if let Some(a) = &aligned {
        models.push(("aligned", a));
    }
    // captions[model][style][image], and the judge's probability of that style for each
    // (one judge pass per model and style).
    let mut captions = Vec::new();
    let mut judged = Vec::new();
    for (_, m) in &models {
        let (mut per_style, mut judged_style) = (Vec::new(), Vec::new());
        for s in &styles {
            let texts = m.caption(&images, s, &opts, device)?;
            let p = match &judge {
                Some(j) => match j.critic.style_index(s) {
                    Ok(t) => {
                        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                        let probs = j.critic.probabilities(&j.tokenizer, &refs, device)?;
                        probs.iter().map(|p| Some(p[t])).collect()
                    }
                    Err(_) => vec![None; texts.len()],
                },
                None => vec![None; texts.len()],
            };
            per_style.push(texts);
            judged_style.push(p);
        }
        captions.push(per_style);
        judged.push(judged_style);
    }
    let mut h = String::new();
    let mut examples_out = Vec::new();
    for (i, e) in examples.iter().enumerate() {
        let _ = write!(
            h,
            "<div class=\"card\"><img class=\"picture\" src=\"{}\" alt=\"test picture {i}\"><div class=\"captions\"><p class=\"reference\"><b>reference</b> {}</p><table><tr><th>style</th>",
            picture_data_uri(&e.image)?,
            escape(e.captions.first().map_or("", String::as_str))
        );
        for (name, _) in &models {
            let _ = write!(h, "<th>{name}</th>");
        }
        h.push_str("</tr>");
        for (si, s) in styles.iter().enumerate() {
            let _ = write!(h, "<tr><td><b>{}</b></td>", escape(s));
            for (mi, _) in models.iter().enumerate() {
                let text = &captions[mi][si][i];
                let mut meta = Vec::new();
                if let Some(p) = judged[mi][si][i] {
                    meta.push(format!("judge {p:.2}"));
                }
                if let Some(scene) = &e.scene {
                    meta.push(format!(
                        "content {:.2}",
                        content_fidelity(&lexicon, text, scene)
                    ));
                }
                let _ = write!(
                    h,
                    "<td class=\"caption\">{}<div class=\"meta\">{}</div></td>",
                    escape(text),
                    meta.join(" · ")
                );
                if i == 0 && mi + 1 == models.len() {
                    examples_out.push(format!("[{s}] {text}"));
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</table></div></div>");
    }
    Ok((h, examples_out))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#222}\
h1{margin-bottom:.2rem}.sub{color:#666;margin-top:0}\
table.metrics{border-collapse:collapse;font-size:.9rem}table.metrics td,table.metrics th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}\
table.metrics td:first-child{text-align:left}.plots{display:flex;flex-wrap:wrap;gap:8px}\
.card{display:flex;gap:1rem;border-top:1px solid #eee;padding:1rem 0}.picture{width:128px;height:128px;object-fit:cover;flex:none}img.picture[src^=\"data:image/png\"]{image-rendering:pixelated}\
.captions table{border-collapse:collapse;font-size:.9rem;width:100%}.captions td,.captions th{vertical-align:top;padding:.2rem .5rem;text-align:left}\
.meta{color:#888;font-size:.75rem}.reference{margin-top:0}";

/// Writes `report.html` (or `out`) for `dir`; returns its path and a few example captions.
pub fn write_report(
    dir: &Path,
    out: Option<&Path>,
    o: &ReportOptions,
    device: &Device,
) -> Result<(PathBuf, Vec<String>)> {
    o.validate()?;
    let l = layout(dir)?;
    let eval: Option<Value> = match &l.eval {
        Some(p) => Some(crate::util::read_json(p)?),
        None => None,
    };
    let (gallery, examples) = gallery(&l, o, device)?;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>stylecap report: {}</title><style>{STYLE}</style></head><body>",
        escape(&dir.display().to_string())
    );
    let _ = write!(
        h,
        "<h1>stylecap report</h1><p class=\"sub\">{}: {}</p>",
        escape(&dir.display().to_string()),
        if l.align.is_some() {
            "base and aligned captioners"
        } else {
            "base captioner"
        }
    );
    h.push_str("<h2>Metrics</h2>");
    match &eval {
        Some(e) => {
            h.push_str(&metric_table(e));
            let _ = write!(
                h,
                "<p class=\"meta\">Sampled captions (T = 1, top-p 0.9) for the test pictures, judged by the judge (never the reward critic). {} Content: F1 of the facts named against the scene graph (where the data has them). KL: Σ log π − log π<sub>base</sub> per caption over its sampled tokens.</p>",
                judge_note(&l)
            );
        }
        None => h.push_str("<p>No eval.json here; run <code>stylecap eval</code>.</p>"),
    }
    h.push_str("<h2>Training curves</h2><div class=\"plots\" id=\"plots\">");
    h.push_str(&curves(&l)?);
    h.push_str("</div><h2>Gallery</h2><div id=\"gallery\">");
    h.push_str(&gallery);
    h.push_str("</div></body></html>\n");
    let path = out.map_or_else(|| dir.join("report.html"), Path::to_path_buf);
    write_atomic(&path, h.as_bytes())?;
    Ok((path, examples))
}

#[cfg(test)]
mod tests {
    use super::metric_table;
    use serde_json::json;

    #[test]
    fn clip_columns_appear_only_with_clip_scores() {
        let row = json!({"style": "noir", "style_accuracy": 0.5, "bleu4": 0.1});
        let plain = json!({"base": {"styles": [row.clone()]}});
        let t = metric_table(&plain);
        assert!(t.contains("style acc") && !t.contains("CLIP-S"), "{t}");
        let mut scored = row;
        scored["clip_score"] = json!(0.625);
        scored["ref_clip_score"] = json!(0.5);
        let with = json!({"base": {"styles": [scored.clone()]}, "aligned": {"styles": [scored]}});
        let t = metric_table(&with);
        assert!(t.contains("<th>CLIP-S</th><th>RefCLIP-S</th>"), "{t}");
        assert!(t.contains("<td>0.625</td><td>0.500</td>"), "{t}");
    }
}
