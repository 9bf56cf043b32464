//! Evaluating a captioner: captions in each style for held-out images, judged by the judge
//! (never the reward critic), checked for content, and measured for diversity.

use std::collections::HashSet;

use anyhow::{Context, Result};
use burn::prelude::*;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::critic::sentence::SentenceEncoder;
use crate::critic::Critic;
use crate::data::sources::CaptionSource;
use crate::data::text_metrics::{
    bleu4, cider_d, excess_repetition_rate, repetition_rate, tokens, ConceptF1,
};
use crate::data::tokenizer::TextTokenizer;
use crate::model::clip_score::ClipScorer;
use crate::model::generate::Strategy;
use crate::model::repeats::Repeats;
use crate::model::settings::{check_repeats, check_sampling};
use crate::model::{DecodeOptions, LoadedCaptioner};
use crate::util::check;
use crate::world::{content_fidelity, Lexicon};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Images captioned (the first ones of the split).
    pub images: usize,
    /// Styles to evaluate (default: all the captioner knows).
    pub styles: Option<Vec<String>>,
    /// Greedy decoding instead of sampling.
    pub greedy: bool,
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Decode-time limits on repetition ([`Repeats`]): 1 and 0 are off.
    pub repetition_penalty: f32,
    pub no_repeat_ngram_size: usize,
    /// A sentence encoder (sentence-transformers folder): with it, each caption's highest
    /// embedding similarity to its picture's references is reported.
    pub content_encoder: Option<std::path::PathBuf>,
    /// A CLIP model (`CLIPModel` folder): with it, CLIPScore and RefCLIPScore are reported.
    pub clip: Option<std::path::PathBuf>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            images: 100,
            styles: None,
            greedy: false,
            temperature: 1.0,
            top_p: 0.9,
            max_new_tokens: 48,
            seed: 0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            content_encoder: None,
            clip: None,
        }
    }
}

impl EvalConfig {
    /// How captions are decoded for evaluation.
    pub fn decode_options(&self) -> DecodeOptions {
        DecodeOptions {
            strategy: if self.greedy {
                Strategy::Greedy
            } else {
                Strategy::Sample {
                    temperature: self.temperature,
                    top_k: 0,
                    top_p: self.top_p,
                }
            },
            max_new_tokens: self.max_new_tokens,
            seed: self.seed,
            repeats: self.repeats(),
        }
    }

    fn repeats(&self) -> Repeats {
        Repeats {
            penalty: self.repetition_penalty,
            no_repeat_ngram: self.no_repeat_ngram_size,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StyleEval {
    pub style: String,
    pub captions: usize,
    /// Share of captions whose judge argmax is the requested style.
    pub style_accuracy: f32,
    /// Mean judge probability of the requested style.
    pub style_score: f32,
    /// Mean content fidelity against the scene graphs (scene-world data).
    pub content_fidelity: Option<f32>,
    pub bleu4: f64,
    pub cider_d: f64,
    /// Mean over captions of the concept F1 to its picture's references
    /// (`text_metrics::ConceptF1`, idf over the evaluated pictures' references): what the
    /// caption names, whatever its style's words.
    pub concept_f1: f32,
    /// Mean over captions of the highest cosine similarity of its sentence embedding to one
    /// of its picture's references (with `content_encoder`).
    pub embedding_similarity: Option<f32>,
    /// Mean CLIP-S of caption and picture (with `clip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_score: Option<f32>,
    /// Mean RefCLIP-S over the captions whose picture has references (with `clip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_clip_score: Option<f32>,
    pub distinct1: f32,
    pub distinct2: f32,
    /// BLEU-4 of each caption against the style's other captions (lower: more diverse).
    pub self_bleu: f64,
    /// Share of captions that repeat a word within three words or a content word anywhere
    /// (`text_metrics::is_repetitive`).
    pub repetition_rate: f32,
    /// Share of captions that repeat a word beyond what their picture's references repeat
    /// (`text_metrics::excess_repeats`, what alignment's repetition penalty counts): "a grey
    /// cat and a grey bird" is no excess where a reference says it so.
    pub excess_repetition_rate: f32,
    /// Perplexity of the captions under the base captioner (same image and style).
    pub base_perplexity: Option<f32>,
    /// Mean over captions of Σ log π(token) − log π_base(token) over its sampled tokens: a
    /// (k1) estimate of KL(π ‖ π_base) per caption, in nats.
    pub kl_to_base: Option<f32>,
    pub examples: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaptionerEval {
    pub images: usize,
    pub config: EvalConfig,
    pub styles: Vec<StyleEval>,
    /// Every caption judged, style by style and picture by picture (`stylecap eval
    /// --captions` writes them).
    #[serde(skip)]
    pub captions: Vec<JudgedCaption>,
}

/// One caption of the evaluation: its picture (index in the split), style, text, tokens and
/// their log-probabilities.
#[derive(Clone, Debug, Serialize)]
pub struct JudgedCaption {
    pub image: usize,
    pub style: String,
    pub caption: String,
    pub token_ids: Vec<u32>,
    pub logprobs: Vec<f32>,
}

/// The mean of `xs`; None when empty.
fn mean(xs: &[f32]) -> Option<f32> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f32>() / xs.len() as f32)
}

/// Self-BLEU: corpus BLEU-4 of each caption against all the others.
pub fn self_bleu(texts: &[String]) -> f64 {
    if texts.len() < 2 {
        return 0.0;
    }
    let refs: Vec<Vec<String>> = (0..texts.len())
        .map(|i| {
            texts
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, t)| t.clone())
                .collect()
        })
        .collect();
    bleu4(texts, &refs)
}

