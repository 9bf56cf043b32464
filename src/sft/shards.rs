//! Splitting a micro-batch into data-parallel shards by length.
//!
//! Each shard is padded to its own longest row, and the step waits for its slowest shard.
//! Cut in batch order, every shard holds some long captions and pads its short style
//! sentences to them (a third of the decoder's tokens on the built-in world were padding).
//! Cut after sorting by length, with the cut points chosen so that the shards cost the same,
//! the long rows pad only each other.

/// Work of one row besides its padded tokens, in tokens: the image's pass through the
/// encoder (17 states × 3 layers of a 128-wide ViT against a 2-layer decoder with a
/// 2,048-word head, on the built-in world's default shape, is about 13 tokens' worth).
const ROW_COST: usize = 13;

/// The cost of a shard of `rows` rows whose longest is `longest` tokens.
fn cost(rows: usize, longest: usize) -> usize {
    rows * (ROW_COST + longest)
}

/// Row indices of up to `shards` non-empty shards: the rows sorted by length (ties in batch
/// order), cut into contiguous runs so that the costliest shard costs as little as possible.
/// Depends only on the lengths and the shard count.
pub fn by_length(lengths: &[usize], shards: usize) -> Vec<Vec<usize>> {
    let n = lengths.len();
    let k = shards.clamp(1, n.max(1));
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let len = |j: usize| lengths[order[j]];
    // best[s][j]: the least possible costliest shard when the first j sorted rows form s
    // shards; cut[s][j] where the last of them starts. Sorted, a shard's longest is its last.
    let mut best = vec![vec![usize::MAX; n + 1]; k + 1];
    let mut cut = vec![vec![0; n + 1]; k + 1];
    best[0][0] = 0;
    for s in 1..=k {
        for j in s..=n {
            for i in (s - 1)..j {
                if best[s - 1][i] == usize::MAX {
                    continue;
                }
                let c = best[s - 1][i].max(cost(j - i, len(j - 1)));
                if c < best[s][j] {
                    best[s][j] = c;
                    cut[s][j] = i;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(k);
    let mut j = n;
    for s in (1..=k).rev() {
        let i = cut[s][j];
        out.push(order[i..j].to_vec());
        j = i;
    }
    out.reverse();
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worst(lengths: &[usize], shards: &[Vec<usize>]) -> usize {
        shards
            .iter()
            .map(|s| cost(s.len(), s.iter().map(|&i| lengths[i]).max().unwrap()))
            .max()
            .unwrap()
    }

    #[test]
    fn every_row_lands_in_exactly_one_shard() {
        let lengths: Vec<usize> = (0..57).map(|i| 8 + (i * 7919) % 29).collect();
        for shards in [1, 2, 3, 4, 57, 80] {
            let split = by_length(&lengths, shards);
            assert_eq!(split.len(), shards.min(57));
            let mut seen: Vec<usize> = split.concat();
            seen.sort();
            assert_eq!(seen, (0..57).collect::<Vec<_>>(), "{shards} shards");
            assert!(split.iter().all(|s| !s.is_empty()));
        }
        assert!(by_length(&[], 2).is_empty());
    }

    #[test]
    fn equal_rows_split_evenly() {
        let split = by_length(&[20; 56], 2);
        assert_eq!(split[0].len(), 28);
        assert_eq!(split[1].len(), 28);
    }

    /// Captions and short style sentences as the built-in world mixes them: the cut by length
    /// beats cutting in batch order, and no cut point does better.
    #[test]
    fn long_rows_pad_only_each_other() {
        let mut lengths: Vec<usize> = (0..32).map(|i| 14 + (i * 37) % 20).collect();
        lengths.extend((0..24).map(|i| 6 + (i * 13) % 24));
        let split = by_length(&lengths, 2);
        let in_order: Vec<Vec<usize>> = vec![(0..28).collect(), (28..56).collect()];
        assert!(worst(&lengths, &split) < worst(&lengths, &in_order));
        let mut sorted: Vec<usize> = (0..56).collect();
        sorted.sort_by_key(|&i| (lengths[i], i));
        for c in 1..56 {
            let other = vec![sorted[..c].to_vec(), sorted[c..].to_vec()];
            assert!(
                worst(&lengths, &split) <= worst(&lengths, &other),
                "cut at {c}"
            );
        }
    }
}
