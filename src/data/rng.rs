//! A small seeded generator (SplitMix64) for procedural data.
//!
//! The scene world and the style grammars must give byte-identical output for a seed on every
//! machine and every version of the `rand` crate, so they use this fixed algorithm. Each item
//! derives its own stream from `(seed, stream, index)`, so items can be generated in parallel,
//! in any order, or alone.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
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
