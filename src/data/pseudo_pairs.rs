//! Concept-based pseudo-pairs (Feng et al. 2019, "Unsupervised Image Captioning"): a style
//! sentence that never described a picture is shown with a training picture whose reference
//! captions name the same things, so a decoder trained on unpaired style text still learns
//! to take what it names from the picture. The concepts are the content words of the
//! references and the pairs of them that stand together ("pink tree", which binds a colour
//! to its thing where the words alone would not); a sentence is paired with the picture that
//! shares the most of its concepts, each weighted by how rare it is among the pictures (idf),
//! and the pair's coverage says how much of what the sentence names that picture shows: the
//! trainer keeps only full ones (`min_pair_coverage`), which are fewer and truer.
//!
//! Most sentences have no picture that shows all they name ("the pink automobile and the
//! purple tree in the snow"); [`PseudoPairs::rewrite`] swaps the words the picture's
//! references lack for words of theirs that stand in the same places in the references
//! ("a red car", "a blue car": colours stand before things, things after colours), so the
//! sentence keeps its style and names what the picture shows. Sentences of styles that seldom
//! name the pictures' things at all (reviews, plays) take a picture's phrases in their noun
//! slots instead ([`PseudoPairs::fill`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::text_metrics::{concepts, content_words, idf, is_content_word, tokens, word_spans};
use crate::rng::Rng;

/// How much a picture's concepts that the sentence does not name count against it, per unit
/// of idf (each shared one counts 1): enough to prefer, of pictures that share as much, the
/// one with the least else in it, whose captions the sentence then describes most fully.
/// On a `data synth` folder the sentences' content F1 against their paired pictures (by the
/// hidden scene graphs; `examples/pseudo_pairs.rs`) is 0.62 at 0, 0.70 at 0.05, 0.62 at 0.2;
/// it keeps nearly as many fully covered pairs as a vanishing charge (628 of 2,000 sentences,
/// F1 0.862, against 659 at F1 0.857) and more than 0.2 (395, F1 0.852).
const CLUTTER: f32 = 0.05;

/// The least similarity of the places two words stand in (cosine of their context vectors)
/// for one to stand in for the other. Words of one kind (colours, things, weathers) share
/// their neighbours and score 0.45 to 1 on a `data synth` folder; words of two kinds share
/// none and score 0.
const MIN_SIMILARITY: f32 = 0.3;

/// Ends each phrase in [`PseudoPairs`]'s flat lists of them.
const PHRASE_END: u32 = u32::MAX;

/// The least idf of a phrase's rarest word for [`PseudoPairs::fill`] to use it (in at most a
/// quarter of the pictures): a phrase of words that many pictures' captions use frames them
/// ("an image showing", "you can see") or says little ("big") rather than naming what one
/// picture holds.
const MIN_PHRASE_IDF: f32 = std::f32::consts::LN_2 * 2.0;

/// The most words of a slot [`PseudoPairs::fill`] puts a phrase in ("the office staff").
const MAX_SLOT_WORDS: usize = 2;

/// Words after which a noun phrase stands ("the food", "thy sword"), the slots
/// [`PseudoPairs::fill`] puts a picture's things in.
const DETERMINERS: &[&str] = &[
    "a", "an", "the", "this", "that", "my", "our", "your", "their", "his", "her", "its", "thy",
    "thine",
];

/// The training pictures' concepts, indexed by word.
pub struct PseudoPairs {
    /// Each concept's id: the concepts of the references, less those in more than half the
    /// pictures, which say nothing about one.
    ids: BTreeMap<String, u32>,
    /// By concept id: the concept, the pictures whose references use it, and its idf.
    concepts: Vec<(String, Vec<u32>, f32)>,
    /// Each picture's concepts' idf, summed.
    mass: Vec<f32>,
    /// Each picture's concept ids, ascending.
    pictures: Vec<Vec<u32>>,
    /// Each picture's phrases: the runs of single-word concepts side by side in its
    /// references ("green mountain", "night"), as concept ids, each run ended by
    /// [`PHRASE_END`], each once.
    phrases: Vec<Vec<u32>>,
    /// By concept id, for single words: where the word stands in the references, as the
    /// words just before and just after it (positive pointwise mutual information, unit
    /// length, by feature id); empty for pairs.
    contexts: Vec<Vec<(u32, f32)>>,
}

