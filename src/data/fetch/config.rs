//! `data fetch` settings: plain serde struct with defaults, saved in the output folder.

use serde::{Deserialize, Serialize};

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
    /// First retry delay; doubled each retry (with jitter).
    pub backoff_s: f64,
    /// Largest download, in bytes.
    pub max_bytes: u64,
    pub max_redirects: usize,
    /// Largest image, in pixels, checked from the header before decoding.
    pub max_pixels: u64,
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
            backoff_s: 0.5,
            max_bytes: 20 << 20,
            max_redirects: 5,
            max_pixels: 50_000_000,
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

impl FetchConfig {
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
            "user_agent",
        ] {
            obj.remove(transport);
        }
        v
    }
}
