//! Duplicate removal: exact (same bytes) and near (perceptual hashes a few bits apart), the
//! first record in input order kept, so the result does not depend on download order.

use std::collections::{HashMap, HashSet};

use image::imageops::FilterType;
use image::RgbImage;

/// Difference hash: the image as 9×8 grey pixels, one bit per horizontal neighbour pair
/// (left brighter than right). Robust to rescaling and recompression.
pub fn dhash(img: &RgbImage) -> u64 {
    let grey = image::imageops::grayscale(img);
    let small = image::imageops::resize(&grey, 9, 8, FilterType::Triangle);
    let mut bits = 0u64;
    for y in 0..8 {
        for x in 0..8 {
            let bit = small.get_pixel(x, y).0[0] > small.get_pixel(x + 1, y).0[0];
            bits = (bits << 1) | bit as u64;
        }
    }
    bits
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicate {
    Exact,
    Near,
}

/// The largest near-duplicate threshold the band index finds every pair for.
pub const MAX_NEAR_BITS: i32 = 7;

/// Keeps hashes seen so far. Near duplicates are found through eight 8-bit bands: two
/// hashes at most 7 bits apart agree on at least one band exactly (pigeonhole), so only
/// hashes sharing a band need comparing, and none is missed.
pub struct Deduper {
    exact: HashSet<String>,
    bands: [HashMap<u8, Vec<u64>>; 8],
    max_bits: i32,
}

impl Deduper {
    pub fn new(max_bits: i32) -> Self {
        assert!(
            max_bits <= MAX_NEAR_BITS,
            "near-duplicate threshold above {MAX_NEAR_BITS}"
        );
        Deduper {
            exact: HashSet::new(),
            bands: Default::default(),
            max_bits,
        }
    }

    /// `Some` when the image duplicates one seen before; otherwise remembers it.
    pub fn check(&mut self, sha256: &str, phash: u64) -> Option<Duplicate> {
        if self.exact.contains(sha256) {
            return Some(Duplicate::Exact);
        }
        let band = |i: usize| (phash >> (8 * i)) as u8;
        if self.max_bits >= 0 {
            for (i, b) in self.bands.iter().enumerate() {
                if let Some(hashes) = b.get(&band(i)) {
                    if hashes
                        .iter()
                        .any(|h| (h ^ phash).count_ones() as i32 <= self.max_bits)
                    {
                        return Some(Duplicate::Near);
                    }
                }
            }
        }
        self.exact.insert(sha256.to_string());
        for (i, b) in self.bands.iter_mut().enumerate() {
            b.entry(band(i)).or_default().push(phash);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_copies_match_and_different_images_do_not() {
        let a = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8])
        });
        let brighter = RgbImage::from_fn(64, 48, |x, y| {
            let p = a.get_pixel(x, y).0;
            image::Rgb([
                p[0].saturating_add(6),
                p[1].saturating_add(6),
                p[2].saturating_add(6),
            ])
        });
        let half = image::imageops::resize(&a, 32, 24, FilterType::Triangle);
        let other = RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([((x * 37 + y * 11) % 256) as u8, 50, (y * 3) as u8])
        });
        let mut d = Deduper::new(4);
        assert_eq!(d.check("a", dhash(&a)), None);
        assert_eq!(d.check("a", dhash(&a)), Some(Duplicate::Exact));
        assert_eq!(d.check("b", dhash(&brighter)), Some(Duplicate::Near));
        assert_eq!(d.check("c", dhash(&half)), Some(Duplicate::Near));
        assert_eq!(d.check("d", dhash(&other)), None);
    }
}