impl PseudoPairs {
    /// The index of `references[i]`, the reference captions of training picture `i`.
    pub fn new(references: impl Iterator<Item = Vec<String>>) -> Self {
        let mut postings: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut neighbours = Neighbours::default();
        // Each picture's references' content words, for its phrases once the index is known.
        let mut runs: Vec<Vec<u32>> = Vec::new();
        let mut pictures = 0;
        for (i, refs) in references.enumerate() {
            pictures += 1;
            let words: BTreeSet<String> = refs.iter().flat_map(|r| concepts(r)).collect();
            for w in words {
                postings.entry(w).or_default().push(i as u32);
            }
            // Each reference's words by the neighbours' ids, 0 (no word) for function words
            // and between references.
            let mut words = Vec::new();
            for r in &refs {
                let ws = tokens(r);
                neighbours.count(&ws);
                words.extend(ws.iter().map(|w| {
                    if is_content_word(w) {
                        neighbours.word(w)
                    } else {
                        0
                    }
                }));
                words.push(0);
            }
            runs.push(words);
        }
        let mut ids = BTreeMap::new();
        let mut concepts = Vec::new();
        let mut contexts = Vec::new();
        for (c, list) in postings {
            if let Some(weight) = idf(list.len(), pictures) {
                ids.insert(c.clone(), concepts.len() as u32);
                contexts.push(if c.contains(' ') {
                    Vec::new()
                } else {
                    neighbours.vector(&c)
                });
                concepts.push((c, list, weight));
            }
        }
        // The neighbours' word ids as concept ids (PHRASE_END for the others).
        let mut as_concept = vec![PHRASE_END; neighbours.words.len() + 1];
        for (w, &i) in &neighbours.words {
            if let Some(&id) = ids.get(w) {
                as_concept[i as usize] = id;
            }
        }
        let concept_list = &concepts;
        let phrases = runs
            .into_iter()
            .map(|words| {
                let concepts: Vec<u32> = words.iter().map(|&w| as_concept[w as usize]).collect();
                let mut flat = Vec::new();
                let mut seen = BTreeSet::new();
                for run in concepts.split(|&c| c == PHRASE_END) {
                    let telling = run
                        .iter()
                        .any(|&c| concept_list[c as usize].2 >= MIN_PHRASE_IDF);
                    if telling && seen.insert(run) {
                        flat.extend_from_slice(run);
                        flat.push(PHRASE_END);
                    }
                }
                flat
            })
            .collect();
        let mut mass = vec![0f32; pictures];
        let mut of_picture = vec![Vec::new(); pictures];
        for (id, (_, list, idf)) in concepts.iter().enumerate() {
            for &i in list {
                mass[i as usize] += idf;
                of_picture[i as usize].push(id as u32);
            }
        }
        PseudoPairs {
            ids,
            concepts,
            mass,
            pictures: of_picture,
            phrases,
            contexts,
        }
    }

    /// The picture for `text`: of those sharing the greatest idf-weighted sum of its concepts
    /// with their references, less [`CLUTTER`] times the idf of theirs it does not name, one
    /// drawn by `rng`. None when it names nothing they name.
    pub fn picture_for(&self, text: &str, rng: &mut Rng) -> Option<usize> {
        self.pair_for(text, rng).map(|p| p.picture)
    }

    /// [`Self::picture_for`], with how much of what the sentence names the picture's
    /// references name.
    pub fn pair_for(&self, text: &str, rng: &mut Rng) -> Option<Pair> {
        let (known, named) = self.weigh(text)?;
        let mut shared = vec![0f32; self.mass.len()];
        for &id in &known {
            let (_, list, idf) = &self.concepts[id as usize];
            for &i in list {
                shared[i as usize] += idf;
            }
        }
        let score = |i: usize| (1.0 + CLUTTER) * shared[i] - CLUTTER * self.mass[i];
        let best = (0..shared.len())
            .map(score)
            .fold(f32::NEG_INFINITY, f32::max);
        let ties: Vec<usize> = (0..shared.len()).filter(|&i| score(i) == best).collect();
        let picture = *rng.pick(&ties);
        Some(Pair {
            picture,
            coverage: shared[picture] / named,
        })
    }

