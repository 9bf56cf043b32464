//! Streams images of a dataset: each chunk is decoded and preprocessed in parallel (rayon),
//! and only one chunk is held at a time, so memory does not grow with the dataset.

use rayon::prelude::*;

use crate::data::image::open_rgb;
use crate::data::records::{CaptionRecord, Problem};

/// Decodes an image file to RGB (`image::open_rgb`), naming the record on failure.
pub fn decode(record: &CaptionRecord) -> Result<image::RgbImage, Problem> {
    open_rgb(&record.image).map_err(|e| Problem::new(record.source.clone(), format!("{e:#}")))
}

/// An iterator over chunks of `f(record, image)`, in record order. Each item is the record's
/// index and its result; a bad image is an `Err` naming the record, never a silent gap.
pub struct ImageChunks<'a, T, F> {
    records: &'a [CaptionRecord],
    chunk: usize,
    next: usize,
    f: F,
    _out: std::marker::PhantomData<T>,
}

pub fn image_chunks<T, F>(records: &[CaptionRecord], chunk: usize, f: F) -> ImageChunks<'_, T, F>
where
    T: Send,
    F: Fn(&CaptionRecord, image::RgbImage) -> T + Sync,
{
    ImageChunks {
        records,
        chunk: chunk.max(1),
        next: 0,
        f,
        _out: std::marker::PhantomData,
    }
}

impl<T, F> Iterator for ImageChunks<'_, T, F>
where
    T: Send,
    F: Fn(&CaptionRecord, image::RgbImage) -> T + Sync,
{
    type Item = Vec<(usize, Result<T, Problem>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.records.len() {
            return None;
        }
        let start = self.next;
        let end = (start + self.chunk).min(self.records.len());
        self.next = end;
        let f = &self.f;
        Some(
            (start..end)
                .into_par_iter()
                .map(|i| {
                    let r = &self.records[i];
                    (i, decode(r).map(|img| f(r, img)))
                })
                .collect(),
        )
    }
}
