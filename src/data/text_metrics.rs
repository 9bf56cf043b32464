//! Caption metrics: corpus BLEU-4 and CIDEr-D against references, computed as the COCO
//! caption evaluation code (pycocoevalcap) computes them (a test checks both against it),
//! and the repetition of a caption.

// Ordered maps throughout: the floating-point sums then run in one order, so the same
// captions give the same figures to the last bit in every process.
use std::collections::{BTreeMap, BTreeSet};

/// Lower-cased words without punctuation (what pycocoevalcap's PTB tokenizer leaves).
pub fn tokens(text: &str) -> Vec<String> {
    word_spans(text).into_iter().map(|(_, w)| w).collect()
}

/// The byte range in `text` and the lower-cased form of each of its words ([`tokens`]): runs
/// of letters, digits and apostrophes.
pub fn word_spans(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let is_word = |c: char| c.is_alphanumeric() || c == '\'';
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (start, is_word(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                spans.push((s..i, text[s..i].to_lowercase()));
                start = None;
            }
            _ => {}
        }
    }
    spans
}

type Ngram = Vec<String>;

fn ngram_counts(words: &[String], max_n: usize) -> BTreeMap<Ngram, usize> {
    let mut counts = BTreeMap::new();
    for n in 1..=max_n {
        for w in words.windows(n) {
            *counts.entry(w.to_vec()).or_default() += 1;
        }
    }
    counts
}

/// Corpus BLEU-4: clipped n-gram precisions pooled over all candidates, geometric mean,
/// brevity penalty against the closest reference length.
pub fn bleu4(candidates: &[String], references: &[Vec<String>]) -> f64 {
    assert_eq!(candidates.len(), references.len());
    let mut correct = [0f64; 4];
    let mut guess = [0f64; 4];
    let (mut cand_len, mut ref_len) = (0f64, 0f64);
    for (cand, refs) in candidates.iter().zip(references) {
        let c = tokens(cand);
        let refs: Vec<Vec<String>> = refs.iter().map(|r| tokens(r)).collect();
        let mut max_ref: BTreeMap<Ngram, usize> = BTreeMap::new();
        for r in &refs {
            for (g, n) in ngram_counts(r, 4) {
                let m = max_ref.entry(g).or_default();
                *m = (*m).max(n);
            }
        }
        for (g, n) in ngram_counts(&c, 4) {
            correct[g.len() - 1] += n.min(max_ref.get(&g).copied().unwrap_or(0)) as f64;
        }
        for (k, g) in guess.iter_mut().enumerate() {
            *g += c.len().saturating_sub(k) as f64;
        }
        cand_len += c.len() as f64;
        // The closest reference length, the shorter on ties.
        ref_len += refs
            .iter()
            .map(|r| r.len())
            .min_by_key(|&l| ((l as i64 - c.len() as i64).abs(), l))
            .unwrap_or(0) as f64;
    }
    // pycocoevalcap's tiny/small terms keep log(0) away.
    let (tiny, small) = (1e-15, 1e-9);
    let log_precision: f64 = (0..4)
        .map(|k| ((correct[k] + tiny) / (guess[k] + small)).ln())
        .sum::<f64>()
        / 4.0;
    let ratio = (cand_len + tiny) / (ref_len + small);
    let brevity = if ratio < 1.0 {
        (1.0 - 1.0 / ratio).exp()
    } else {
        1.0
    };
    brevity * log_precision.exp()
}

struct TfIdf {
    vec: [BTreeMap<Ngram, f64>; 4],
    norm: [f64; 4],
    /// Bigram count, pycocoevalcap's length for the length penalty.
    length: f64,
}

/// CIDEr-D with document frequencies fixed from a corpus of references: the corpus score
/// ([`cider_d`]) takes them from the evaluated set, a reward from the training set's
/// references, as self-critical sequence training does.
pub struct CiderD {
    /// In how many pictures' references each n-gram appears.
    df: BTreeMap<Ngram, f64>,
    /// ln of the number of pictures.
    log_n: f64,
}

impl CiderD {
    /// Document frequencies over `references`, one list of reference captions per picture.
    pub fn new(references: &[Vec<String>]) -> Self {
        let mut df: BTreeMap<Ngram, f64> = BTreeMap::new();
        for rs in references {
            let mut seen: BTreeSet<Ngram> = Default::default();
            for r in rs {
                seen.extend(ngram_counts(&tokens(r), 4).into_keys());
            }
            for g in seen {
                *df.entry(g).or_default() += 1.0;
            }
        }
        CiderD {
            df,
            log_n: (references.len() as f64).ln(),
        }
    }

