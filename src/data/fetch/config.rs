//! `data fetch` settings: plain serde struct with defaults, saved in the output folder, and
//! checked once (`validate`) before anything is fetched.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::dedup::MAX_NEAR_BITS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Scale the short side to `size`, then cut the centre square.
    CenterCrop,
    /// Scale the long side to `size`, then pad to a square with black.
    Pad,
    /// Scale the long side to `size` and keep the aspect ratio (no padding).
    Keep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    Jpeg,
    Png,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FetchConfig {
    /// Column (TSV/CSV header) or key (JSONL) holding the image URL.
    pub url_col: String,
    /// Column or key holding the caption.
    pub caption_col: String,
    /// Downloads in flight at once.
    pub parallel: usize,
    /// Requests per second to one host (0: no limit).
    pub per_host_rps: f64,
    /// Whole-request timeout (connect, headers and body), seconds.
    pub timeout_s: f64,
    /// Retries after a timeout, a connection error, 429 or 5xx.
    pub retries: u32,
    /// A rerun fetches again the records that failed for a reason that may pass (timeouts,
    /// connection errors, 429, 5xx); off, such failures are final.
    pub retry_failed: bool,
    /// Send requests through this HTTP(S) proxy. None: no proxy (`HTTP_PROXY` and the like
    /// are ignored, since a proxy would connect to addresses the guard never sees).
    pub proxy: Option<String>,
    /// First retry delay; doubled each retry (with jitter).
    pub backoff_s: f64,
    /// Largest download, in bytes.
    pub max_bytes: u64,
    pub max_redirects: usize,
    /// Largest image, in pixels, checked from the header before decoding.
    pub max_pixels: u64,
    /// Largest ratio of the longer side to the shorter, checked from the header (a thin
    /// strip is mostly cropped away, and bounds what decoding it may cost).
    pub max_aspect_ratio: f64,
    /// Output size in pixels (see `resize`).
    pub size: u32,
    pub resize: ResizeMode,
    pub format: OutputFormat,
    pub jpeg_quality: u8,
    /// Images whose shorter side is smaller than this are dropped.
    pub min_image_side: u32,
    pub min_caption_words: usize,
    pub max_caption_chars: usize,
    /// Perceptual hashes (64-bit dHash) at most this many bits apart are near duplicates;
    /// the first in input order is kept. Negative: no near-duplicate removal.
    pub near_duplicate_bits: i32,
    /// Images per output folder (and per shard manifest).
    pub shard_size: usize,
    /// Allow loopback, private and link-local addresses (off by default: a URL list must not
    /// reach into the machine's own network).
    pub allow_private: bool,
    pub user_agent: String,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            url_col: "url".into(),
            caption_col: "caption".into(),
            parallel: 64,
            per_host_rps: 0.0,
            timeout_s: 10.0,
            retries: 2,
            retry_failed: true,
            proxy: None,
            backoff_s: 0.5,
            max_bytes: 20 << 20,
            max_redirects: 5,
            max_pixels: 50_000_000,
            max_aspect_ratio: 10.0,
            size: 224,
            resize: ResizeMode::CenterCrop,
            format: OutputFormat::Jpeg,
            jpeg_quality: 90,
            min_image_side: 32,
            min_caption_words: 1,
            max_caption_chars: 1000,
            near_duplicate_bits: 4,
            shard_size: 10_000,
            allow_private: false,
            user_agent: concat!("stylecap/", env!("CARGO_PKG_VERSION"), " (data fetch)").into(),
        }
    }
}

/// Limits of the settings: beyond them a value is a typo, or would overflow a timer or an
/// allocation.
pub const MAX_PARALLEL: usize = 10_000;
pub const MAX_TIMEOUT_S: f64 = 86_400.0;
pub const MAX_BACKOFF_S: f64 = 3_600.0;
pub const MAX_RETRIES: u32 = 20;
pub const MIN_RPS: f64 = 0.001;
pub const MAX_RPS: f64 = 1e6;
pub const MAX_SIZE: u32 = 4096;

impl FetchConfig {
    /// Every setting in its range; errors name the flag and the range.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        ensure!(
            (1..=MAX_PARALLEL).contains(&c.parallel),
            "--parallel must be 1 to {MAX_PARALLEL}; got {}",
            c.parallel
        );
        ensure!(
            c.per_host_rps == 0.0 || (MIN_RPS..=MAX_RPS).contains(&c.per_host_rps),
            "--per-host-rps must be 0 (no limit) or {MIN_RPS} to {MAX_RPS} requests per second; got {:?}",
            c.per_host_rps
        );
        ensure!(
            (0.001..=MAX_TIMEOUT_S).contains(&c.timeout_s),
            "--timeout must be 0.001 to {MAX_TIMEOUT_S} seconds; got {:?}",
            c.timeout_s
        );
        ensure!(
            c.retries <= MAX_RETRIES,
            "--retries must be 0 to {MAX_RETRIES}; got {}",
            c.retries
        );
        ensure!(
            (0.0..=MAX_BACKOFF_S).contains(&c.backoff_s),
            "--backoff must be 0 to {MAX_BACKOFF_S} seconds; got {:?}",
            c.backoff_s
        );
        ensure!(c.max_pixels >= 1, "--max-pixels must be at least 1; got 0");
        ensure!(
            c.max_aspect_ratio >= 1.0 && c.max_aspect_ratio.is_finite(),
            "--max-aspect-ratio must be a finite number of at least 1; got {:?}",
            c.max_aspect_ratio
        );
        let thinnest = crate::data::image_check::MAX_ASPECT_RATIO as f64;
        ensure!(
            c.resize != ResizeMode::Keep || c.max_aspect_ratio <= thinnest,
            "--max-aspect-ratio is {} with --resize keep: images so thin are refused by \
             stylecap's loaders (one side at most {thinnest} times the other); lower it or crop \
             or pad them (--resize center-crop or pad)",
            c.max_aspect_ratio
        );
        ensure!(
            (1..=MAX_SIZE).contains(&c.size),
            "--size must be 1 to {MAX_SIZE} pixels; got {}",
            c.size
        );
        ensure!(c.shard_size >= 1, "--shard-size must be at least 1; got 0");
        ensure!(
            c.near_duplicate_bits <= MAX_NEAR_BITS,
            "--near-duplicate-bits must be at most {MAX_NEAR_BITS} (negative: off); got {}",
            c.near_duplicate_bits
        );
        ensure!(
            (1..=100).contains(&c.jpeg_quality),
            "--jpeg-quality must be 1 to 100; got {}",
            c.jpeg_quality
        );
        if let Some(p) = &c.proxy {
            let ok = reqwest::Url::parse(p)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            ensure!(
                ok,
                "--proxy must be an http:// or https:// URL with a host; got {p:?}"
            );
        }
        Ok(())
    }

    /// The settings that decide the output; a resumed run must match them (transport
    /// settings such as parallelism or timeouts may change between runs).
    pub fn output_settings(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("serialisable");
        let obj = v.as_object_mut().expect("object");
        for transport in [
            "parallel",
            "per_host_rps",
            "timeout_s",
            "retries",
            "backoff_s",
            "retry_failed",
            "proxy",
            "user_agent",
        ] {
            obj.remove(transport);
        }
        v
    }
}
