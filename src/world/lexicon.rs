//! The world's concepts and the words that name them, so that content can be checked in
//! styled text: "a crimson automobile" still names a red car.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::scene::{Background, Colour, Kind, Size};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concept {
    Kind(Kind),
    Colour(Colour),
    Background(Background),
}

/// Synonyms of each object kind; the first is the plain word.
pub fn kind_words(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::House => &["house", "cottage", "cabin", "home", "hut"],
        Kind::Tree => &["tree", "oak", "pine", "elm"],
        Kind::Car => &["car", "automobile", "sedan", "auto", "motorcar"],
        Kind::Boat => &["boat", "ship", "sailboat", "vessel", "yacht"],
        Kind::Moon => &["moon", "crescent"],
        Kind::Sun => &["sun"],
        Kind::LampPost => &[
            "lamp post",
            "lamppost",
            "street lamp",
            "streetlight",
            "lamp",
        ],
        Kind::Tower => &["tower", "spire", "steeple", "turret"],
        Kind::Bird => &["bird", "sparrow", "songbird", "finch"],
        Kind::Cat => &["cat", "kitten", "kitty", "feline"],
        Kind::Mountain => &["mountain", "peak", "summit"],
        Kind::Flower => &["flower", "blossom", "bloom", "daisy"],
    }
}

pub fn colour_words(colour: Colour) -> &'static [&'static str] {
    match colour {
        Colour::Red => &["red", "crimson", "scarlet", "ruby"],
        Colour::Orange => &["orange", "tangerine", "amber"],
        Colour::Yellow => &["yellow", "golden", "gold", "lemon"],
        Colour::Green => &["green", "emerald", "jade"],
        Colour::Blue => &["blue", "azure", "cobalt", "navy"],
        Colour::Purple => &["purple", "violet", "lilac", "plum"],
        Colour::Pink => &["pink", "rosy", "fuchsia"],
        Colour::Brown => &["brown", "chestnut", "tan", "umber"],
        Colour::White => &["white", "ivory", "alabaster", "milky"],
        Colour::Black => &["black", "ebony", "inky", "jet"],
        Colour::Grey => &["grey", "gray", "silver", "ashen", "slate"],
    }
}

pub fn background_words(background: Background) -> &'static [&'static str] {
    match background {
        // Not plain "day": "a snowy day" is about snow.
        Background::Day => &["daytime", "daylight", "sunny", "afternoon", "noon"],
        Background::Night => &["night", "nighttime", "midnight"],
        Background::Dusk => &["dusk", "twilight", "sunset", "evening", "sundown"],
        Background::Rain => &[
            "rain", "rainy", "raining", "downpour", "drizzle", "rainfall",
        ],
        Background::Fog => &["fog", "foggy", "mist", "misty", "haze", "hazy"],
        Background::Snow => &["snow", "snowy", "snowing", "snowfall", "blizzard"],
    }
}

/// Words for sizes in factual captions (not concepts the checker scores).
pub fn size_words(size: Size) -> &'static [&'static str] {
    match size {
        Size::Small => &["small", "little", "tiny"],
        Size::Large => &["large", "big", "huge"],
    }
}

/// A concept named at a word position of a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mention {
    pub position: usize,
    pub concept: Concept,
}

/// Finds concept names in text: phrases of one or two words, longest match first, with
/// regular plurals of object words ("cars", "finches").
pub struct Lexicon {
    by_first_word: HashMap<&'static str, Vec<(Vec<&'static str>, Concept)>>,
}

impl Default for Lexicon {
    fn default() -> Self {
        Self::new()
    }
}

impl Lexicon {
    pub fn new() -> Self {
        let mut by_first_word: HashMap<&'static str, Vec<(Vec<&'static str>, Concept)>> =
            HashMap::new();
        let mut add = |phrase: &'static str, concept: Concept| {
            let words: Vec<&'static str> = phrase.split(' ').collect();
            by_first_word
                .entry(words[0])
                .or_default()
                .push((words, concept));
        };
        for &k in Kind::ALL {
            kind_words(k).iter().for_each(|w| add(w, Concept::Kind(k)));
        }
        for &c in Colour::ALL {
            colour_words(c)
                .iter()
                .for_each(|w| add(w, Concept::Colour(c)));
        }
        for &b in Background::ALL {
            background_words(b)
                .iter()
                .for_each(|w| add(w, Concept::Background(b)));
        }
        for entries in by_first_word.values_mut() {
            entries.sort_by_key(|(words, _)| std::cmp::Reverse(words.len()));
        }
        Lexicon { by_first_word }
    }

    /// Lower-cased words of `text`; everything that is not a letter separates words, so
    /// "moon's" gives "moon", "s".
    pub fn words(text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_alphabetic())
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase())
            .collect()
    }

    pub fn mentions(&self, text: &str) -> Vec<Mention> {
        let words = Self::words(text);
        let mut found = Vec::new();
        let mut i = 0;
        while i < words.len() {
            match self.match_at(&words, i) {
                Some((len, concept)) => {
                    found.push(Mention {
                        position: i,
                        concept,
                    });
                    i += len;
                }
                None => i += 1,
            }
        }
        found
    }

    fn match_at(&self, words: &[String], i: usize) -> Option<(usize, Concept)> {
        let w = words[i].as_str();
        if let Some(entries) = self.by_first_word.get(w) {
            // Entries are sorted longest first, so "lamp post" wins over "lamp".
            for (phrase, concept) in entries {
                let n = phrase.len();
                if i + n > words.len() {
                    continue;
                }
                let rest_ok = (1..n).all(|j| {
                    let word = words[i + j].as_str();
                    word == phrase[j]
                        || (j + 1 == n && is_kind(concept) && singular(word) == Some(phrase[j]))
                });
                if rest_ok {
                    return Some((n, *concept));
                }
            }
        }
        // Only object words take plurals ("suns"), not colours or weather ("rains").
        let s = singular(w)?;
        self.by_first_word
            .get(s)?
            .iter()
            .find(|(phrase, concept)| phrase.len() == 1 && is_kind(concept))
            .map(|(_, concept)| (1, *concept))
    }
}

fn is_kind(concept: &Concept) -> bool {
    matches!(concept, Concept::Kind(_))
}

/// The singular of a regular plural ("cars" → "car", "finches" → "finch"); None when `w` does not
/// end in s.
fn singular(w: &str) -> Option<&str> {
    let stem = w.strip_suffix('s')?;
    Some(
        stem.strip_suffix('e')
            .filter(|s| s.ends_with('h'))
            .unwrap_or(stem),
    )
}