    fn tf_idf(&self, counts: &BTreeMap<Ngram, usize>) -> TfIdf {
        let mut v = TfIdf {
            vec: Default::default(),
            norm: [0.0; 4],
            length: 0.0,
        };
        for (g, &tf) in counts {
            let n = g.len() - 1;
            let d = self.df.get(g).copied().unwrap_or(0.0).max(1.0).ln();
            let x = tf as f64 * (self.log_n - d);
            v.vec[n].insert(g.clone(), x);
            v.norm[n] += x * x;
            if n == 1 {
                v.length += tf as f64;
            }
        }
        v.norm = v.norm.map(f64::sqrt);
        v
    }

    /// CIDEr-D of one caption against its picture's references: TF-IDF n-gram vectors
    /// (n = 1..4), clipped cosine similarity, Gaussian length penalty (σ = 6), ×10, averaged
    /// over references and n.
    pub fn score(&self, candidate: &str, references: &[String]) -> f64 {
        let sigma = 6.0;
        let h = self.tf_idf(&ngram_counts(&tokens(candidate), 4));
        let mut total = [0f64; 4];
        for r in references {
            let r = self.tf_idf(&ngram_counts(&tokens(r), 4));
            let delta = h.length - r.length;
            for (n, sum) in total.iter_mut().enumerate() {
                let mut val: f64 = h.vec[n]
                    .iter()
                    .map(|(g, &x)| {
                        let y = r.vec[n].get(g).copied().unwrap_or(0.0);
                        x.min(y) * y
                    })
                    .sum();
                if h.norm[n] != 0.0 && r.norm[n] != 0.0 {
                    val /= h.norm[n] * r.norm[n];
                }
                *sum += val * (-(delta * delta) / (2.0 * sigma * sigma)).exp();
            }
        }
        total.iter().sum::<f64>() / 4.0 / references.len().max(1) as f64 * 10.0
    }
}

/// The concepts of a text: its content words ([`content_words`]) and each two of them that
/// stand next to each other ("pink tree", which binds a colour to its thing where the words
/// alone would not).
pub fn concepts(text: &str) -> Vec<String> {
    let mut out = content_words(text);
    let words = tokens(text);
    let content: BTreeSet<&String> = out.iter().collect();
    let pairs: BTreeSet<String> = words
        .windows(2)
        .filter(|w| content.contains(&w[0]) && content.contains(&w[1]))
        .map(|w| format!("{} {}", w[0], w[1]))
        .collect();
    out.extend(pairs);
    out
}

/// The idf of the concepts ([`concepts`]) of a corpus of pictures' references, one list of
/// reference captions per picture: ln(pictures / pictures whose references use it). Concepts
/// in more than half the pictures say nothing about one and are left out.
pub fn concept_idf(references: impl Iterator<Item = Vec<String>>) -> BTreeMap<String, f32> {
    let mut df: BTreeMap<String, usize> = BTreeMap::new();
    let mut pictures = 0usize;
    for refs in references {
        pictures += 1;
        let seen: BTreeSet<String> = refs.iter().flat_map(|r| concepts(r)).collect();
        for c in seen {
            *df.entry(c).or_default() += 1;
        }
    }
    df.into_iter()
        .filter_map(|(c, d)| Some((c, idf(d, pictures)?)))
        .collect()
}

/// The idf of a concept the references of `df` of `pictures` pictures use; None for one in
/// more than half of them.
pub fn idf(df: usize, pictures: usize) -> Option<f32> {
    (df * 2 <= pictures).then(|| (pictures as f32 / df as f32).ln())
}

/// Concept F1 of a caption against its picture's references, each concept weighted by its
/// idf over a corpus of references, counting only concepts that corpus uses: the words of a
/// style the references never use ("lugubrious") neither earn nor cost anything, so a caption
/// is scored on what it names, not on its phrasing. Precision: the share of the caption's
/// concepts found in any reference; recall: the largest share of one reference's concepts
/// the caption names (references say the same thing in other words, which no caption names
/// all of).
pub struct ConceptF1 {
    idf: BTreeMap<String, f32>,
}

