//! A small seeded generator (SplitMix64) for procedural data.
//!
//! The scene world and the style grammars must give byte-identical output for a seed on every
//! machine and every version of the `rand` crate, so they use this fixed algorithm. Each item
//! derives its own stream from `(seed, stream, index)`, so items can be generated in parallel,
//! in any order, or alone.

/// The random streams, one name each. Every seeded draw of stylecap takes its stream (or the
/// key its seed is mixed with) from here, so no two purposes ever share a sequence.
pub mod streams {
    /// The built-in world: scene `i` of split `s` is drawn from stream `WORLD_SCENES + s`, its
    /// captions and picture from `WORLD_PICTURES + s` (four splits).
    pub const WORLD_SCENES: u64 = 0;
    pub const WORLD_PICTURES: u64 = 100;
    /// Supervised training: the epoch order of captioned images, which caption of an image
    /// is shown, the epoch order of style texts, the picture shown with a style text, whether
    /// a style row takes a sentence that names world things, and the epoch orders of those
    /// sentences and of the others.
    pub const SFT_IMAGE_ORDER: u64 = 11;
    pub const SFT_CAPTION_PICK: u64 = 12;
    pub const SFT_STYLE_ORDER: u64 = 13;
    pub const SFT_STYLE_PICTURE: u64 = 15;
    pub const SFT_MENTION_POOL: u64 = 17;
    pub const SFT_MENTION_ORDER: u64 = 18;
    pub const SFT_OTHER_ORDER: u64 = 19;
    /// The critic's epoch order of training texts.
    pub const CRITIC_ORDER: u64 = 21;
    /// Alignment: the epoch order of pictures, the shuffle of PPO's minibatches (item
    /// `step · epochs + epoch`), and the epoch order of the supervised anchor's pictures.
    pub const ALIGN_IMAGE_ORDER: u64 = 31;
    pub const ALIGN_PPO_SHUFFLE: u64 = 33;
    pub const ALIGN_ANCHOR_ORDER: u64 = 37;
    /// Captions a user asks for, under the user's seed: row `i` samples from item `i` (the
    /// server: caption `k` of style `s` of a request is `s·n + k`; `caption`: style `s` of
    /// picture `p` is `p·styles + s`), so one picture in one style gets the same sampler from
    /// both. No run's seed is ever a user's, so this stream may share its number with the
    /// world's (and keeps the one it had, so a seed gives the captions it always gave).
    pub const CAPTION_SAMPLING: u64 = 0;

    /// Keys mixed into a seed (`Rng::keyed`) for one-off draws: the validation slice of a
    /// dataset without one, the factual captions added to the critic's built-in corpus, the
    /// critic's held-out split, and the style grammars' length profile.
    pub const KEY_VALIDATION_SLICE: u64 = 0xda7a;
    pub const KEY_CRITIC_WORLD_CAPTIONS: u64 = 0xfac7;
    pub const KEY_CRITIC_SPLIT: u64 = 0xc817;
    /// The halves of a style corpus that a critic and its judge train on (always seed 0, so
    /// the two halves never depend on either's seed).
    pub const KEY_CORPUS_HALVES: u64 = 0x4a1f;
    pub const KEY_STYLE_LENGTHS: u64 = 0x1e47;

    /// Every stream drawn under a run's seed (the world's with their four splits): no two may
    /// share a number.
    pub fn all() -> Vec<u64> {
        let mut v: Vec<u64> = (0..4).map(|s| WORLD_SCENES + s).collect();
        v.extend((0..4).map(|s| WORLD_PICTURES + s));
        v.extend([
            SFT_IMAGE_ORDER,
            SFT_CAPTION_PICK,
            SFT_STYLE_ORDER,
            SFT_STYLE_PICTURE,
            SFT_MENTION_POOL,
            SFT_MENTION_ORDER,
            SFT_OTHER_ORDER,
            CRITIC_ORDER,
            ALIGN_IMAGE_ORDER,
            ALIGN_PPO_SHUFFLE,
            ALIGN_ANCHOR_ORDER,
        ]);
        v
    }
}

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for a one-off draw: `seed` mixed with one of the `streams::KEY_*` keys.
    pub fn keyed(seed: u64, key: u64) -> Self {
        Rng(seed ^ key)
    }

    /// An independent stream for item `index` of stream `stream` (e.g. a split) under `seed`.
    pub fn for_item(seed: u64, stream: u64, index: u64) -> Self {
        let mut r = Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
        let a = r.next_u64() ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut r = Rng(a);
        Rng(r.next_u64() ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn every_stream_has_its_own_number() {
        let mut all = super::streams::all();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "two streams share a number");
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|i| Rng::for_item(7, 1, i).next_u64()).collect();
        let b: Vec<u64> = (0..4).map(|i| Rng::for_item(7, 1, i).next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(
            Rng::for_item(7, 1, 0).next_u64(),
            Rng::for_item(7, 2, 0).next_u64()
        );
        assert_ne!(
            Rng::for_item(7, 1, 0).next_u64(),
            Rng::for_item(8, 1, 0).next_u64()
        );
        let mut r = Rng::new(3);
        let mut counts = [0usize; 5];
        for _ in 0..5000 {
            counts[r.below(5)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }
}