    /// The picture a style sentence is shown with, and the sentence as shown: its pair
    /// ([`Self::pair_for`]) if the picture's references name at least `min_coverage` of it,
    /// else, with `rewrite`, the sentence rewritten to name what that picture shows
    /// ([`Self::rewrite`]), else, with `fill`, a picture drawn at random and the sentence
    /// with its things put in its slots ([`Self::fill`]). None when none of these holds.
    pub fn shown_pair<'a>(
        &self,
        text: &'a str,
        how: ShowPairs,
        rng: &mut Rng,
    ) -> Option<(usize, Cow<'a, str>)> {
        if let Some(pair) = self.pair_for(text, rng) {
            if pair.coverage >= how.min_coverage {
                return Some((pair.picture, Cow::Borrowed(text)));
            }
            if let Some(shown) = how
                .rewrite
                .then(|| self.rewrite(text, pair.picture))
                .flatten()
            {
                return Some((pair.picture, Cow::Owned(shown)));
            }
        }
        if !how.fill {
            return None;
        }
        let picture = rng.below(self.pictures.len());
        let shown = self.fill(text, picture, rng)?;
        Some((picture, Cow::Owned(shown)))
    }

    /// `text` made to name what `picture` shows by putting the picture's things in its
    /// slots: each run of words after a determiner ("the food", "thy sword") that no
    /// reference uses takes one of the phrases of the picture's references ("green
    /// mountain", "snow"), drawn by `rng`, none sharing a word with another, as many as
    /// there are slots and phrases; what else it names is then rewritten for the picture
    /// ([`Self::rewrite`]). "The food was amazing and the staff friendly" becomes "The green
    /// mountain was amazing and the snow friendly": style corpora that never describe a
    /// scene (reviews, plays) then still teach the decoder to name the picture in their
    /// style. None when the sentence has no slot, or the result is not fully covered.
    pub fn fill(&self, text: &str, picture: usize, rng: &mut Rng) -> Option<String> {
        let spans = word_spans(text);
        let unknown = |w: &str| is_content_word(w) && !self.ids.contains_key(w);
        // Punctuation between words `j - 1` and `j` ends a phrase.
        let break_before = |j: usize| {
            text[spans[j - 1].0.end..spans[j].0.start]
                .chars()
                .any(|c| !c.is_whitespace())
        };
        // A slot: up to MAX_SLOT_WORDS words no reference uses after a determiner, ended by
        // punctuation, a function word or the end ("the service was", "a wretched chalice."),
        // not by another word that may be its verb ("the vampire knelt like").
        let mut slots = Vec::new();
        let mut i = 1;
        while i < spans.len() {
            if DETERMINERS.contains(&spans[i - 1].1.as_str()) && unknown(&spans[i].1) {
                let end = (i + 1..spans.len())
                    .find(|&j| break_before(j) || !unknown(&spans[j].1))
                    .unwrap_or(spans.len());
                let closed =
                    end == spans.len() || break_before(end) || !is_content_word(&spans[end].1);
                if closed && end - i <= MAX_SLOT_WORDS {
                    slots.push(i..end);
                }
                i = end;
            }
            i += 1;
        }
        let mut phrases: Vec<&[u32]> = self.phrases[picture]
            .split(|&c| c == PHRASE_END)
            .filter(|p| !p.is_empty())
            .collect();
        if slots.is_empty() || phrases.is_empty() {
            return None;
        }
        rng.shuffle(&mut phrases);
        let mut chosen: Vec<&[u32]> = Vec::new();
        for p in phrases {
            if chosen.len() < slots.len() && !chosen.iter().any(|c| c.iter().any(|w| p.contains(w)))
            {
                chosen.push(p);
            }
        }
        // One word per slot, the phrase in its first word's place and nothing in the rest.
        let mut words: Vec<String> = spans.iter().map(|(_, w)| w.clone()).collect();
        let mut gone = vec![false; spans.len()];
        for (slot, phrase) in slots.iter().zip(&chosen) {
            let names: Vec<&str> = phrase
                .iter()
                .map(|&c| self.concepts[c as usize].0.as_str())
                .collect();
            words[slot.start] = names.join(" ");
            for g in &mut gone[slot.start + 1..slot.end] {
                *g = true;
            }
        }
        let filled = respell_dropping(text, &spans, &words, &gone);
        match self.coverage(&filled, picture) {
            Some(c) if c >= 1.0 => Some(filled),
            Some(_) => self.rewrite(&filled, picture),
            None => None,
        }
    }

    /// How many of the references' words (single-word concepts) `text` uses.
    pub fn known_words(&self, text: &str) -> usize {
        content_words(text)
            .iter()
            .filter(|w| self.ids.contains_key(*w))
            .count()
    }

    /// How much of what `text` names the references of `picture` name ([`Pair::coverage`]);
    /// None when it names nothing any picture's references name.
    pub fn coverage(&self, text: &str, picture: usize) -> Option<f32> {
        let (known, named) = self.weigh(text)?;
        let own = &self.pictures[picture];
        let shared: f32 = known
            .iter()
            .filter(|id| own.binary_search(id).is_ok())
            .map(|&id| self.concepts[id as usize].2)
            .sum();
        Some(shared / named)
    }

    /// The ids of the concepts of `text` that the index has, and the idf they weigh
    /// together with its bindings that no reference has; None when it has none of them.
    fn weigh(&self, text: &str) -> Option<(Vec<u32>, f32)> {
        let cs = concepts(text);
        let known: Vec<u32> = cs.iter().filter_map(|c| self.ids.get(c).copied()).collect();
        let mut named: f32 = known.iter().map(|&id| self.concepts[id as usize].2).sum();
        if named == 0.0 {
            return None;
        }
        // Two words the references use, side by side as no reference has them ("white
        // feline" where the white things are suns and the cats green): a binding no picture
        // shows, as rare as a concept of one picture, which no picture covers.
        let unseen = (self.mass.len() as f32).ln();
        for c in &cs {
            if let Some((a, b)) = c.split_once(' ') {
                let known = |x: &str| self.ids.contains_key(x);
                if !known(c) && known(a) && known(b) {
                    named += unseen;
                }
            }
        }
        Some((known, named))
    }

    /// `text` made to name what `picture` shows: each word of the references that the
    /// picture's references lack is swapped for the word of theirs that stands in the most
    /// similar places (at least [`MIN_SIMILARITY`]), each two such words side by side for
    /// a binding the picture's references have ("purple tree" for "white tree"), and "a"
    /// or "an" mended before a swapped word; the style's words and the rest are kept. None
    /// when some word has no such stand-in, or the result is not fully covered.
    pub fn rewrite(&self, text: &str, picture: usize) -> Option<String> {
        let own = &self.pictures[picture];
        let shows = |c: &str| {
            self.ids
                .get(c)
                .is_some_and(|id| own.binary_search(id).is_ok())
        };
        let spans = word_spans(text);
        let mut words: Vec<String> = spans.iter().map(|(_, w)| w.clone()).collect();
        let word_id = |w: &str| {
            is_content_word(w)
                .then(|| self.ids.get(w).copied())
                .flatten()
        };
        let stand_ins: Vec<u32> = own
            .iter()
            .copied()
            .filter(|&id| !self.contexts[id as usize].is_empty())
            .collect();
        // The picture's word most like `id` that the sentence does not use yet and that
        // `fits`.
        let stand_in = |id: u32, words: &[String], fits: &dyn Fn(&str) -> bool| {
            stand_ins
                .iter()
                .map(|&c| (self.similarity(id, c), &self.concepts[c as usize].0))
                .filter(|(s, c)| *s >= MIN_SIMILARITY && !words.contains(c) && fits(c))
                .fold(None, |best: Option<(f32, &String)>, (s, c)| match best {
                    Some((b, _)) if b >= s => best,
                    _ => Some((s, c)),
                })
                .map(|(_, c)| c.clone())
        };
        for i in 0..words.len() {
            if let Some(id) = word_id(&words[i]) {
                if own.binary_search(&id).is_err() {
                    words[i] = stand_in(id, &words, &|_| true)?;
                }
            }
        }
        for i in 1..words.len() {
            let (Some(a), Some(b)) = (word_id(&words[i - 1]), word_id(&words[i])) else {
                continue;
            };
            if shows(&format!("{} {}", words[i - 1], words[i])) {
                continue;
            }
            let (left, right) = (words[i - 1].clone(), words[i].clone());
            if let Some(c) = stand_in(a, &words, &|c| shows(&format!("{c} {right}"))) {
                words[i - 1] = c;
            } else {
                words[i] = stand_in(b, &words, &|c| shows(&format!("{left} {c}")))?;
            }
        }
        let out = respell(text, &spans, &words);
        (self.coverage(&out, picture)? >= 1.0).then_some(out)
    }

    /// Cosine of the context vectors of two single-word concepts.
    fn similarity(&self, a: u32, b: u32) -> f32 {
        let (x, y) = (&self.contexts[a as usize], &self.contexts[b as usize]);
        let (mut i, mut j, mut dot) = (0, 0, 0f32);
        while i < x.len() && j < y.len() {
            match x[i].0.cmp(&y[j].0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    dot += x[i].1 * y[j].1;
                    i += 1;
                    j += 1;
                }
            }
        }
        dot
    }
}