/// distinct-n: distinct n-grams over all n-grams of a set of texts.
pub fn distinct_n(texts: &[String], n: usize) -> f32 {
    let mut all = 0usize;
    let mut seen = HashSet::new();
    for t in texts {
        let w = tokens(t);
        for g in w.windows(n) {
            all += 1;
            seen.insert(g.to_vec());
        }
    }
    seen.len() as f32 / all.max(1) as f32
}

impl EvalConfig {
    /// Checks every setting against its allowed range, naming the field of the first that
    /// is out of it.
    pub fn validate(&self) -> Result<()> {
        check::within("images", self.images, 1, 1_000_000)?;
        check_sampling(self.temperature, self.top_p, self.max_new_tokens)?;
        check_repeats(&self.repeats())
    }
}

/// Captions `source`'s first images in each style and measures them; with `base`, also
/// their perplexity and KL under the base captioner.
pub fn evaluate_captioner(
    captioner: &LoadedCaptioner,
    base: Option<&LoadedCaptioner>,
    judge: &(Critic, TextTokenizer),
    source: &CaptionSource,
    config: &EvalConfig,
    device: &Device,
) -> Result<CaptionerEval> {
    config.validate().context("invalid evaluation settings")?;
    let n = source.len().min(config.images);
    let ids: Vec<usize> = (0..n).collect();
    let examples = source.get_many(&ids)?;
    let images: Vec<RgbImage> = examples.iter().map(|e| e.image.clone()).collect();
    let refs: Vec<Vec<String>> = examples.iter().map(|e| e.captions.clone()).collect();
    let concepts = ConceptF1::new(&refs);
    let styles = config
        .styles
        .clone()
        .unwrap_or_else(|| captioner.model.config.style.styles.clone());
    let opts = config.decode_options();
    let lexicon = Lexicon::new();
    let encoder = match &config.content_encoder {
        Some(dir) => Some(SentenceEncoder::load(dir, device)?),
        None => None,
    };
    let clip = match &config.clip {
        Some(dir) => Some(ClipScorer::load(dir, device)?),
        None => None,
    };
    let (critic, tok) = judge;
    let mut out = Vec::new();
    let mut judged = Vec::new();
    for style in styles {
        let (captions, gens) = captioner.generate(&images, &style, &opts, device)?;
        judged.extend(
            captions
                .iter()
                .zip(&gens)
                .enumerate()
                .map(|(image, (c, g))| JudgedCaption {
                    image,
                    style: style.clone(),
                    caption: c.clone(),
                    token_ids: g.tokens.clone(),
                    logprobs: g.logprobs.clone(),
                }),
        );
        let (base_perplexity, kl_to_base) = match base {
            Some(b) => {
                let tokens: Vec<Vec<u32>> = gens.iter().map(|g| g.tokens.clone()).collect();
                let base_lp = b.score(&images, &style, &tokens, device)?;
                let count: usize = tokens.iter().map(Vec::len).sum();
                let nll = -base_lp.iter().flatten().map(|&x| x as f64).sum::<f64>();
                let kl: f64 = gens
                    .iter()
                    .zip(&base_lp)
                    .map(|(g, b)| {
                        g.logprobs
                            .iter()
                            .zip(b)
                            .map(|(p, q)| (p - q) as f64)
                            .sum::<f64>()
                    })
                    .sum();
                (
                    Some((nll / count.max(1) as f64).exp() as f32),
                    Some((kl / gens.len().max(1) as f64) as f32),
                )
            }
            None => (None, None),
        };
        let target = critic.style_index(&style)?;
        let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
        let probs = critic.probabilities(tok, &texts, device)?;
        let argmax = |p: &Vec<f32>| (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
        let hits = probs.iter().filter(|p| argmax(p) == target).count();
        let score = probs.iter().map(|p| p[target]).sum::<f32>() / n.max(1) as f32;
        let (clip_score, ref_clip_score) = match &clip {
            Some(scorer) => {
                let caps: Vec<&str> = captions.iter().map(String::as_str).collect();
                let pics: Vec<&RgbImage> = images.iter().collect();
                let rs: Vec<&[String]> = refs.iter().map(Vec::as_slice).collect();
                let (c, r) = scorer.scores(&caps, &pics, Some(&rs))?;
                let r: Vec<f32> = r.into_iter().flatten().collect();
                (mean(&c), mean(&r))
            }
            None => (None, None),
        };
        let fidelity: Vec<f32> = captions
            .iter()
            .zip(&examples)
            .filter_map(|(c, e)| e.scene.as_ref().map(|s| content_fidelity(&lexicon, c, s)))
            .collect();
        out.push(StyleEval {
            style,
            captions: n,
            style_accuracy: hits as f32 / n.max(1) as f32,
            style_score: score,
            content_fidelity: (!fidelity.is_empty())
                .then(|| fidelity.iter().sum::<f32>() / fidelity.len() as f32),
            bleu4: bleu4(&captions, &refs),
            cider_d: cider_d(&captions, &refs).0,
            concept_f1: captions
                .iter()
                .zip(&refs)
                .map(|(c, r)| concepts.score(c, r))
                .sum::<f32>()
                / n.max(1) as f32,
            embedding_similarity: match &encoder {
                Some(e) => {
                    let caps: Vec<&str> = captions.iter().map(String::as_str).collect();
                    let rs: Vec<&[String]> = refs.iter().map(Vec::as_slice).collect();
                    let s = e.max_similarity(&caps, &rs)?;
                    Some(s.iter().sum::<f32>() / s.len().max(1) as f32)
                }
                None => None,
            },
            clip_score,
            ref_clip_score,
            distinct1: distinct_n(&captions, 1),
            distinct2: distinct_n(&captions, 2),
            self_bleu: self_bleu(&captions),
            repetition_rate: repetition_rate(&captions),
            excess_repetition_rate: excess_repetition_rate(&captions, &refs),
            base_perplexity,
            kl_to_base,
            examples: captions.into_iter().take(3).collect(),
        });
    }
    Ok(CaptionerEval {
        images: n,
        config: config.clone(),
        styles: out,
        captions: judged,
    })
}

/// The evaluation as a table.
pub fn render(e: &CaptionerEval) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} images, {} decoding; style by the judge",
        e.images,
        if e.config.greedy { "greedy" } else { "sampled" }
    );
    // CLIP's columns only where a CLIP model scored the captions.
    let with_clip = e.styles.iter().any(|r| r.clip_score.is_some());
    let _ = write!(
        s,
        "  {:<12} {:>9} {:>7} {:>9} {:>7} {:>8} {:>8} {:>6} {:>6} {:>9} {:>6} {:>6} {:>8} {:>7}",
        "style",
        "style acc",
        "score",
        "content",
        "BLEU-4",
        "CIDEr-D",
        "concepts",
        "dist-1",
        "dist-2",
        "self-BLEU",
        "repeat",
        "excess",
        "base ppl",
        "KL"
    );
    if with_clip {
        let _ = write!(s, " {:>7} {:>9}", "CLIP-S", "RefCLIP-S");
    }
    s.push('\n');
    let opt = |v: Option<f32>| v.map_or("-".into(), |f| format!("{f:.3}"));
    for r in &e.styles {
        let _ = write!(
            s,
            "  {:<12} {:>9.3} {:>7.3} {:>9} {:>7.3} {:>8.3} {:>8.3} {:>6.3} {:>6.3} {:>9.3} {:>6.3} {:>6.3} {:>8} {:>7}",
            r.style,
            r.style_accuracy,
            r.style_score,
            opt(r.content_fidelity),
            r.bleu4,
            r.cider_d,
            r.concept_f1,
            r.distinct1,
            r.distinct2,
            r.self_bleu,
            r.repetition_rate,
            r.excess_repetition_rate,
            opt(r.base_perplexity),
            opt(r.kl_to_base)
        );
        if with_clip {
            let _ = write!(s, " {:>7} {:>9}", opt(r.clip_score), opt(r.ref_clip_score));
        }
        s.push('\n');
    }
    for r in &e.styles {
        if let Some(x) = r.examples.first() {
            let _ = writeln!(s, "  [{}] {x}", r.style);
        }
    }
    s
}
