//! The built-in styles: a corpus per style from a grammar and a large vocabulary, learned by
//! the captioner from unpaired text (as in the seed system).

pub mod grammar;
pub mod vocab;

pub use grammar::{LengthProfile, StyleWords};

/// The built-in style names, `factual` last.
pub fn builtin_styles() -> Vec<&'static str> {
    vocab::VOCABULARIES.iter().map(|v| v.style).collect()
}

pub fn builtin(style: &str) -> Option<StyleWords> {
    vocab::VOCABULARIES
        .iter()
        .find(|v| v.style == style)
        .map(StyleWords::new)
}

/// Share of sentences that mention the scene world.
pub const WORLD_RATE: f32 = 0.2;

/// The built-in corpora, `n` sentences per style, in the order of `builtin_styles`.
pub fn builtin_corpora(n: usize, seed: u64) -> Vec<Vec<String>> {
    use rayon::prelude::*;
    let styles: Vec<StyleWords> = vocab::VOCABULARIES.iter().map(StyleWords::new).collect();
    let lengths = LengthProfile::pooled(&styles, seed);
    styles
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let style_seed = seed.wrapping_mul(31).wrapping_add(i as u64 + 1);
            s.corpus(n, style_seed, WORLD_RATE, &lengths)
        })
        .collect()
}
