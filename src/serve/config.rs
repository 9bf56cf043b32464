//! Serving settings: plain serde struct with defaults, printed at startup.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Largest request body accepted (bytes).
    pub max_body_bytes: usize,
    /// Largest image accepted, in pixels (width × height), checked from the header before
    /// decoding, so a small file that claims a huge image is refused without allocating it.
    pub max_pixels: u64,
    pub max_styles: usize,
    /// Most captions per style in one request.
    pub max_n: usize,
    /// Longest caption a request may ask for (the decoder's positions may allow fewer).
    pub max_new_tokens: usize,
    /// Decode concurrent requests together (dynamic batching).
    pub batching: bool,
    /// Most caption rows (styles × n summed over requests) decoded in one batch.
    pub max_batch_rows: usize,
    /// How long the first request of a batch waits for others to join.
    pub batch_wait_ms: u64,
    /// Requests admitted at once (being decoded, waiting, or being read); beyond it, 503.
    pub queue_capacity: usize,
    /// A request not answered within this is answered 504 and dropped from the queue.
    pub timeout_ms: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_body_bytes: 5 << 20,
            max_pixels: 25_000_000,
            max_styles: 8,
            max_n: 8,
            max_new_tokens: 64,
            batching: true,
            max_batch_rows: 64,
            batch_wait_ms: 5,
            queue_capacity: 64,
            timeout_ms: 30_000,
        }
    }
}