impl ConceptF1 {
    /// Idf over `references`, one list of reference captions per picture ([`concept_idf`]).
    pub fn new(references: &[Vec<String>]) -> Self {
        ConceptF1 {
            idf: concept_idf(references.iter().cloned()),
        }
    }

    fn known(&self, text: &str) -> BTreeSet<String> {
        concepts(text)
            .into_iter()
            .filter(|c| self.idf.contains_key(c))
            .collect()
    }

    fn mass<'a>(&self, cs: impl Iterator<Item = &'a String>) -> f32 {
        cs.map(|c| self.idf[c]).sum()
    }

    /// The F1 (0 where the caption or the references name no known concept).
    pub fn score(&self, candidate: &str, references: &[String]) -> f32 {
        let caption = self.known(candidate);
        let refs: Vec<BTreeSet<String>> = references.iter().map(|r| self.known(r)).collect();
        let any: BTreeSet<&String> = refs.iter().flatten().collect();
        let named = self.mass(caption.iter());
        if named == 0.0 || any.is_empty() {
            return 0.0;
        }
        let precision = self.mass(caption.iter().filter(|c| any.contains(c))) / named;
        let recall = refs
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| self.mass(r.intersection(&caption)) / self.mass(r.iter()))
            .fold(0f32, f32::max);
        if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        }
    }
}

/// Corpus CIDEr-D, document frequencies over the references of the evaluated set. Returns the
/// corpus score and per-caption scores.
pub fn cider_d(candidates: &[String], references: &[Vec<String>]) -> (f64, Vec<f64>) {
    assert_eq!(candidates.len(), references.len());
    let cider = CiderD::new(references);
    let scores: Vec<f64> = candidates
        .iter()
        .zip(references)
        .map(|(c, rs)| cider.score(c, rs))
        .collect();
    let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    (mean, scores)
}

/// Function words: repeating one ("a cat and a dog") is not repetition.
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "of", "in", "on", "at", "to", "by", "for", "from",
    "with", "into", "onto", "near", "beside", "under", "over", "above", "below", "behind", "is",
    "are", "was", "were", "be", "been", "it", "its", "he", "she", "his", "her", "they", "their",
    "this", "that", "these", "those", "as", "so", "than", "then", "there", "here", "i", "my", "me",
    "we", "our", "you", "your", "not", "no", "all", "some", "one", "very", "has", "have", "had",
    "do", "does", "did", "what", "which", "who", "while", "when",
];

/// The words of a caption that repeat an earlier one: a word again within three words ("a
/// purple purple tower", "awkward and awkward") or a content word (not a function word)
/// anywhere again. Evaluation's repetition rate is the share of captions with any.
pub fn repeated_words(text: &str) -> usize {
    repeats_beyond(text, |_| 1)
}

/// The repeated words of a caption ([`repeated_words`]) that its picture's references do not
/// justify: the k-th use of a content word is excused where one reference uses that word k
/// times or more ("a grey cat and a grey bird" of a picture whose reference says so). A word
/// again within three words is never excused. Alignment's repetition penalty counts these,
/// so a caption pays for repeating itself, not for naming two things the picture shares a
/// colour between. With no references it is [`repeated_words`].
pub fn excess_repeats(text: &str, references: &[String]) -> usize {
    let mut uses: BTreeMap<String, usize> = BTreeMap::new();
    for reference in references {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for w in tokens(reference) {
            *counts.entry(w).or_default() += 1;
        }
        for (w, n) in counts {
            let most = uses.entry(w).or_default();
            *most = (*most).max(n);
        }
    }
    repeats_beyond(text, |w| uses.get(w).copied().unwrap_or(0).max(1))
}

/// The words of `text` that repeat: a word again within three words (function words too), or
/// a word other than a function word used more than `allowed(word)` times.
fn repeats_beyond(text: &str, allowed: impl Fn(&str) -> usize) -> usize {
    let words = tokens(text);
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    words
        .iter()
        .enumerate()
        .filter(|&(i, w)| {
            let near = words[i.saturating_sub(2)..i].contains(w);
            // Counted for every word, so each content word's uses are known.
            let again = !FUNCTION_WORDS.contains(&w.as_str()) && {
                let n = uses.entry(w.as_str()).or_default();
                *n += 1;
                *n > allowed(w)
            };
            near || again
        })
        .count()
}

