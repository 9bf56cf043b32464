//! Sentences of a style from its vocabulary. All styles share the skeletons below, picked
//! uniformly, so sentence length and punctuation say nothing about the style; only the words do.

use std::collections::HashSet;

use super::vocab::Vocabulary;
use crate::rng::{streams, Rng};
use crate::world::captions::{join, sentence, synonym};
use crate::world::lexicon::{colour_words, kind_words};
use crate::world::scene::MAX_OBJECTS;
use crate::world::{Background, Scene};

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

/// Skeletons of a description of a whole picture of the world in the style's words: {S} every
/// object with its colour, {B} the light or weather. Styled descriptions of pictures exist in
/// real style corpora too; here they name every fact of a scene, so a captioner that learns
/// them can be styled and faithful at once, and alignment has that to build on.
const SCENE_SKELETONS: &[&str] = &[
    "{B}, {S} {v} {r}",
    "{S} {v} {B}, {a} and {a}",
    "{B}, {S} {v} like a {a} {n}",
    "{r}, {S} {v} {B}",
    "I {t} {S} {B}, and nobody {v}",
    "{m}, {S} {v} {B}",
    "{S} {v} {p} {B}",
    "oh, {S} {B}, how {a}!",
    "{B} there was {S}, and the {n} {v} {r}",
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

    /// Fills a skeleton; `{S}` and `{B}` name the objects (each with its colour) and the
    /// background of `scene`.
    fn fill(&self, shape: Shape, scene: Option<&Scene>, rng: &mut Rng) -> String {
        let skeleton = match shape {
            Shape::Plain(k) => SKELETONS[k],
            Shape::Scene(k) => SCENE_SKELETONS[k],
        };
        let mut out = String::new();
        let mut rest = skeleton;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = start + rest[start..].find('}').expect("closed slot");
            let name = &rest[start + 1..end];
            out.push_str(&match name {
                "n" => rng.pick(&self.nouns).clone(),
                "a" => rng.pick(&self.adjectives).clone(),
                "v" => rng.pick(&self.verbs).clone(),
                "t" => rng.pick(&self.transitive).clone(),
                "p" => format!("{} the {}", rng.pick(PREPOSITIONS), rng.pick(&self.places)),
                "m" => rng.pick(&self.times).clone(),
                "r" => rng.pick(&self.adverbs).clone(),
                "S" => self.objects_phrase(scene.expect("a scene skeleton has a scene"), rng),
                "B" => rng
                    .pick(background_phrases(scene.expect("scene").background))
                    .to_string(),
                _ => unreachable!("unknown slot {name}"),
            });
            rest = &rest[end + 1..];
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

    /// Every object of the scene, left to right as in the plain captions (one consistent
    /// order is learnt much faster than any order), each with its colour and, half the time,
    /// one of the style's adjectives: "the sullen crimson automobile and an ashen moon".
    fn objects_phrase(&self, scene: &Scene, rng: &mut Rng) -> String {
        let mut objects = scene.objects.clone();
        objects.sort_by_key(|o| (o.column, o.row));
        let phrases: Vec<String> = objects
            .iter()
            .map(|o| {
                let article = if rng.chance(0.5) { "the" } else { "a" };
                let adjective = if rng.chance(0.5) {
                    format!("{} ", rng.pick(&self.adjectives))
                } else {
                    String::new()
                };
                format!(
                    "{article} {adjective}{} {}",
                    synonym(colour_words(o.colour), rng),
                    synonym(kind_words(o.kind), rng)
                )
            })
            .collect();
        join(&phrases)
    }

    /// `n` distinct sentences whose lengths follow `lengths` (fewer only if the grammar runs
    /// out, which the built-in vocabularies do not below tens of thousands).
    ///
    /// Styles differ in how long their words are ("sepulchral" against "shop"), so a sentence
    /// is chosen among a few fillings of its skeleton (and, for a picture's description, of
    /// its scene) as the one closest to a length drawn from the distribution pooled over all
    /// styles: every style then has the same length distribution, and length tells nothing
    /// about the style.
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
            let (shape, scene) = Shape::draw(&mut rng, world_rate);
            let target = *rng.pick(lengths.of(shape, scene.as_ref())) as i64;
            let s = (0..CANDIDATES)
                .map(|_| self.fill(shape, scene.as_ref(), &mut rng))
                .min_by_key(|c| (c.chars().count() as i64 - target).abs())
                .expect("at least one candidate");
            if seen.insert(s.clone()) {
                out.push(s);
            }
        }
        out
    }
}

