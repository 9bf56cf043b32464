//! How true concept-based pseudo-pairs are, measured on a `data synth` folder, whose scene
//! graphs the pairing never reads: each style sentence that names world things is paired
//! with a training picture by its references alone (`data::pseudo_pairs`), and the hidden
//! checker scores the sentence against that picture's scene graph (content F1; a picture
//! rendered to fit the sentence scores about 1). Sentences whose picture's references do not
//! name all they name are scored again as rewritten for that picture (`PseudoPairs::rewrite`).
//!
//! cargo run --release --example pseudo_pairs -- SYNTH_FOLDER [SENTENCES [STYLE_CORPUS]]

use std::path::PathBuf;

use anyhow::{Context, Result};
use stylecap::data::loaders::{manifest, style_corpus};
use stylecap::data::pseudo_pairs::{PseudoPairs, ShowPairs};
use stylecap::data::records::LoadOptions;
use stylecap::rng::Rng;
use stylecap::world::{check, Lexicon};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let folder = PathBuf::from(
        args.next()
            .context("usage: pseudo_pairs SYNTH_FOLDER [N]")?,
    );
    let n: usize = args.next().map_or(Ok(2000), |s| s.parse())?;
    let train = manifest::load(&folder.join("train.jsonl"), LoadOptions::default())?.records;
    let styles =
        style_corpus::load_jsonl(&folder.join("styles.jsonl"), None, LoadOptions::default())?
            .records;
    let start = std::time::Instant::now();
    let pairs = PseudoPairs::new(train.iter().map(|r| r.captions.clone()));
    let built = start.elapsed().as_secs_f64();
    let lexicon = Lexicon::new();
    let mut rng = Rng::keyed(0, 1);
    let (mut scored, mut f1, mut paired) = (0usize, 0f64, 0usize);
    // Pairs whose picture's references name all the sentence names, and the others.
    let (mut covered, mut f1_covered) = (0usize, 0f64);
    // Precision (the share of the sentence's claims the picture makes true), both kinds.
    let (mut precision, mut precision_covered) = (0f64, 0f64);
    // Pairs not fully covered whose sentence a swap of words mends, scored as rewritten.
    let (mut rewritten, mut f1_rewritten, mut precision_rewritten) = (0usize, 0f64, 0f64);
    let start = std::time::Instant::now();
    for t in styles
        .iter()
        .filter(|t| !lexicon.mentions(&t.text).is_empty())
        .take(n)
    {
        scored += 1;
        if let Some(p) = pairs.pair_for(&t.text, &mut rng) {
            paired += 1;
            let scene = train[p.picture]
                .scene
                .as_ref()
                .context("a synth folder has scene graphs")?;
            let c = check(&lexicon, &t.text, scene);
            f1 += c.f1 as f64;
            precision += c.precision as f64;
            if p.coverage >= 1.0 {
                covered += 1;
                f1_covered += c.f1 as f64;
                precision_covered += c.precision as f64;
            } else if let Some(shown) = pairs.rewrite(&t.text, p.picture) {
                let c = check(&lexicon, &shown, scene);
                rewritten += 1;
                f1_rewritten += c.f1 as f64;
                precision_rewritten += c.precision as f64;
                if rewritten <= 8 {
                    println!("  {:?} -> {:?} (F1 {:.2})", t.text, shown, c.f1);
                }
            }
        }
    }
    println!(
        "{scored} sentences naming world things, {paired} paired; content F1 of sentence to \
         paired picture {:.3}; index {built:.2} s, {:.2} ms per sentence",
        f1 / paired.max(1) as f64,
        start.elapsed().as_secs_f64() * 1e3 / scored.max(1) as f64
    );
    println!(
        "{covered} pairs whose picture's references name all the sentence names: F1 {:.3}, \
         precision {:.3}; the other {}: F1 {:.3}, precision {:.3}",
        f1_covered / covered.max(1) as f64,
        precision_covered / covered.max(1) as f64,
        paired - covered,
        (f1 - f1_covered) / (paired - covered).max(1) as f64,
        (precision - precision_covered) / (paired - covered).max(1) as f64
    );
    println!(
        "{rewritten} of those rewritten to name what their picture shows: F1 {:.3}, \
         precision {:.3}",
        f1_rewritten / rewritten.max(1) as f64,
        precision_rewritten / rewritten.max(1) as f64
    );
    // Sentences that name nothing, their slots filled with a random picture's things; then
    // the sentences of another corpus (argument 3), if given.
    let mut corpora = vec![(
        "the folder's".to_string(),
        styles
            .iter()
            .filter(|t| lexicon.mentions(&t.text).is_empty())
            .take(n)
            .map(|t| t.text.clone())
            .collect::<Vec<_>>(),
    )];
    if let Some(other) = args.next() {
        let texts = style_corpus::load_jsonl(other.as_ref(), None, LoadOptions::default())?;
        // How each style's sentences would be shown: paired as they are, rewritten, filled.
        let mut shown: std::collections::BTreeMap<String, [usize; 5]> = Default::default();
        for t in &texts.records {
            let c = shown.entry(t.style.clone()).or_default();
            c[0] += 1;
            let how = |rewrite, fill| ShowPairs {
                min_coverage: 1.0,
                rewrite,
                fill,
            };
            let describes = pairs.known_words(&t.text) >= 2;
            let k = if pairs
                .shown_pair(&t.text, how(false, false), &mut rng)
                .is_some()
            {
                c[4] += describes as usize;
                1
            } else if pairs
                .shown_pair(&t.text, how(true, false), &mut rng)
                .is_some()
            {
                c[4] += describes as usize;
                2
            } else if pairs
                .shown_pair(&t.text, how(true, true), &mut rng)
                .is_some()
            {
                3
            } else {
                continue;
            };
            c[k] += 1;
        }
        for (style, [all, paired, rewritten, filled, describing]) in shown {
            println!(
                "{style}: {all} sentences, {paired} paired, {rewritten} rewritten, {filled} \
                 filled; {describing} of the paired or rewritten name two or more words of the \
                 references ({:.1}%)",
                100.0 * describing as f64 / all as f64
            );
        }
        let texts = texts.records.into_iter().map(|t| t.text);
        corpora.push((other, texts.take(n).collect()));
    }
    for (name, texts) in corpora {
        let (mut filled, mut f1, mut precision) = (0usize, 0f64, 0f64);
        for t in &texts {
            let picture = rng.below(train.len());
            let Some(shown) = pairs.fill(t, picture, &mut rng) else {
                continue;
            };
            let scene = train[picture].scene.as_ref().context("scene graphs")?;
            let c = check(&lexicon, &shown, scene);
            filled += 1;
            f1 += c.f1 as f64;
            precision += c.precision as f64;
            if filled <= 6 {
                println!("  {t:?} -> {shown:?} (F1 {:.2})", c.f1);
            }
        }
        println!(
            "{name} {} sentences: {filled} with slots filled by a random picture's things: \
             F1 {:.3}, precision {:.3}",
            texts.len(),
            f1 / filled.max(1) as f64,
            precision / filled.max(1) as f64
        );
    }
    Ok(())
}
