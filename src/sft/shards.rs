//! Splitting a micro-batch into data-parallel shards by length.
//!
//! Each shard is padded to its own longest row, encodes each of its distinct pictures once,
//! and the step waits for its slowest shard. Cut in batch order, every shard holds some long
//! captions and pads its short style sentences to them (a third of the decoder's tokens on
//! the built-in world were padding). Cut after sorting by length, with the cut points chosen
//! so that the shards cost the same, the long rows pad only each other; rows of one picture
//! (the blank one of style texts) sort together, and the cut weighs what their sharing saves.

use crate::model::CaptionerConfig;

/// The work of one picture (its pass through the encoder and its cross-attention keys and
/// values) in decoder tokens' worth: the products' sizes per encoder state against those
/// per decoder token (about 15 on the built-in world's default shape, 140 at ViT-B/16 +
/// GPT-2).
pub fn picture_cost(config: &CaptionerConfig) -> usize {
    let (e, d) = (&config.encoder, &config.decoder);
    let (de, dd) = (e.hidden_size(), d.n_embd);
    let picture = e.seq_len() * (e.num_layers() * 12 * de * de + d.n_layer * 2 * dd * dd);
    let token = d.n_layer * 14 * dd * dd + d.vocab_size * dd;
    (picture / token.max(1)).max(1)
}

/// The cost of a shard of `rows` rows whose longest is `longest` tokens, showing `pictures`
/// distinct pictures.
fn cost(rows: usize, longest: usize, pictures: usize, picture_cost: usize) -> usize {
    rows * longest + pictures * picture_cost
}

/// Row indices of up to `shards` non-empty shards: the rows sorted by length (ties by
/// picture, then in batch order), cut into contiguous runs so that the costliest shard costs
/// as little as possible. `pictures[i]` identifies row i's picture (rows with equal ids show
/// the same one). Depends only on its arguments.
pub fn by_length(
    lengths: &[usize],
    pictures: &[usize],
    picture_cost: usize,
    shards: usize,
) -> Vec<Vec<usize>> {
    let n = lengths.len();
    let k = shards.clamp(1, n.max(1));
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (lengths[i], pictures[i], i));
    let len = |j: usize| lengths[order[j]];
    // distinct[i][j]: distinct pictures among sorted rows i..j.
    let mut distinct = vec![vec![0; n + 1]; n + 1];
    for (i, row) in distinct.iter_mut().enumerate() {
        let mut seen: Vec<usize> = Vec::new();
        for j in i..n {
            let p = pictures[order[j]];
            if !seen.contains(&p) {
                seen.push(p);
            }
            row[j + 1] = seen.len();
        }
    }
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
                let c = best[s - 1][i].max(cost(j - i, len(j - 1), distinct[i][j], picture_cost));
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

    /// A picture's cost on a small shape.
    const PICTURE: usize = 13;

    fn worst(lengths: &[usize], shards: &[Vec<usize>]) -> usize {
        shards
            .iter()
            .map(|s| {
                cost(
                    s.len(),
                    s.iter().map(|&i| lengths[i]).max().unwrap(),
                    s.len(),
                    PICTURE,
                )
            })
            .max()
            .unwrap()
    }

    /// Every row its own picture.
    fn own(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    #[test]
    fn every_row_lands_in_exactly_one_shard() {
        let lengths: Vec<usize> = (0..57).map(|i| 8 + (i * 7919) % 29).collect();
        for shards in [1, 2, 3, 4, 57, 80] {
            let split = by_length(&lengths, &own(57), PICTURE, shards);
            assert_eq!(split.len(), shards.min(57));
            let mut seen: Vec<usize> = split.concat();
            seen.sort();
            assert_eq!(seen, (0..57).collect::<Vec<_>>(), "{shards} shards");
            assert!(split.iter().all(|s| !s.is_empty()));
        }
        assert!(by_length(&[], &[], PICTURE, 2).is_empty());
    }

    #[test]
    fn equal_rows_split_evenly() {
        let split = by_length(&[20; 56], &own(56), PICTURE, 2);
        assert_eq!(split[0].len(), 28);
        assert_eq!(split[1].len(), 28);
    }

    /// Captions and short style sentences as the built-in world mixes them: the cut by length
    /// beats cutting in batch order, and no cut point does better.
    #[test]
    fn long_rows_pad_only_each_other() {
        let mut lengths: Vec<usize> = (0..32).map(|i| 14 + (i * 37) % 20).collect();
        lengths.extend((0..24).map(|i| 6 + (i * 13) % 24));
        let split = by_length(&lengths, &own(56), PICTURE, 2);
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

    /// Eight photos and eight style rows of one blank picture, all of one length: the cut
    /// gives the shard of blank rows some photos, so that both shards cost about the same.
    #[test]
    fn rows_of_one_picture_share_it_and_balance() {
        let mut pictures = own(8);
        pictures.extend([8; 8]);
        let split = by_length(&[32; 16], &pictures, 130, 2);
        assert_eq!(split.len(), 2);
        let shard_cost = |s: &Vec<usize>| {
            let mut seen: Vec<usize> = s.iter().map(|&i| pictures[i]).collect();
            seen.sort();
            seen.dedup();
            cost(s.len(), 32, seen.len(), 130)
        };
        let costs: Vec<usize> = split.iter().map(shard_cost).collect();
        // 5 photos, then 3 photos and the blank one: 9 pictures encoded in all, not 16 or 10.
        assert_eq!(costs, vec![5 * 32 + 5 * 130, 11 * 32 + 4 * 130]);
        assert!(split[1].iter().filter(|&&i| pictures[i] == 8).count() == 8);
    }
}
