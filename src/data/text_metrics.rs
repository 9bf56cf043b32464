//! Caption metrics against references: corpus BLEU-4 and CIDEr-D, computed as the COCO
//! caption evaluation code (pycocoevalcap) computes them; a test checks both against it.

// Ordered maps throughout: the floating-point sums then run in one order, so the same
// captions give the same figures to the last bit in every process.
use std::collections::{BTreeMap, BTreeSet};

/// Lower-cased words without punctuation (what pycocoevalcap's PTB tokenizer leaves).
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

type Ngram = Vec<String>;

fn ngram_counts(words: &[String], max_n: usize) -> BTreeMap<Ngram, usize> {
    let mut counts = BTreeMap::new();
    for n in 1..=max_n {
        for w in words.windows(n) {
            *counts.entry(w.to_vec()).or_default() += 1;
        }
    }
    counts
}

/// Corpus BLEU-4: clipped n-gram precisions pooled over all candidates, geometric mean,
/// brevity penalty against the closest reference length.
pub fn bleu4(candidates: &[String], references: &[Vec<String>]) -> f64 {
    assert_eq!(candidates.len(), references.len());
    let mut correct = [0f64; 4];
    let mut guess = [0f64; 4];
    let (mut cand_len, mut ref_len) = (0f64, 0f64);
    for (cand, refs) in candidates.iter().zip(references) {
        let c = tokens(cand);
        let refs: Vec<Vec<String>> = refs.iter().map(|r| tokens(r)).collect();
        let mut max_ref: BTreeMap<Ngram, usize> = BTreeMap::new();
        for r in &refs {
            for (g, n) in ngram_counts(r, 4) {
                let m = max_ref.entry(g).or_default();
                *m = (*m).max(n);
            }
        }
        for (g, n) in ngram_counts(&c, 4) {
            correct[g.len() - 1] += n.min(max_ref.get(&g).copied().unwrap_or(0)) as f64;
        }
        for (k, g) in guess.iter_mut().enumerate() {
            *g += c.len().saturating_sub(k) as f64;
        }
        cand_len += c.len() as f64;
        // The closest reference length, the shorter on ties.
        ref_len += refs
            .iter()
            .map(|r| r.len())
            .min_by_key(|&l| ((l as i64 - c.len() as i64).abs(), l))
            .unwrap_or(0) as f64;
    }
    // pycocoevalcap's tiny/small terms keep log(0) away.
    let (tiny, small) = (1e-15, 1e-9);
    let log_precision: f64 = (0..4)
        .map(|k| ((correct[k] + tiny) / (guess[k] + small)).ln())
        .sum::<f64>()
        / 4.0;
    let ratio = (cand_len + tiny) / (ref_len + small);
    let brevity = if ratio < 1.0 {
        (1.0 - 1.0 / ratio).exp()
    } else {
        1.0
    };
    brevity * log_precision.exp()
}

struct TfIdf {
    vec: [BTreeMap<Ngram, f64>; 4],
    norm: [f64; 4],
    /// Bigram count, pycocoevalcap's length for the length penalty.
    length: f64,
}

/// CIDEr-D: TF-IDF n-gram vectors (n = 1..4, document frequencies over the references of the
/// evaluated set), clipped cosine similarity, Gaussian length penalty (σ = 6), ×10, averaged
/// over references and n. Returns the corpus score and per-caption scores.
pub fn cider_d(candidates: &[String], references: &[Vec<String>]) -> (f64, Vec<f64>) {
    assert_eq!(candidates.len(), references.len());
    let sigma = 6.0;
    let refs: Vec<Vec<BTreeMap<Ngram, usize>>> = references
        .iter()
        .map(|rs| rs.iter().map(|r| ngram_counts(&tokens(r), 4)).collect())
        .collect();
    let mut df: BTreeMap<&Ngram, f64> = BTreeMap::new();
    for rs in &refs {
        let mut seen: BTreeSet<&Ngram> = Default::default();
        for r in rs {
            seen.extend(r.keys());
        }
        for g in seen {
            *df.entry(g).or_default() += 1.0;
        }
    }
    let log_n = (references.len() as f64).ln();
    let to_vec = |counts: &BTreeMap<Ngram, usize>| -> TfIdf {
        let mut v = TfIdf {
            vec: Default::default(),
            norm: [0.0; 4],
            length: 0.0,
        };
        for (g, &tf) in counts {
            let n = g.len() - 1;
            let d = df.get(g).copied().unwrap_or(0.0).max(1.0).ln();
            let x = tf as f64 * (log_n - d);
            v.vec[n].insert(g.clone(), x);
            v.norm[n] += x * x;
            if n == 1 {
                v.length += tf as f64;
            }
        }
        v.norm = v.norm.map(f64::sqrt);
        v
    };
    let scores: Vec<f64> = candidates
        .iter()
        .zip(&refs)
        .map(|(cand, rs)| {
            let h = to_vec(&ngram_counts(&tokens(cand), 4));
            let mut total = [0f64; 4];
            for r in rs {
                let r = to_vec(r);
                let delta = h.length - r.length;
                for (n, sum) in total.iter_mut().enumerate() {
                    let mut val: f64 = h.vec[n]
                        .iter()
                        .map(|(g, &x)| {
                            let y = r.vec[n].get(g).copied().unwrap_or(0.0);
                            x.min(y) * y
                        })
                        .sum();
                    if h.norm[n] != 0.0 && r.norm[n] != 0.0 {
                        val /= h.norm[n] * r.norm[n];
                    }
                    *sum += val * (-(delta * delta) / (2.0 * sigma * sigma)).exp();
                }
            }
            total.iter().sum::<f64>() / 4.0 / rs.len().max(1) as f64 * 10.0
        })
        .collect();
    let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    (mean, scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cider_d_is_the_same_to_the_last_bit_every_time() {
        let refs: Vec<Vec<String>> = (0..12)
            .map(|i| {
                vec![
                    format!("a red car {i} beside a small green house at night"),
                    format!("the house {} is green and the car is red", i % 5),
                ]
            })
            .collect();
        let cands: Vec<String> = (0..12)
            .map(|i| format!("a green car {} near the red house in the rain", i % 3))
            .collect();
        let first = cider_d(&cands, &refs);
        for _ in 0..20 {
            let again = cider_d(&cands, &refs);
            assert_eq!(again.0.to_bits(), first.0.to_bits());
            assert!(again
                .1
                .iter()
                .zip(&first.1)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    fn s(x: &[&str]) -> Vec<String> {
        x.iter().map(|t| t.to_string()).collect()
    }

    /// Values from pycocoevalcap 1.2 (`Bleu(4)`, `Cider()`) on the same captions.
    #[test]
    fn matches_pycocoevalcap() {
        let refs = vec![
            s(&["a red car on the left at night", "a small red car at night"]),
            s(&["a blue boat in the fog", "there is a blue boat in the mist"]),
            s(&[
                "a green tree and a white house on a sunny day",
                "a tree and a house in daylight",
            ]),
        ];
        let cands = s(&[
            "a red car at night",
            "a boat in the fog",
            "a green tree and a house on a sunny day",
        ]);
        let b = bleu4(&cands, &refs);
        assert!((b - 0.728556495094309).abs() < 1e-9, "{b}");
        let (c, per) = cider_d(&cands, &refs);
        assert!((c - 4.84013058545828).abs() < 1e-9, "{c}");
        let expected = [4.99083043, 4.15170591, 5.37785541];
        for (a, e) in per.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{a} vs {e}");
        }
    }
}