/// Counts of the words just before and after each content word of the references.
#[derive(Default)]
struct Neighbours {
    /// Feature ids: 2 × word id for "just before", 2 × word id + 1 for "just after"; word
    /// id 0 is the caption's edge.
    words: BTreeMap<String, u32>,
    counts: BTreeMap<String, BTreeMap<u32, u32>>,
    /// Each feature's count over all content words, and all counts.
    feature_totals: BTreeMap<u32, u32>,
    total: u64,
}

impl Neighbours {
    fn word(&mut self, w: &str) -> u32 {
        let next = self.words.len() as u32 + 1;
        *self.words.entry(w.to_string()).or_insert(next)
    }

    fn count(&mut self, words: &[String]) {
        for (i, w) in words.iter().enumerate() {
            if !is_content_word(w) {
                continue;
            }
            let before = if i == 0 { 0 } else { self.word(&words[i - 1]) };
            let after = match words.get(i + 1) {
                Some(n) => self.word(n),
                None => 0,
            };
            let counts = self.counts.entry(w.clone()).or_default();
            for f in [2 * before, 2 * after + 1] {
                *counts.entry(f).or_default() += 1;
                *self.feature_totals.entry(f).or_default() += 1;
                self.total += 1;
            }
        }
    }

    /// The word's positive pointwise mutual information with each feature, unit length.
    fn vector(&self, word: &str) -> Vec<(u32, f32)> {
        let Some(counts) = self.counts.get(word) else {
            return Vec::new();
        };
        let n: u64 = counts.values().map(|&c| c as u64).sum();
        let mut v: Vec<(u32, f32)> = counts
            .iter()
            .map(|(&f, &c)| {
                let pmi = (c as f64 * self.total as f64
                    / (n as f64 * self.feature_totals[&f] as f64))
                    .ln();
                (f, pmi as f32)
            })
            .filter(|&(_, p)| p > 0.0)
            .collect();
        let norm = v.iter().map(|(_, p)| p * p).sum::<f32>().sqrt();
        for (_, p) in &mut v {
            *p /= norm;
        }
        v
    }
}

