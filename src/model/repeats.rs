//! Decode-time limits on repetition: transformers' `repetition_penalty` and
//! `no_repeat_ngram_size`. They change which token is chosen, never the log-probabilities a
//! [`Generation`](super::Generation) reports, which stay the model's own.
//!
//! Both look at the tokens generated so far, not at the start token: transformers' history
//! for an encoder-decoder also holds the decoder's start token, which for GPT-2 is the end
//! token too, so there a penalty also holds back the end of every caption.

use burn::prelude::*;
use burn::tensor::{FloatDType, IndexingUpdateOp};
use serde::{Deserialize, Serialize};

use crate::tensor::in_f32;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Repeats {
    /// transformers' `repetition_penalty` (CTRL's): the score of every token generated before
    /// is divided by it where positive and multiplied by it where negative, once however
    /// often the token came. 1 is off.
    #[serde(rename = "repetition_penalty")]
    pub penalty: f32,
    /// transformers' `no_repeat_ngram_size`: a token that would make an n-gram of tokens
    /// that was generated before is never chosen. 0 is off.
    #[serde(rename = "no_repeat_ngram_size")]
    pub no_repeat_ngram: usize,
}

impl Default for Repeats {
    fn default() -> Self {
        Repeats {
            penalty: 1.0,
            no_repeat_ngram: 0,
        }
    }
}

impl Repeats {
    pub fn is_off(&self) -> bool {
        self.penalty == 1.0 && self.no_repeat_ngram == 0
    }

    /// Applies both limits to one row of `scores` (logits, or log-probabilities in beam
    /// search, as transformers does) after the tokens of `history`.
    pub fn apply(&self, scores: &mut [f32], history: &[u32]) {
        if self.penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                let s = &mut scores[t as usize];
                *s = penalised(*s, self.penalty);
            }
        }
        for t in banned(history, self.no_repeat_ngram) {
            scores[t as usize] = f32::NEG_INFINITY;
        }
    }
}

fn penalised(score: f32, penalty: f32) -> f32 {
    if score < 0.0 {
        score * penalty
    } else {
        score / penalty
    }
}

/// The tokens that would repeat an n-gram of `history`: those that followed an earlier
/// occurrence of its last n − 1 tokens (every token seen, for n = 1). None for n = 0.
pub fn banned(history: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || history.len() < n {
        return Vec::new();
    }
    let starts = history.len() - n + 1;
    let last = &history[starts..];
    (0..starts)
        .filter(|&j| history[j..j + n - 1] == *last)
        .map(|j| history[j + n - 1])
        .collect()
}

/// [`Repeats`] of every row of a batch, applied on the device: the host sends nothing per
/// token. The rows' histories are the picked tokens of the steps so far, `[B]` each.
pub struct DeviceRepeats {
    /// Each row's penalty `[B, 1]` and how often each token has been picked `[B, V]`.
    penalty: Option<(Tensor<2>, Tensor<2>)>,
    /// Each n-gram size asked for, and the rows that ask it `[B, 1]`.
    ngrams: Vec<(usize, Tensor<2, Bool>)>,
    /// The rows with a limit on `[B, 1]`.
    limited: Tensor<2, Bool>,
}