/// Which skeleton a sentence is built on.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Plain(usize),
    Scene(usize),
}

impl Shape {
    /// With probability `world_rate` a description of a random picture of the scene world,
    /// else a sentence on a plain skeleton.
    fn draw(rng: &mut Rng, world_rate: f32) -> (Shape, Option<Scene>) {
        if rng.chance(world_rate) {
            let k = rng.below(SCENE_SKELETONS.len());
            (Shape::Scene(k), Some(Scene::sample(rng, &|_, _| true)))
        } else {
            (Shape::Plain(rng.below(SKELETONS.len())), None)
        }
    }
}

/// Fillings tried per sentence when matching lengths.
const CANDIDATES: usize = 12;

/// Sentence lengths (characters) pooled over styles: per plain skeleton, and per scene
/// skeleton and number of objects (a scene of three things makes a longer sentence).
pub struct LengthProfile {
    plain: Vec<Vec<usize>>,
    scene: Vec<[Vec<usize>; MAX_OBJECTS]>,
}

impl LengthProfile {
    pub fn pooled(styles: &[StyleWords], seed: u64) -> Self {
        let mut rng = Rng::keyed(seed, streams::KEY_STYLE_LENGTHS);
        let sample = |shape: Shape, objects: usize, rng: &mut Rng| -> Vec<usize> {
            (0..400)
                .map(|_| {
                    let style = &styles[rng.below(styles.len())];
                    let scene = loop {
                        let s = Scene::sample(rng, &|_, _| true);
                        if s.objects.len() == objects {
                            break s;
                        }
                    };
                    style.fill(shape, Some(&scene), rng).chars().count()
                })
                .collect()
        };
        let plain = (0..SKELETONS.len())
            .map(|k| sample(Shape::Plain(k), 1, &mut rng))
            .collect();
        let scene = (0..SCENE_SKELETONS.len())
            .map(|k| std::array::from_fn(|i| sample(Shape::Scene(k), i + 1, &mut rng)))
            .collect();
        LengthProfile { plain, scene }
    }

    fn of(&self, shape: Shape, scene: Option<&Scene>) -> &[usize] {
        match shape {
            Shape::Plain(k) => &self.plain[k],
            Shape::Scene(k) => &self.scene[k][scene.map_or(1, |s| s.objects.len()) - 1],
        }
    }
}

/// Ways to name a picture's light or weather; each names only its own background.
fn background_phrases(background: Background) -> &'static [&'static str] {
    match background {
        Background::Day => &[
            "in the daylight",
            "at noon",
            "in the afternoon",
            "on a sunny afternoon",
        ],
        Background::Night => &["at night", "in the night", "at midnight"],
        Background::Dusk => &["at dusk", "in the twilight", "at sunset", "in the evening"],
        Background::Rain => &["in the rain", "in the drizzle", "in the downpour"],
        Background::Fog => &["in the fog", "in the mist", "in the haze"],
        Background::Snow => &["in the snow", "in the snowfall", "in the blizzard"],
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::checker::{claimed_facts, scene_facts};
    use crate::world::styles::vocab::VOCABULARIES;
    use crate::world::Lexicon;

    /// A description of a picture claims exactly the picture's facts, in every style and on
    /// every skeleton: the checker reads it as complete and correct (F1 = 1).
    #[test]
    fn a_scene_description_names_every_fact_of_its_scene_and_nothing_else() {
        let lexicon = Lexicon::new();
        let mut rng = Rng::new(7);
        for v in VOCABULARIES {
            let words = StyleWords::new(v);
            for k in 0..SCENE_SKELETONS.len() {
                for _ in 0..40 {
                    let scene = Scene::sample(&mut rng, &|_, _| true);
                    let text = words.fill(Shape::Scene(k), Some(&scene), &mut rng);
                    assert_eq!(
                        claimed_facts(&lexicon, &text),
                        scene_facts(&scene),
                        "{}: {text:?} for {scene:?}",
                        v.style
                    );
                }
            }
        }
    }
}
