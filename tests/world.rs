//! The built-in scene world and styles: determinism, the content checker, the compositional
//! split, and style corpora without shortcuts.

mod common;

use std::collections::HashSet;

use common::scratch;
use stylecap::data::probe::{length_punctuation_probe, marker_words};
use stylecap::data::synth::{synth, SynthConfig};
use stylecap::rng::Rng;
use stylecap::world::captions::{canonical_caption, captions};
use stylecap::world::checker::{check, claimed_facts, Fact};
use stylecap::world::scene::{Column, Row, SceneObject, Size};
use stylecap::world::styles::{self, builtin_corpora, builtin_styles};
use stylecap::world::{Background, Colour, Kind, Lexicon, Scene, Split, World, WorldConfig};

fn small_config(seed: u64) -> SynthConfig {
    SynthConfig {
        world: WorldConfig {
            seed,
            ..WorldConfig::default()
        },
        train: 40,
        val: 8,
        test: 8,
        compositional: 8,
        style_texts: 300,
    }
}

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_seed_gives_byte_identical_datasets() {
    let (a, b, c) = (
        scratch("world", "seed-a"),
        scratch("world", "seed-b"),
        scratch("world", "seed-c"),
    );
    synth(&a, &small_config(3), false).unwrap();
    synth(&b, &small_config(3), false).unwrap();
    synth(&c, &small_config(4), false).unwrap();
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    // 64 images, 4 manifests, styles, contact sheet, dataset.json.
    assert_eq!(fa.len(), 64 + 4 + 3);
    assert_eq!(fa, fb, "same seed, different bytes");
    let image = |f: &[(String, Vec<u8>)]| {
        f.iter()
            .find(|(n, _)| n.ends_with("train-000000.png"))
            .unwrap()
            .1
            .clone()
    };
    assert_ne!(
        image(&fa),
        image(&fc),
        "another seed should give another picture"
    );
    let manifest = |f: &[(String, Vec<u8>)]| {
        f.iter()
            .find(|(n, _)| n == "train.jsonl")
            .unwrap()
            .1
            .clone()
    };
    assert_ne!(manifest(&fa), manifest(&fc));
    // Rerunning on a complete dataset is a no-op; another config there is refused.
    synth(&a, &small_config(3), false).unwrap();
    let err = synth(&a, &small_config(5), false).unwrap_err().to_string();
    assert!(err.contains("another configuration"), "{err}");
}

#[test]
fn examples_are_independent_of_generation_order() {
    let world = World::new(WorldConfig::default());
    let late = world.example(Split::Train, 17);
    for i in 0..17 {
        world.example(Split::Train, i);
    }
    let again = world.example(Split::Train, 17);
    assert_eq!(late.image.as_raw(), again.image.as_raw());
    assert_eq!(late.captions, again.captions);
    assert_eq!(late.scene, again.scene);
}

fn object(kind: Kind, colour: Colour) -> SceneObject {
    SceneObject {
        kind,
        colour,
        size: Size::Large,
        column: Column::Left,
        row: Row::Low,
    }
}

fn red_car_and_white_moon_at_night() -> Scene {
    Scene {
        background: Background::Night,
        objects: vec![
            object(Kind::Car, Colour::Red),
            object(Kind::Moon, Colour::White),
        ],
    }
}

#[test]
fn checker_scores_correct_wrong_and_synonyms() {
    let lex = Lexicon::new();
    let scene = red_car_and_white_moon_at_night();
    let right = check(&lex, "A red car and a white moon at night.", &scene);
    assert_eq!(right.f1, 1.0, "{right:?}");
    assert!(right.wrong.is_empty() && right.missed.is_empty());

    let synonyms = check(
        &lex,
        "The crimson automobile slept beneath an ivory crescent; midnight held its breath.",
        &scene,
    );
    assert_eq!(synonyms.f1, 1.0, "synonyms must count: {synonyms:?}");

    let wrong_colour = check(&lex, "A blue car and a white moon at night.", &scene);
    assert!(wrong_colour.f1 < 1.0);
    assert_eq!(
        wrong_colour.wrong,
        vec![Fact::Coloured(Colour::Blue, Kind::Car)]
    );
    assert_eq!(
        wrong_colour.missed,
        vec![Fact::Coloured(Colour::Red, Kind::Car)]
    );

    let missing = check(&lex, "A red car at night.", &scene);
    assert!(
        missing.recall < 1.0 && missing.precision == 1.0,
        "{missing:?}"
    );
    let invented = check(&lex, "A red car, a white moon and a cat at night.", &scene);
    assert!(
        invented.precision < 1.0 && invented.recall == 1.0,
        "{invented:?}"
    );
    assert_eq!(invented.wrong, vec![Fact::Kind(Kind::Cat)]);
    assert_eq!(check(&lex, "Nothing to see here.", &scene).f1, 0.0);

    // Colour after its object, plurals, two-word names, and a colour that names nothing.
    let facts = claimed_facts(
        &lex,
        "Two cars, scarlet as sin, under golden light by a street lamp.",
    );
    assert!(
        facts.contains(&Fact::Coloured(Colour::Red, Kind::Car)),
        "{facts:?}"
    );
    assert!(facts.contains(&Fact::Kind(Kind::LampPost)));
    assert!(
        !facts
            .iter()
            .any(|f| matches!(f, Fact::Coloured(Colour::Yellow, _))),
        "{facts:?}"
    );
}

