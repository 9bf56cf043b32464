//! Sentences of a style from its vocabulary. All styles share the skeletons below, picked
//! uniformly, so sentence length and punctuation say nothing about the style; only the words do.

use std::collections::HashSet;

use super::vocab::Vocabulary;
use crate::data::rng::Rng;
use crate::data::world::captions::sentence;
use crate::data::world::lexicon::{colour_words, kind_words};
use crate::data::world::{Colour, Kind};

/// Slots: {n} noun, {a} adjective, {v} intransitive verb, {t} transitive verb, {p} place phrase,
/// {m} time phrase, {r} adverb.
const SKELETONS: &[&str] = &[
    "the {a} {n} {v} {p}",
    "{m}, the {n} {v} {r}",
    "the {n} {t} the {a} {n} {p}",
    "somewhere {p}, a {a} {n} {v}",
    "the {n} was as {a} as a {n}",
    "who {t} the {a} {n} {m}?",
    "what a {a} {n} it was!",
    "the {n} and the {n} {v} {m}",
    "nobody {t} the {n}; the {n} {v} {r}",
    "{a}, {a} and {a}, the {n} {v} {p}",
    "I {t} the {a} {n} {m}, and it {v} {r}",
    "it was the {n} that {v} {p}",
    "every {n} {v} {p} {m}",
    "the {n} {v} like a {a} {n}",
    "{r}, the {a} {n} {t} a {n}",
    "there was a {n} {p}, and nobody {t} it",
    "oh, the {a} {n} {t} the {n} again!",
    "the {n}, {a} and {a}, {v} {m}",
];

const PREPOSITIONS: &[&str] = &[
    "in", "near", "behind", "under", "beyond", "outside", "inside", "across", "above", "beside",
];

/// The words of one style, split out of its vocabulary lists.
pub struct StyleWords {
    pub style: &'static str,
    nouns: Vec<String>,
    adjectives: Vec<String>,
    verbs: Vec<String>,
    transitive: Vec<String>,
    places: Vec<String>,
    times: Vec<String>,
    adverbs: Vec<String>,
}

fn words(list: &str) -> Vec<String> {
    list.split_whitespace()
        .map(|w| w.replace('_', " "))
        .collect()
}

impl StyleWords {
    pub fn new(v: &Vocabulary) -> Self {
        StyleWords {
            style: v.style,
            nouns: words(v.nouns),
            adjectives: words(v.adjectives),
            verbs: words(v.verbs),
            transitive: words(v.transitive),
            places: words(v.places),
            times: v
                .times
                .split('|')
                .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect(),
            adverbs: words(v.adverbs),
        }
    }

    /// Every distinct word the style uses (for vocabulary-size and marker checks).
    pub fn vocabulary(&self) -> HashSet<&str> {
        [
            &self.nouns,
            &self.adjectives,
            &self.verbs,
            &self.transitive,
            &self.places,
            &self.times,
            &self.adverbs,
        ]
        .into_iter()
        .flatten()
        .flat_map(|e| e.split(' '))
        .collect()
    }

    /// One sentence on a random skeleton. With probability `world_rate` its nouns and places
    /// name things of the scene world ("the crimson automobile", "in the fog"): one for sure,
    /// each other one half the time.
    pub fn sentence(&self, rng: &mut Rng, world_rate: f32) -> String {
        let skeleton = rng.below(SKELETONS.len());
        let world = rng.chance(world_rate);
        self.fill(skeleton, world, rng)
    }