/// `text` with each word replaced by `words` where they differ, keeping a capital first
/// letter, and "a" or "an" mended before a replaced word.
fn respell(text: &str, spans: &[(std::ops::Range<usize>, String)], words: &[String]) -> String {
    respell_dropping(text, spans, words, &vec![false; spans.len()])
}

/// [`respell`], leaving out the words marked `gone` with the space or punctuation before
/// them.
fn respell_dropping(
    text: &str,
    spans: &[(std::ops::Range<usize>, String)],
    words: &[String],
    gone: &[bool],
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (i, ((range, old), new)) in spans.iter().zip(words).enumerate() {
        if gone[i] {
            at = range.end;
            continue;
        }
        out.push_str(&text[at..range.start]);
        at = range.end;
        let original = &text[range.clone()];
        let capital = original.starts_with(char::is_uppercase);
        let mut word = if old == new {
            original.to_string()
        } else {
            new.clone()
        };
        let next_changed = words
            .get(i + 1)
            .zip(spans.get(i + 1))
            .is_some_and(|(n, s)| *n != s.1);
        if next_changed && (old == "a" || old == "an") {
            let vowel = words[i + 1].starts_with(['a', 'e', 'i', 'o', 'u']);
            word = if vowel { "an" } else { "a" }.to_string();
        }
        if capital && word != original {
            let mut cs = word.chars();
            if let Some(f) = cs.next() {
                word = f.to_uppercase().chain(cs).collect();
            }
        }
        out.push_str(&word);
    }
    out.push_str(&text[at..]);
    out
}

