//! The content checker: which concepts of a scene a caption names correctly, which wrongly,
//! which it misses; content fidelity is the F1 of the named concepts against the scene graph.
//!
//! Concepts are the object kinds, each kind with its colour, and the background. A colour word
//! belongs to the nearest object word after it within a few words ("a crimson old automobile"),
//! else to the nearest one before it ("the car, scarlet as sin"); a colour that belongs to no
//! object ("golden light") claims nothing and is not scored.

use std::collections::BTreeSet;

use serde::Serialize;

use super::lexicon::{Concept, Lexicon, Mention};
use super::scene::{Background, Colour, Kind, Scene};

/// How many words may separate a colour from the object word it describes.
const COLOUR_REACH: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    Kind(Kind),
    Coloured(Colour, Kind),
    Background(Background),
}

impl std::fmt::Display for Fact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fact::Kind(k) => write!(f, "{k}"),
            Fact::Coloured(c, k) => write!(f, "{c} {k}"),
            Fact::Background(b) => write!(f, "{b} (background)"),
        }
    }
}

/// The facts a scene makes true.
pub fn scene_facts(scene: &Scene) -> BTreeSet<Fact> {
    let mut facts = BTreeSet::from([Fact::Background(scene.background)]);
    for o in &scene.objects {
        facts.insert(Fact::Kind(o.kind));
        facts.insert(Fact::Coloured(o.colour, o.kind));
    }
    facts
}

/// The facts a caption claims.
pub fn claimed_facts(lexicon: &Lexicon, caption: &str) -> BTreeSet<Fact> {
    let mentions = lexicon.mentions(caption);
    let mut facts = BTreeSet::new();
    for (i, m) in mentions.iter().enumerate() {
        match m.concept {
            Concept::Kind(k) => {
                facts.insert(Fact::Kind(k));
            }
            Concept::Background(b) => {
                facts.insert(Fact::Background(b));
            }
            Concept::Colour(c) => {
                let near = |other: &&Mention| other.position.abs_diff(m.position) <= COLOUR_REACH;
                // Look past other colours ("a blue and white car") but not past the weather.
                let after = mentions[i + 1..]
                    .iter()
                    .take_while(|o| !matches!(o.concept, Concept::Background(_)))
                    .find(|o| matches!(o.concept, Concept::Kind(_)))
                    .filter(|o| near(o));
                let before = || {
                    mentions[..i]
                        .iter()
                        .rev()
                        .find(|o| !matches!(o.concept, Concept::Colour(_)))
                        .filter(|o| near(o) && matches!(o.concept, Concept::Kind(_)))
                };
                if let Some(Concept::Kind(k)) = after.or_else(before).map(|o| o.concept) {
                    facts.insert(Fact::Coloured(c, k));
                }
            }
        }
    }
    facts
}

/// The checker's verdict on one caption.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ContentCheck {
    pub correct: Vec<Fact>,
    pub wrong: Vec<Fact>,
    pub missed: Vec<Fact>,
    pub precision: f32,
    pub recall: f32,
    pub f1: f32,
}

pub fn check(lexicon: &Lexicon, caption: &str, scene: &Scene) -> ContentCheck {
    let truth = scene_facts(scene);
    let claimed = claimed_facts(lexicon, caption);
    let correct: Vec<Fact> = claimed.intersection(&truth).copied().collect();
    let wrong: Vec<Fact> = claimed.difference(&truth).copied().collect();
    let missed: Vec<Fact> = truth.difference(&claimed).copied().collect();
    let precision = if claimed.is_empty() {
        0.0
    } else {
        correct.len() as f32 / claimed.len() as f32
    };
    let recall = correct.len() as f32 / truth.len() as f32;
    let f1 = if correct.is_empty() {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    ContentCheck {
        correct,
        wrong,
        missed,
        precision,
        recall,
        f1,
    }
}

/// Content fidelity of a caption: the F1 of its claims against the scene.
pub fn content_fidelity(lexicon: &Lexicon, caption: &str, scene: &Scene) -> f32 {
    check(lexicon, caption, scene).f1
}
