//! Splits of the world. Train, val and test draw from the same object–colour pairs; the
//! compositional split uses only pairs held out of training (a green moon, a purple cat), to
//! test whether a captioner composes concepts it has seen only apart.

use serde::{Deserialize, Serialize};

use super::scene::{Colour, Kind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    Test,
    Compositional,
}

impl Split {
    pub const ALL: [Split; 4] = [Split::Train, Split::Val, Split::Test, Split::Compositional];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
            Split::Compositional => "compositional",
        }
    }

    pub fn parse(name: &str) -> Option<Split> {
        Split::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The object–colour pairs held out of training: `per_kind` colours for each kind, chosen so
/// that every colour is held out for about as many kinds as any other (each colour is still
/// seen in training, on other objects).
pub fn held_out_pairs(seed: u64, per_kind: usize) -> Vec<(Kind, Colour)> {
    let n = Colour::ALL.len();
    assert!(
        per_kind < n,
        "at least one colour per kind must stay in training"
    );
    let offset = (seed % n as u64) as usize;
    Kind::ALL
        .iter()
        .enumerate()
        .flat_map(|(i, &k)| {
            (0..per_kind).map(move |j| (k, Colour::ALL[(offset + i * per_kind + j) % n]))
        })
        .collect()
}

/// Whether a split may use the pair.
pub fn allows(split: Split, held_out: &[(Kind, Colour)], kind: Kind, colour: Colour) -> bool {
    held_out.contains(&(kind, colour)) == (split == Split::Compositional)
}
