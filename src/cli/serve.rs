//! `stylecap serve`: the HTTP API and web page.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::Device;
use clap::Args;

use crate::serve::config::ServeConfig;
use crate::serve::{run as serve, ServeOptions};

#[derive(Args)]
pub struct ServeArgs {
    /// Captioner folder (a run's `model/`, or the run folder itself).
    #[arg(long)]
    pub model: PathBuf,
    /// Critic folder: each caption comes with the critic's style probabilities.
    #[arg(long)]
    pub critic: Option<PathBuf>,
    /// Address to listen on. Anything but loopback requires --api-key.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Bearer token required on /v1/* and /metrics (at least 16 characters, not blank).
    #[arg(long, env = "STYLECAP_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Decode each request on its own instead of batching concurrent requests.
    #[arg(long)]
    pub no_batching: bool,
    /// Most caption rows (styles × n, summed over requests) in one batch.
    #[arg(long, default_value_t = ServeConfig::default().max_batch_rows)]
    pub max_batch: usize,
    /// Milliseconds the first request of a batch waits for others.
    #[arg(long, default_value_t = ServeConfig::default().batch_wait_ms)]
    pub batch_wait_ms: u64,
    /// Requests admitted at once (body read and valid, waiting or being decoded); beyond it
    /// the server answers 503 with Retry-After.
    #[arg(long, default_value_t = ServeConfig::default().queue_capacity)]
    pub queue: usize,
    /// Deadline of an admitted request in milliseconds (504 after it).
    #[arg(long, default_value_t = ServeConfig::default().timeout_ms)]
    pub timeout_ms: u64,
    /// Milliseconds a request's body may take to arrive (408 and the connection closed
    /// after it).
    #[arg(long, default_value_t = ServeConfig::default().body_timeout_ms)]
    pub body_timeout_ms: u64,
    /// Milliseconds a connection may take to send a request's headers, idle keep-alive time
    /// included (the connection is closed after it).
    #[arg(long, default_value_t = ServeConfig::default().header_timeout_ms)]
    pub header_timeout_ms: u64,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = ServeConfig::default().max_connections)]
    pub max_connections: usize,
    /// After SIGTERM or Ctrl-C, milliseconds open connections get to receive their answers
    /// before the rest are closed.
    #[arg(long, default_value_t = ServeConfig::default().shutdown_grace_ms)]
    pub shutdown_grace_ms: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = ServeConfig::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Largest image in pixels (width × height), checked before decoding.
    #[arg(long, default_value_t = ServeConfig::default().max_pixels)]
    pub max_pixels: u64,
    /// Most captions per style in one request.
    #[arg(long, default_value_t = ServeConfig::default().max_n)]
    pub max_n: usize,
    /// Most styles in one request.
    #[arg(long, default_value_t = ServeConfig::default().max_styles)]
    pub max_styles: usize,
}

pub fn run(a: ServeArgs, device: Device) -> Result<()> {
    let model = crate::model::folder::model_dir(&a.model);
    let config = ServeConfig {
        max_body_bytes: a.max_body_bytes,
        max_pixels: a.max_pixels,
        max_styles: a.max_styles,
        max_n: a.max_n,
        batching: !a.no_batching,
        max_batch_rows: a.max_batch,
        batch_wait_ms: a.batch_wait_ms,
        queue_capacity: a.queue,
        timeout_ms: a.timeout_ms,
        body_timeout_ms: a.body_timeout_ms,
        header_timeout_ms: a.header_timeout_ms,
        max_connections: a.max_connections,
        shutdown_grace_ms: a.shutdown_grace_ms,
        ..ServeConfig::default()
    };
    serve(
        ServeOptions {
            model: &model,
            critic: a.critic.as_deref(),
            addr: a.addr,
            api_key: a.api_key,
            config,
        },
        device,
    )
}
