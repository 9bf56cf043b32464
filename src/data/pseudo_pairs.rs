//! Concept-based pseudo-pairs (Feng et al. 2019, "Unsupervised Image Captioning"): a style
//! sentence that never described a picture is shown with a training picture whose reference
//! captions name the same things, so a decoder trained on unpaired style text still learns
//! to take what it names from the picture. The concepts are the content words of the
//! references; a sentence is paired with the picture that shares the most of its words,
//! weighted by how rare each word is among the pictures (idf).

use std::collections::{BTreeMap, BTreeSet};

use super::text_metrics::content_words;
use crate::rng::Rng;

/// The training pictures' concepts, indexed by word.
pub struct PseudoPairs {
    /// Pictures (indices into the training source) whose references use each word, and the
    /// word's idf; words in more than half the pictures say nothing about one and are left
    /// out.
    postings: BTreeMap<String, (Vec<u32>, f32)>,
    pictures: usize,
}

impl PseudoPairs {
    /// The index of `references[i]`, the reference captions of training picture `i`.
    pub fn new(references: impl Iterator<Item = Vec<String>>) -> Self {
        let mut postings: BTreeMap<String, (Vec<u32>, f32)> = BTreeMap::new();
        let mut pictures = 0;
        for (i, refs) in references.enumerate() {
            pictures += 1;
            let words: BTreeSet<String> = refs.iter().flat_map(|r| content_words(r)).collect();
            for w in words {
                postings.entry(w).or_default().0.push(i as u32);
            }
        }
        postings.retain(|_, (ids, idf)| {
            *idf = (pictures as f32 / ids.len() as f32).ln();
            ids.len() * 2 <= pictures
        });
        PseudoPairs { postings, pictures }
    }

    /// Whether `text` names anything the pictures' references name.
    pub fn pairs(&self, text: &str) -> bool {
        content_words(text)
            .iter()
            .any(|w| self.postings.contains_key(w))
    }

    /// The picture for `text`: of those sharing the greatest idf-weighted sum of its words
    /// with their references, one drawn by `rng`. None when it names nothing they name.
    pub fn picture_for(&self, text: &str, rng: &mut Rng) -> Option<usize> {
        let mut scores = vec![0f32; self.pictures];
        let mut any = false;
        for w in content_words(text) {
            if let Some((ids, idf)) = self.postings.get(&w) {
                any = true;
                for &i in ids {
                    scores[i as usize] += idf;
                }
            }
        }
        if !any {
            return None;
        }
        let best = scores.iter().copied().fold(0f32, f32::max);
        let ties: Vec<usize> = (0..self.pictures).filter(|&i| scores[i] == best).collect();
        Some(*rng.pick(&ties))
    }
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
        ]);
        let p = PseudoPairs::new(pictures.into_iter());
        let mut rng = Rng::keyed(0, 1);
        // "crimson" and "car" only in picture 0.
        assert_eq!(
            p.picture_for("The crimson car wept alone.", &mut rng),
            Some(0)
        );
        // "boat" (1 of 5 pictures) outweighs "road" (3 of 5: in more than half, so unused).
        assert_eq!(
            p.picture_for("A boat upon the road, how dreary!", &mut rng),
            Some(1)
        );
        // "cat" is in two pictures, "sofa" in one: both words pick picture 3.
        assert_eq!(
            p.picture_for("Thy cat doth sleep upon the sofa", &mut rng),
            Some(3)
        );
        // Ties are drawn among the best: "cat" alone is pictures 3 or 4.
        let drawn: BTreeSet<Option<usize>> = (0..40)
            .map(|_| p.picture_for("What a cat!", &mut rng))
            .collect();
        assert_eq!(drawn, [Some(3), Some(4)].into_iter().collect());
        assert!(!p.pairs("Thou art a villain."));
        assert_eq!(p.picture_for("Thou art a villain.", &mut rng), None);
        assert!(p.pairs("The road, the dog."));
    }
}