/// How style sentences find their pictures ([`PseudoPairs::shown_pair`]).
#[derive(Clone, Copy, Debug)]
pub struct ShowPairs {
    /// The least coverage of a sentence shown unchanged with its pair.
    pub min_coverage: f32,
    /// Rewrite a sentence for its pair where the coverage falls short.
    pub rewrite: bool,
    /// Fill the slots of a sentence that has no pair, or none a rewrite mends, with the
    /// things of a picture drawn at random.
    pub fill: bool,
}

/// A style sentence's picture.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pair {
    /// Index into the training pictures.
    pub picture: usize,
    /// The idf-weighted share of the sentence's concepts (those the references use) that the
    /// picture's references use too: 1 when they name everything it names.
    pub coverage: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(texts: &[&[&str]]) -> Vec<Vec<String>> {
        texts
            .iter()
            .map(|r| r.iter().map(|t| t.to_string()).collect())
            .collect()
    }

    #[test]
    fn a_sentence_is_paired_with_the_picture_naming_most_of_its_rarest_words() {
        let pictures = refs(&[
            &["a red car on a road", "a crimson car"],
            &["a red boat on the sea"],
            &["a dog on a road"],
            &["a cat on a sofa"],
            &["a cat on a road"],
            &["a cat near the road"],
        ]);
        let p = PseudoPairs::new(pictures.into_iter());
        let mut rng = Rng::keyed(0, 1);
        // "crimson" and "car" only in picture 0.
        assert_eq!(
            p.picture_for("The crimson car wept alone.", &mut rng),
            Some(0)
        );
        // "boat" (1 of 6 pictures) outweighs "road" (4 of 6: in more than half, so unused).
        assert_eq!(
            p.picture_for("A boat upon the road, how dreary!", &mut rng),
            Some(1)
        );
        // "cat" is in three pictures, "sofa" in one: both words pick picture 3.
        assert_eq!(
            p.picture_for("Thy cat doth sleep upon the sofa", &mut rng),
            Some(3)
        );
        // "red" and "cat" are words of the references, "red cat" of none: however the
        // picture is chosen (picture 1, a red boat, has the most of it), the binding counts
        // against its coverage as a concept of one picture would (ln 6), which "red" (ln 3)
        // does not outweigh.
        let red_cat = p.pair_for("The red cat wept", &mut rng).unwrap();
        let expected = 3f32.ln() / (3f32.ln() + 2f32.ln() + 6f32.ln());
        assert_eq!(red_cat.picture, 1);
        assert!((red_cat.coverage - expected).abs() < 1e-6, "{red_cat:?}");
        // Of the pictures that share as much, those with the least else in them, ties drawn:
        // "cat" alone is picture 4 or 5 (the road says nothing), never 3 with its sofa.
        let drawn: BTreeSet<Option<usize>> = (0..40)
            .map(|_| p.picture_for("What a cat!", &mut rng))
            .collect();
        assert_eq!(drawn, [Some(4), Some(5)].into_iter().collect());
        assert_eq!(p.picture_for("Thou art a villain.", &mut rng), None);
        // "dog" is in picture 2 alone, whose references name nothing else the index keeps.
        assert_eq!(
            p.pair_for("The road, the dog.", &mut rng),
            Some(Pair {
                picture: 2,
                coverage: 1.0
            })
        );
        // "boat" and "sofa" are in no picture together: pictures 1 (a red boat on the sea) and
        // 3 (a cat on a sofa) each share half of the sentence by idf (ln 6 of 2 ln 6); 3 has
        // less else in it.
        assert_eq!(
            p.pair_for("A boat on a sofa", &mut rng),
            Some(Pair {
                picture: 3,
                coverage: 0.5
            })
        );
    }

    #[test]
    fn a_sentence_is_rewritten_to_name_what_its_picture_shows() {
        // Colours stand after "a" and before things, things after colours and before "in"
        // or the end, weathers after "the": three kinds of word, known by where they stand.
        let pictures = refs(&[
            &["a red car in the rain", "a red car"],
            &["a blue boat in the snow", "a blue boat"],
            &["a green car in the snow"],
            &["a red boat in the rain"],
            &["a blue car in the fog"],
            &["a green boat in the fog"],
            &["an orange boat in the snow"],
            &["an orange car in the fog"],
        ]);
        let p = PseudoPairs::new(pictures.into_iter());
        // A picture of a red boat in the rain: the colour swapped for its colour, the style's
        // words and punctuation kept.
        assert_eq!(
            p.rewrite("Alas, the green boat weeps in the rain!", 3)
                .as_deref(),
            Some("Alas, the red boat weeps in the rain!")
        );
        // Every word it names swapped, each for one of its own kind, "A" mended to "An".
        assert_eq!(
            p.rewrite("A green car, forlorn in the rain.", 6).as_deref(),
            Some("An orange boat, forlorn in the snow.")
        );
        // A binding the picture does not show: both words are its own, the colour is not
        // the car's ("blue car" where the car is red and the boat blue).
        let q = PseudoPairs::new(
            refs(&[
                &["a red car and a blue boat"],
                &["a green car in the snow"],
                &["a blue boat in the fog"],
                &["a red boat in the rain"],
            ])
            .into_iter(),
        );
        assert_eq!(
            q.rewrite("The blue car sighed.", 0).as_deref(),
            Some("The red car sighed.")
        );
        // Two things where the picture shows one: no stand-in is left for the second.
        assert_eq!(p.rewrite("A red car and a blue boat.", 0), None);
        let how = |min_coverage, rewrite| ShowPairs {
            min_coverage,
            rewrite,
            fill: false,
        };
        // Through `shown_pair`: the picture sharing most (a green boat in the fog, 5) with
        // the sentence rewritten for it, unless it need not be or may not be.
        let mut rng = Rng::keyed(0, 1);
        let text = "Alas, the green boat weeps in the rain!";
        assert_eq!(
            p.shown_pair(text, how(1.0, true), &mut rng),
            Some((
                5,
                Cow::Owned("Alas, the green boat weeps in the fog!".to_string())
            ))
        );
        assert_eq!(p.shown_pair(text, how(1.0, false), &mut rng), None);
        assert_eq!(
            p.shown_pair(text, how(0.5, false), &mut rng),
            Some((5, Cow::Borrowed(text)))
        );
    }

    #[test]
    fn a_sentence_naming_nothing_takes_a_pictures_things_in_its_slots() {
        let p = PseudoPairs::new(
            refs(&[
                &["a red car in the rain"],
                &["a blue boat in the snow"],
                &["a green tree in the fog"],
                &["a red boat"],
                &["a yellow car"],
                &["a white tree"],
                &["a black bird"],
                &["an image showing a pink cat"],
                &["an image showing a grey dog"],
                &["an image showing a brown cow"],
                &["an image showing a purple fox"],
            ])
            .into_iter(),
        );
        let mut rng = Rng::keyed(0, 2);
        // Two slots ("the service", "the food cold"), two phrases ("red car", "rain"),
        // in either order; the rest kept.
        let texts: BTreeSet<String> = (0..20)
            .map(|_| {
                p.fill("The service was friendly and the food cold.", 0, &mut rng)
                    .unwrap()
            })
            .collect();
        let both = [
            "The red car was friendly and the rain.",
            "The rain was friendly and the red car.",
        ];
        assert_eq!(texts, both.iter().map(|t| t.to_string()).collect());
        // Words most pictures' captions use frame them ("image showing": 4 of 11) and are
        // no phrase; the article follows the new word.
        assert_eq!(
            p.fill("I met an elephant.", 7, &mut rng).as_deref(),
            Some("I met a pink cat.")
        );
        // No determiner, or a run that may hold its verb ("the vampire knelt like"): no slot.
        assert_eq!(p.fill("They danced wildly.", 0, &mut rng), None);
        assert_eq!(p.fill("The vampire knelt like mad", 0, &mut rng), None);
        // Through `shown_pair`: a sentence with no pair gets a picture drawn at random,
        // fully covered once filled.
        let how = ShowPairs {
            min_coverage: 1.0,
            rewrite: true,
            fill: true,
        };
        let text = "Alas, the service was slow!";
        let (picture, shown) = p.shown_pair(text, how, &mut rng).unwrap();
        assert_ne!(shown, text);
        assert_eq!(p.coverage(&shown, picture), Some(1.0));
        let how = ShowPairs { fill: false, ..how };
        assert_eq!(p.shown_pair(text, how, &mut rng), None);
    }
}
