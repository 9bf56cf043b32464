//! Serving settings: plain serde struct with defaults, each checked at startup.

use anyhow::{bail, Result};
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
    /// Requests admitted at once (their body read and valid; being decoded or waiting);
    /// beyond it, 503.
    pub queue_capacity: usize,
    /// An admitted request not answered within this is answered 504 and dropped from the queue.
    pub timeout_ms: u64,
    /// Time a request's body may take to arrive once its headers are in; past it, 408 and
    /// the connection closes. Requests still sending their body are not admitted yet, so slow
    /// senders do not take queue places.
    pub body_timeout_ms: u64,
    /// Time a connection may take to send a request's headers, idle keep-alive time included;
    /// past it the connection closes.
    pub header_timeout_ms: u64,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// After SIGTERM or Ctrl-C, how long open connections may take to receive their answers
    /// before the rest are closed.
    pub shutdown_grace_ms: u64,
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
            body_timeout_ms: 10_000,
            header_timeout_ms: 5_000,
            max_connections: 256,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl ServeConfig {
    /// Refuses settings that would make the server refuse everything or wait forever, naming
    /// the command-line flag.
    pub fn check(&self) -> Result<()> {
        let at_least_one = [
            ("--max-body-bytes", self.max_body_bytes as u64),
            ("--max-pixels", self.max_pixels),
            ("--max-styles", self.max_styles as u64),
            ("--max-n", self.max_n as u64),
            ("--max-batch", self.max_batch_rows as u64),
            ("--queue", self.queue_capacity as u64),
            ("--timeout-ms", self.timeout_ms),
            ("--body-timeout-ms", self.body_timeout_ms),
            ("--header-timeout-ms", self.header_timeout_ms),
            ("--max-connections", self.max_connections as u64),
        ];
        for (flag, v) in at_least_one {
            if v == 0 {
                bail!("{flag} is 0; it must be at least 1");
            }
        }
        Ok(())
    }
}

/// Shortest API key accepted: a short key can be guessed by trying.
pub const MIN_API_KEY_CHARS: usize = 16;

/// Refuses keys a client could never send or could guess: shorter than
/// [`MIN_API_KEY_CHARS`], blank, or with whitespace at either end (which HTTP strips from
/// header values) or control characters.
pub fn check_api_key(key: &str) -> Result<()> {
    let chars = key.chars().count();
    if key.trim().is_empty() {
        bail!("--api-key is blank; give a key of at least {MIN_API_KEY_CHARS} characters");
    }
    if chars < MIN_API_KEY_CHARS {
        bail!("--api-key has {chars} characters; it must have at least {MIN_API_KEY_CHARS}");
    }
    if key.trim() != key || key.chars().any(char::is_control) {
        bail!(
            "--api-key has whitespace at an end or control characters, which a client \
             cannot send in an Authorization header"
        );
    }
    Ok(())
}