    fn fill(&self, skeleton: usize, mention_world: bool, rng: &mut Rng) -> String {
        let skeleton = SKELETONS[skeleton];
        // The world may take any noun or place slot.
        let open: Vec<usize> = skeleton
            .split('{')
            .skip(1)
            .enumerate()
            .filter(|(_, s)| s.starts_with("n}") || s.starts_with("p}"))
            .map(|(i, _)| i)
            .collect();
        let world_slot = *rng.pick(&open);
        let mut out = String::new();
        let mut rest = skeleton;
        let mut slot = 0;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = start + rest[start..].find('}').expect("closed slot");
            let name = &rest[start + 1..end];
            // A sentence about the world names one thing for sure and, half the time, more:
            // styled descriptions of whole pictures exist in the corpus, not only asides.
            let world = mention_world
                && matches!(name, "n" | "p")
                && (slot == world_slot || rng.chance(0.5));
            out.push_str(&match (name, world) {
                ("n", true) => world_thing(rng),
                ("p", true) => format!("in the {}", rng.pick(background_nouns())),
                ("n", _) => rng.pick(&self.nouns).clone(),
                ("a", _) => rng.pick(&self.adjectives).clone(),
                ("v", _) => rng.pick(&self.verbs).clone(),
                ("t", _) => rng.pick(&self.transitive).clone(),
                ("p", _) => format!("{} the {}", rng.pick(PREPOSITIONS), rng.pick(&self.places)),
                ("m", _) => rng.pick(&self.times).clone(),
                ("r", _) => rng.pick(&self.adverbs).clone(),
                _ => unreachable!("unknown slot {name}"),
            });
            rest = &rest[end + 1..];
            slot += 1;
        }
        out.push_str(rest);
        let text = fix_articles(&out);
        // Questions and exclamations end in their own mark.
        if text.ends_with('?') || text.ends_with('!') {
            let mut s = sentence(&text);
            s.pop();
            s
        } else {
            sentence(&text)
        }
    }

    /// `n` distinct sentences whose lengths follow `lengths` (fewer only if the grammar runs
    /// out, which the built-in vocabularies do not below tens of thousands).
    ///
    /// Styles differ in how long their words are ("sepulchral" against "shop"), so a sentence
    /// is chosen among a few fillings of its skeleton as the one closest to a length drawn
    /// from the distribution pooled over all styles: every style then has the same length
    /// distribution, and length tells nothing about the style.
    pub fn corpus(
        &self,
        n: usize,
        seed: u64,
        world_rate: f32,
        lengths: &LengthProfile,
    ) -> Vec<String> {
        let mut rng = Rng::new(seed);
        let mut seen = HashSet::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        let mut attempts = 0;
        while out.len() < n && attempts < 20 * n {
            attempts += 1;
            let skeleton = rng.below(SKELETONS.len());
            let world = rng.chance(world_rate);
            let target = *rng.pick(&lengths.pooled[skeleton]) as i64;
            let s = (0..CANDIDATES)
                .map(|_| self.fill(skeleton, world, &mut rng))
                .min_by_key(|c| (c.chars().count() as i64 - target).abs())
                .expect("at least one candidate");
            if seen.insert(s.clone()) {
                out.push(s);
            }
        }
        out
    }
}

/// Fillings tried per sentence when matching lengths.
const CANDIDATES: usize = 12;

/// Sentence lengths (characters) per skeleton, pooled over styles.
pub struct LengthProfile {
    pooled: Vec<Vec<usize>>,
}

impl LengthProfile {
    pub fn pooled(styles: &[StyleWords], seed: u64, world_rate: f32) -> Self {
        let mut rng = Rng::new(seed ^ 0x1e47);
        let pooled = (0..SKELETONS.len())
            .map(|k| {
                (0..400)
                    .map(|_| {
                        let style = &styles[rng.below(styles.len())];
                        let world = rng.chance(world_rate);
                        style.fill(k, world, &mut rng).chars().count()
                    })
                    .collect()
            })
            .collect();
        LengthProfile { pooled }
    }
}

fn world_thing(rng: &mut Rng) -> String {
    let kind = *rng.pick(Kind::ALL);
    let kind = *rng.pick(kind_words(kind));
    if rng.chance(0.6) {
        let colour = *rng.pick(Colour::ALL);
        format!("{} {kind}", rng.pick(colour_words(colour)))
    } else {
        kind.to_string()
    }
}

fn background_nouns() -> &'static [&'static str] {
    &[
        "fog", "mist", "rain", "snow", "drizzle", "twilight", "dusk", "night", "snowfall", "haze",
    ]
}

/// "a" before a vowel becomes "an".
fn fix_articles(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let next_vowel = words
            .get(i + 1)
            .and_then(|n| n.chars().next())
            .is_some_and(|c| "aeiouAEIOU".contains(c));
        out.push(match *w {
            "a" if next_vowel => "an",
            w => w,
        });
    }
    out.join(" ")
}