/// The words of a text that name something: not function words, not numbers, three letters
/// or more, each once, in order of first appearance.
pub fn content_words(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    tokens(text)
        .into_iter()
        .filter(|w| is_content_word(w) && seen.insert(w.clone()))
        .collect()
}

/// Whether a lower-cased word ([`tokens`]) names something: not a function word, not a
/// number, three letters or more.
pub fn is_content_word(word: &str) -> bool {
    word.chars().count() >= 3
        && word.chars().any(char::is_alphabetic)
        && !FUNCTION_WORDS.contains(&word)
}

/// Whether a caption repeats itself ([`repeated_words`]).
pub fn is_repetitive(text: &str) -> bool {
    repeated_words(text) > 0
}

/// The share of captions that repeat themselves ([`is_repetitive`]).
pub fn repetition_rate(texts: &[String]) -> f32 {
    let n = texts.iter().filter(|t| is_repetitive(t)).count();
    n as f32 / texts.len().max(1) as f32
}

/// The share of captions that repeat themselves beyond their pictures' references
/// ([`excess_repeats`]); `references[i]` are caption `i`'s.
pub fn excess_repetition_rate(texts: &[String], references: &[Vec<String>]) -> f32 {
    assert_eq!(texts.len(), references.len());
    let n = texts
        .iter()
        .zip(references)
        .filter(|(t, r)| excess_repeats(t, r) > 0)
        .count();
    n as f32 / texts.len().max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cider_d_is_the_same_to_the_last_bit_every_time() {
        let refs: Vec<Vec<String>> = (0..12)
            .map(|i| {
                vec![
                    format!("a red car {i} beside a small green house at night"),
                    format!("the house {} is green and the car is red", i % 5),
                ]
            })
            .collect();
        let cands: Vec<String> = (0..12)
            .map(|i| format!("a green car {} near the red house in the rain", i % 3))
            .collect();
        let first = cider_d(&cands, &refs);
        for _ in 0..20 {
            let again = cider_d(&cands, &refs);
            assert_eq!(again.0.to_bits(), first.0.to_bits());
            assert!(again
                .1
                .iter()
                .zip(&first.1)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    #[test]
    fn repetition_is_a_word_again_within_three_words_or_a_content_word_again() {
        for text in [
            "A purple purple tower.",
            "An awkward and awkward house",
            "the house stood beside the old house",
            "of the the road",
        ] {
            assert!(is_repetitive(text), "{text}");
        }
        for text in [
            "a red car beside a small green house at night",
            "The city wept, asphalt tears reflecting the neon wounds of a night.",
            "a cat and a dog in the garden",
            "",
        ] {
            assert!(!is_repetitive(text), "{text}");
        }
        let texts: Vec<String> = ["a tree tree", "a tree", "a big tree", "big big"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(repetition_rate(&texts), 0.5);
        assert_eq!(repeated_words("a tree tree"), 1);
        // Only the second "house": the second "the" is a function word four words on.
        assert_eq!(repeated_words("the house stood by the old house"), 1);
        assert_eq!(
            repeated_words("the the dark dark house of the dark house"),
            4
        );
    }

    #[test]
    fn excess_repeats_spare_what_one_reference_repeats() {
        let refs = s(&[
            "a grey cat and a grey bird under a tree",
            "two grey animals, a cat and a bird",
        ]);
        // "grey" twice is as one reference says it; a third time is one too many.
        assert_eq!(excess_repeats("a grey cat and a grey bird", &refs), 0);
        assert_eq!(repeated_words("a grey cat and a grey bird"), 1);
        assert_eq!(
            excess_repeats("a grey cat, a grey bird and a grey tree", &refs),
            1
        );
        // Uses are counted per reference, not summed over them: "cat" is once in each.
        assert_eq!(excess_repeats("a cat and a bird and a cat", &refs), 1);
        // Style words no reference uses are excused nowhere; near repeats never.
        assert_eq!(
            excess_repeats("a dismal grey cat, a dismal grey bird", &refs),
            1
        );
        assert_eq!(excess_repeats("a grey grey cat", &refs), 1);
        // Without references every repeat counts.
        assert_eq!(excess_repeats("a grey cat and a grey bird", &[]), 1);
        let texts = s(&["a grey cat and a grey bird", "a dismal cat, a dismal bird"]);
        let per_caption = vec![refs.clone(), refs];
        assert_eq!(excess_repetition_rate(&texts, &per_caption), 0.5);
        assert_eq!(repetition_rate(&texts), 1.0);
    }

    /// The reward's CIDEr-D by hand: one training picture with references "a red car" and
    /// "a blue car" and one with "a dog"; the caption "a red car" against the first.
    #[test]
    fn cider_reward_matches_a_hand_computed_value() {
        let refs = vec![s(&["a red car", "a blue car"]), s(&["a dog"])];
        let cider = CiderD::new(&refs);
        // ln 2 − ln df: "a" is in both pictures (idf 0); "red", "car", "blue", and every
        // bigram and trigram of the first picture are in one (idf ln 2).
        // Against "a red car": unigrams [a:0, red:l, car:l] equal, so cosine 1 for n = 1, 2
        // and 3 (n = 4 has no n-grams: 0); lengths (bigram counts) equal: penalty 1.
        // Against "a blue car": n = 1: (l·l)/(√2 l · √2 l) = 1/2 (only "car" shared);
        // n = 2, 3: no shared n-grams with weight; lengths equal.
        // Mean over references and n: ((1 + 1 + 1 + 0) + (0.5 + 0 + 0 + 0)) / 2 / 4 × 10.
        let expected = (3.0 + 0.5) / 2.0 / 4.0 * 10.0;
        let got = cider.score("a red car", &refs[0]);
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        // The corpus CIDEr-D is the same arithmetic with the evaluated set's frequencies.
        let (_, per) = cider_d(&s(&["a red car", "a dog"]), &refs);
        assert!((per[0] - expected).abs() < 1e-12);
    }

    fn s(x: &[&str]) -> Vec<String> {
        x.iter().map(|t| t.to_string()).collect()
    }

    /// Values from pycocoevalcap 1.2 (`Bleu(4)`, `Cider()`) on the same captions.
    #[test]
    fn matches_pycocoevalcap() {
        let refs = vec![
            s(&["a red car on the left at night", "a small red car at night"]),
            s(&["a blue boat in the fog", "there is a blue boat in the mist"]),
            s(&[
                "a green tree and a white house on a sunny day",
                "a tree and a house in daylight",
            ]),
        ];
        let cands = s(&[
            "a red car at night",
            "a boat in the fog",
            "a green tree and a house on a sunny day",
        ]);
        let b = bleu4(&cands, &refs);
        assert!((b - 0.728556495094309).abs() < 1e-9, "{b}");
        let (c, per) = cider_d(&cands, &refs);
        assert!((c - 4.84013058545828).abs() < 1e-9, "{c}");
        let expected = [4.99083043, 4.15170591, 5.37785541];
        for (a, e) in per.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{a} vs {e}");
        }
    }

    /// Against four pictures' references: "red", "boat" and "night" are in two of the four
    /// pictures (idf ln 2), every other concept in one (ln 4).
    #[test]
    fn concept_f1_weighs_what_a_caption_names_by_idf_and_ignores_its_style() {
        let refs: Vec<Vec<String>> = [
            &["a red car near a house", "a crimson car beside a house"][..],
            &["a blue boat on the sea"],
            &["a red boat at night"],
            &["a cat at night"],
        ]
        .iter()
        .map(|r| r.iter().map(|t| t.to_string()).collect())
        .collect();
        let f1 = ConceptF1::new(&refs);
        // Known concepts: red (ln 2), car, "red car" (ln 4 each), boat (ln 2): 6 ln 2, of
        // which boat is in no reference of picture 0 (precision 5/6). The first reference's
        // concepts weigh red + car + house + "red car" = 7 ln 2, of which the caption names
        // 5 ln 2 (the second's: 1/4), so recall is 5/7 and F1 = 2·(5/6)(5/7)/(5/6 + 5/7).
        let styled = f1.score("Oh, the gloomy red car wept by a boat", &refs[0]);
        assert!((styled - 10.0 / 13.0).abs() < 1e-6, "{styled}");
        // Words no reference uses count for nothing, either way.
        assert_eq!(
            f1.score("the lugubrious red car", &refs[0]),
            f1.score("the red car", &refs[0])
        );
        assert!((f1.score("a red car near a house", &refs[0]) - 1.0).abs() < 1e-6);
        assert_eq!(f1.score("Thou art a villain.", &refs[0]), 0.0);
        assert_eq!(f1.score("a blue boat on the sea", &refs[0]), 0.0);
    }
}