impl DeviceRepeats {
    /// None when every row's limits are off.
    pub fn new(rows: &[Repeats], vocab: usize, device: &Device) -> Option<Self> {
        if rows.iter().all(Repeats::is_off) {
            return None;
        }
        let batch = rows.len();
        let column = |v: Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(v, [batch]), in_f32(device)).unsqueeze_dim(1)
        };
        let penalty = rows.iter().any(|r| r.penalty != 1.0).then(|| {
            (
                column(rows.iter().map(|r| r.penalty).collect()),
                Tensor::<2>::zeros([batch, vocab], in_f32(device)),
            )
        });
        let mut sizes: Vec<usize> = rows
            .iter()
            .map(|r| r.no_repeat_ngram)
            .filter(|&n| n > 0)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        let ngrams = sizes
            .into_iter()
            .map(|n| {
                let asks = rows
                    .iter()
                    .map(|r| (r.no_repeat_ngram == n) as i32 as f32)
                    .collect();
                (n, column(asks).greater_elem(0.5))
            })
            .collect();
        let limited = column(rows.iter().map(|r| !r.is_off() as i32 as f32).collect());
        Some(DeviceRepeats {
            penalty,
            ngrams,
            limited: limited.greater_elem(0.5),
        })
    }

    /// What each row chooses from: a limited row's `logits` with its limits applied, any
    /// other row's log-probabilities `lp` as they are, so that it picks what it would in a
    /// batch without limits.
    pub fn scores(
        &self,
        logits: Tensor<2>,
        lp: Tensor<2>,
        history: &[Tensor<1, Int>],
    ) -> Tensor<2> {
        let dims = lp.dims();
        lp.mask_where(
            self.limited.clone().expand(dims),
            self.apply(logits, history),
        )
    }

    /// `logits` `[B, V]` (f32) with the limits applied after the tokens of `history`.
    pub fn apply(&self, mut logits: Tensor<2>, history: &[Tensor<1, Int>]) -> Tensor<2> {
        let dims = logits.dims();
        if let Some((penalty, counts)) = &self.penalty {
            let negative = logits.clone().lower_elem(0.0);
            let penalised = (logits.clone() / penalty.clone())
                .mask_where(negative, logits.clone() * penalty.clone());
            logits = logits.mask_where(counts.clone().greater_elem(0.0), penalised);
        }
        let len = history.len();
        for (n, asks) in &self.ngrams {
            let n = *n;
            if len < n {
                continue;
            }
            let h = Tensor::stack::<2>(history.to_vec(), 1);
            let starts = len - n + 1;
            let mut same = asks.clone().expand([dims[0], starts]);
            for k in 0..n - 1 {
                let earlier = h.clone().slice([0..dims[0], k..k + starts]);
                let last = h
                    .clone()
                    .slice([0..dims[0], len - n + 1 + k..len - n + 2 + k]);
                same = same.bool_and(earlier.equal(last.expand([dims[0], starts])));
            }
            let next = h.slice([0..dims[0], n - 1..len]);
            let hits = Tensor::<2>::zeros(dims, in_f32(&logits.device())).scatter(
                1,
                next,
                same.float().cast(FloatDType::F32),
                IndexingUpdateOp::Add,
            );
            logits = logits.mask_fill(hits.greater_elem(0.0), f32::NEG_INFINITY);
        }
        logits
    }

    /// Counts `picked` `[B]` as seen.
    pub fn record(&mut self, picked: Tensor<1, Int>) {
        if let Some((_, counts)) = &mut self.penalty {
            let [batch, _] = counts.dims();
            let ones = Tensor::<2>::ones([batch, 1], in_f32(&counts.device()));
            *counts =
                counts
                    .clone()
                    .scatter(1, picked.unsqueeze_dim(1), ones, IndexingUpdateOp::Add);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banned_tokens_follow_earlier_copies_of_the_last_n_minus_one() {
        let h = [5u32, 6, 7, 5, 6];
        assert!(banned(&h, 0).is_empty());
        let mut one = banned(&h, 1);
        one.sort_unstable();
        assert_eq!(one, [5, 5, 6, 6, 7]);
        // The last token, 6, came before once, followed by 7.
        assert_eq!(banned(&h, 2), [7]);
        // "5 6" came before, followed by 7.
        assert_eq!(banned(&h, 3), [7]);
        // "7 5 6" never came before.
        assert_eq!(banned(&h, 4).len(), 0);
        // Longer than the history: nothing to repeat.
        assert_eq!(banned(&h, 6).len(), 0);
        assert_eq!(banned(&[], 2).len(), 0);
        assert_eq!(banned(&[3, 3], 2), [3]);
    }

    #[test]
    fn the_penalty_divides_positive_scores_and_multiplies_negative_ones_once() {
        let mut row = [2.0f32, -2.0, 1.0, -1.0];
        Repeats {
            penalty: 2.0,
            no_repeat_ngram: 0,
        }
        .apply(&mut row, &[0, 1, 1, 0]);
        assert_eq!(row, [1.0, -4.0, 1.0, -1.0]);
        let mut row = [2.0f32, -2.0, 1.0, -1.0];
        Repeats {
            penalty: 1.0,
            no_repeat_ngram: 2,
        }
        .apply(&mut row, &[3, 2, 3]);
        assert_eq!(row, [2.0, -2.0, f32::NEG_INFINITY, -1.0]);
        let mut row = [2.0f32, -2.0];
        Repeats::default().apply(&mut row, &[0, 1, 0, 1]);
        assert_eq!(row, [2.0, -2.0]);
    }

    /// The device form gives the host form's scores, row by row, each row with its own
    /// limits.
    #[test]
    fn device_repeats_are_the_host_s() {
        use rand::{Rng, SeedableRng};
        let device = Device::flex();
        let (batch, vocab, steps) = (5, 9, 12);
        let rows = [
            Repeats::default(),
            Repeats {
                penalty: 1.5,
                no_repeat_ngram: 0,
            },
            Repeats {
                penalty: 1.0,
                no_repeat_ngram: 2,
            },
            Repeats {
                penalty: 3.0,
                no_repeat_ngram: 3,
            },
            Repeats {
                penalty: 1.0,
                no_repeat_ngram: 1,
            },
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let mut on_device = DeviceRepeats::new(&rows, vocab, &device).expect("limits on");
        let mut history: Vec<Vec<u32>> = vec![vec![]; batch];
        let mut picked: Vec<Tensor<1, Int>> = vec![];
        for _ in 0..steps {
            let logits: Vec<f32> = (0..batch * vocab)
                .map(|_| rng.random_range(-4.0f32..4.0))
                .collect();
            let got = crate::tensor::floats(on_device.apply(
                Tensor::from_data(TensorData::new(logits.clone(), [batch, vocab]), &device),
                &picked,
            ));
            for (b, r) in rows.iter().enumerate() {
                let mut want = logits[b * vocab..(b + 1) * vocab].to_vec();
                r.apply(&mut want, &history[b]);
                assert_eq!(&got[b * vocab..(b + 1) * vocab], &want[..], "row {b}");
            }
            // Small tokens, so that n-grams repeat.
            let next: Vec<i64> = (0..batch).map(|_| rng.random_range(0..3)).collect();
            for (h, &t) in history.iter_mut().zip(&next) {
                h.push(t as u32);
            }
            let next = Tensor::<1, Int>::from_data(TensorData::new(next, [batch]), &device);
            on_device.record(next.clone());
            picked.push(next);
        }
    }
}
