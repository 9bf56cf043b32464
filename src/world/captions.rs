//! Factual captions generated from a scene graph, in varied phrasing: several templates,
//! object orders and synonyms, so a captioner learns the concepts rather than one sentence.

use super::lexicon::{colour_words, kind_words, size_words};
use super::scene::{Background, Column, Row, Scene, SceneObject};
use crate::rng::Rng;

/// The plain caption: canonical words, objects left to right, background last.
pub fn canonical_caption(scene: &Scene) -> String {
    let mut objects: Vec<&SceneObject> = scene.objects.iter().collect();
    objects.sort_by_key(|o| (o.column, o.row));
    let phrases: Vec<String> = objects
        .iter()
        .map(|o| {
            with_article(&format!(
                "{} {} {} {}",
                o.size.word(),
                o.colour.word(),
                o.kind.word(),
                place(o.column, o.row, 0)
            ))
        })
        .collect();
    sentence(&format!(
        "{} {}",
        join(&phrases),
        background_phrase(scene.background, 0)
    ))
}

/// Up to `n` distinct captions of `scene`, the canonical one first. Gives fewer only if the
/// phrasings run out (they do not for n ≤ 50).
pub fn captions(scene: &Scene, n: usize, rng: &mut Rng) -> Vec<String> {
    let mut out = vec![canonical_caption(scene)];
    let mut attempts = 0;
    while out.len() < n && attempts < 50 * n {
        attempts += 1;
        let c = varied_caption(scene, rng);
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out.truncate(n);
    out
}

/// One caption with randomly chosen template, order and words.
pub fn varied_caption(scene: &Scene, rng: &mut Rng) -> String {
    let mut objects = scene.objects.clone();
    rng.shuffle(&mut objects);
    let with_place = rng.chance(0.7);
    let phrases: Vec<String> = objects
        .iter()
        .map(|o| object_phrase(o, with_place, rng))
        .collect();
    let objs = join(&phrases);
    let bg = background_phrase(scene.background, rng.below(3));
    let text = match rng.below(7) {
        0 => format!("{objs} {bg}"),
        1 => format!("{bg}, {objs}"),
        2 => format!("there is {objs} {bg}"),
        3 => format!("a picture of {objs} {bg}"),
        4 => format!("an image showing {objs} {bg}"),
        5 => format!("{bg} we see {objs}"),
        _ => format!("{objs}, {bg}"),
    };
    sentence(&text)
}

fn object_phrase(o: &SceneObject, with_place: bool, rng: &mut Rng) -> String {
    let colour = synonym(colour_words(o.colour), rng);
    let kind = synonym(kind_words(o.kind), rng);
    let size = if rng.chance(0.6) {
        format!("{} ", synonym(size_words(o.size), rng))
    } else {
        String::new()
    };
    let mut phrase = with_article(&format!("{size}{colour} {kind}"));
    if with_place {
        phrase.push(' ');
        phrase.push_str(&place(o.column, o.row, rng.below(3)));
    }
    phrase
}

fn place(column: Column, row: Row, variant: usize) -> String {
    let side = match column {
        Column::Left => "on the left",
        Column::Centre => "in the middle",
        Column::Right => "on the right",
    };
    let height = match (row, variant % 3) {
        (Row::High, 0) => "high",
        (Row::High, 1) => "up",
        (Row::High, _) => "at the top",
        (Row::Low, 0) => "low",
        (Row::Low, 1) => "down",
        (Row::Low, _) => "at the bottom",
    };
    if variant % 3 == 2 {
        // "at the top left", "at the bottom middle".
        format!("{height} {}", side.rsplit(' ').next().unwrap_or(side))
    } else {
        format!("{height} {side}")
    }
}

fn background_phrase(background: Background, variant: usize) -> &'static str {
    const PHRASES: [[&str; 3]; 6] = [
        ["on a sunny day", "in daylight", "in the daytime"],
        ["at night", "in the night", "at midnight"],
        ["at dusk", "at sunset", "in the twilight"],
        ["in the rain", "on a rainy day", "in a downpour"],
        ["in the fog", "on a foggy day", "in the mist"],
        ["in the snow", "on a snowy day", "in falling snow"],
    ];
    PHRASES[background.index()][variant % 3]
}

/// The plain word (the first) half the time, any of the words otherwise.
pub fn synonym(words: &'static [&'static str], rng: &mut Rng) -> &'static str {
    if rng.chance(0.5) {
        words[0]
    } else {
        words[rng.below(words.len())]
    }
}

/// "a", "a and b", "a, b and c".
pub fn join(phrases: &[String]) -> String {
    match phrases {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// "a" or "an" by the sound of the next word (by its first letter, which is right for every
/// word the world uses).
pub fn with_article(phrase: &str) -> String {
    let vowel = phrase
        .chars()
        .next()
        .is_some_and(|c| "aeiou".contains(c.to_ascii_lowercase()));
    format!("{} {phrase}", if vowel { "an" } else { "a" })
}

/// Capitalises the first letter and ends with a full stop.
pub fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    out.extend(chars);
    out.push('.');
    out
}
