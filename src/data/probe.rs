//! Shortcut probes for a style corpus: can a style be told apart by something other than its
//! language? A classifier that sees only a text's length and punctuation should be near chance,
//! and no single word should mark a large share of a style's texts.

use std::collections::HashMap;

use serde::Serialize;

const PUNCTUATION: &str = ",.!?;:'\"-()";

#[derive(Clone, Debug, Serialize)]
pub struct LengthPunctuationProbe {
    /// Accuracy on the held-out fifth.
    pub accuracy: f32,
    /// Accuracy of always answering the most common style.
    pub chance: f32,
    pub held_out: usize,
}

/// Word count, character count (in tens) and punctuation marks: all the probe sees.
fn shape_keys(text: &str) -> [String; 3] {
    let words = text.split_whitespace().count();
    let punct: String = text.chars().filter(|c| PUNCTUATION.contains(*c)).collect();
    let chars = text.chars().count() / 10;
    [
        format!("{words}/{chars}/{punct}"),
        format!("{words}/{punct}"),
        format!("{words}"),
    ]
}

/// Trains a lookup classifier on 4/5 of the texts (most common style per exact shape, backing
/// off to coarser shapes for unseen ones) and tests it on the rest. A lookup table is used
/// rather than a linear model so that any dependence on shape, however non-linear, is found.
pub fn length_punctuation_probe(texts: &[(&str, &str)]) -> LengthPunctuationProbe {
    let mut tables: [HashMap<String, HashMap<&str, usize>>; 3] = Default::default();
    let mut overall: HashMap<&str, usize> = HashMap::new();
    for (i, (text, style)) in texts.iter().enumerate() {
        if i % 5 == 0 {
            continue;
        }
        for (table, key) in tables.iter_mut().zip(shape_keys(text)) {
            *table.entry(key).or_default().entry(style).or_default() += 1;
        }
        *overall.entry(style).or_default() += 1;
    }
    let best = |counts: &HashMap<&str, usize>| -> Option<String> {
        // Ties go to the alphabetically first style, so the result is deterministic.
        counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(s, _)| s.to_string())
    };
    let majority = best(&overall).unwrap_or_default();
    let (mut right, mut majority_right, mut n) = (0, 0, 0);
    for (text, style) in texts.iter().step_by(5) {
        let keys = shape_keys(text);
        let guess = tables
            .iter()
            .zip(&keys)
            .find_map(|(t, k)| t.get(k).and_then(best))
            .unwrap_or_else(|| majority.clone());
        right += (guess == *style) as usize;
        majority_right += (majority == *style) as usize;
        n += 1;
    }
    LengthPunctuationProbe {
        accuracy: right as f32 / n.max(1) as f32,
        chance: majority_right as f32 / n.max(1) as f32,
        held_out: n,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MarkerWord {
    pub style: String,
    /// The word that most often marks this style (≥ 90% of texts containing it are this style).
    pub word: Option<String>,
    /// Share of the style's texts that contain it.
    pub coverage: f32,
}

/// For each style, the word with the widest reach that on its own identifies the style.
pub fn marker_words(texts: &[(&str, &str)]) -> Vec<MarkerWord> {
    let mut per_style: HashMap<&str, usize> = HashMap::new();
    let mut word_total: HashMap<String, usize> = HashMap::new();
    let mut word_style: HashMap<(String, &str), usize> = HashMap::new();
    for (text, style) in texts {
        *per_style.entry(style).or_default() += 1;
        let mut words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        words.sort();
        words.dedup();
        for w in words {
            *word_total.entry(w.clone()).or_default() += 1;
            *word_style.entry((w, style)).or_default() += 1;
        }
    }
    let mut styles: Vec<&str> = per_style.keys().copied().collect();
    styles.sort();
    styles
        .into_iter()
        .map(|style| {
            let best = word_style
                .iter()
                .filter(|((w, s), &c)| *s == style && c >= 5 && c * 10 >= word_total[w] * 9)
                .max_by(|a, b| a.1.cmp(b.1).then(b.0 .0.cmp(&a.0 .0)));
            MarkerWord {
                style: style.to_string(),
                word: best.map(|((w, _), _)| w.clone()),
                coverage: best.map_or(0.0, |(_, &c)| c as f32 / per_style[style] as f32),
            }
        })
        .collect()
}