#[test]
fn every_generated_caption_is_fully_correct() {
    let lex = Lexicon::new();
    let world = World::new(WorldConfig::default());
    let mut distinct = 0;
    for i in 0..300 {
        let scene = world.scene(Split::Train, i);
        let mut rng = Rng::new(i);
        let caps = captions(&scene, 5, &mut rng);
        assert_eq!(caps[0], canonical_caption(&scene));
        distinct += caps.iter().collect::<HashSet<_>>().len();
        for c in &caps {
            let verdict = check(&lex, c, &scene);
            assert_eq!(verdict.f1, 1.0, "{c:?} on {scene:?}: {verdict:?}");
        }
    }
    assert_eq!(distinct, 300 * 5, "5 distinct captions per image");
}

#[test]
fn compositional_split_shares_no_object_colour_pair_with_train() {
    let world = World::new(WorldConfig::default());
    let pairs = |split: Split, n: u64| -> HashSet<(Kind, Colour)> {
        (0..n)
            .flat_map(|i| world.scene(split, i).objects)
            .map(|o| (o.kind, o.colour))
            .collect()
    };
    let train = pairs(Split::Train, 3000);
    let comp = pairs(Split::Compositional, 500);
    assert!(train.is_disjoint(&comp));
    let held: HashSet<(Kind, Colour)> = world.held_out_pairs().iter().copied().collect();
    assert_eq!(
        comp, held,
        "the compositional split uses exactly the held-out pairs"
    );
    // Every kind and every colour is still seen in training, just not in these pairs.
    for &k in Kind::ALL {
        assert!(train.iter().any(|p| p.0 == k), "{k} never in train");
    }
    for &c in Colour::ALL {
        assert!(train.iter().any(|p| p.1 == c), "{c} never in train");
    }
    // The world covers the minimum variety.
    assert!(Kind::ALL.len() >= 12 && Colour::ALL.len() >= 8 && Background::ALL.len() >= 6);
}

#[test]
fn style_corpora_are_large_distinct_and_have_no_shortcuts() {
    let names = builtin_styles();
    assert!(names.len() >= 6 && names.contains(&"factual"));
    let n = 5000;
    let corpora = builtin_corpora(n, 0);
    let lex = Lexicon::new();
    let mut pairs = Vec::new();
    for (style, corpus) in names.iter().zip(&corpora) {
        assert_eq!(corpus.len(), n, "{style}");
        assert_eq!(
            corpus.iter().collect::<HashSet<_>>().len(),
            n,
            "{style} repeats"
        );
        let words = styles::builtin(style).unwrap();
        let vocabulary = words.vocabulary();
        assert!(
            vocabulary.len() >= 250,
            "{style}: {} words",
            vocabulary.len()
        );
        // Style words never name a world concept: only the deliberate mentions do.
        for w in &vocabulary {
            assert!(
                lex.mentions(w).is_empty(),
                "{style} word {w:?} names a world concept"
            );
        }
        let mentioning = corpus
            .iter()
            .filter(|t| !lex.mentions(t).is_empty())
            .count();
        let share = mentioning as f32 / n as f32;
        assert!(
            (0.1..0.3).contains(&share),
            "{style}: {share} mention the world"
        );
        pairs.extend(corpus.iter().map(|t| (t.as_str(), *style)));
    }
    // Interleave so the probe's held-out fifth covers every style.
    pairs.sort_by_key(|(t, _)| *t);
    let probe = length_punctuation_probe(&pairs);
    assert!(
        probe.accuracy < probe.chance + 0.06,
        "length and punctuation give the style away: {probe:?}"
    );
    for m in marker_words(&pairs) {
        assert!(m.coverage < 0.1, "{m:?}");
    }
}
