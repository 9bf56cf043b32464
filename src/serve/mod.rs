//! `stylecap serve`: an HTTP API and a web page for styled captions.
//!
//! Connections are accepted up to a bound, with a deadline for each request's headers
//! ([`listen`]). Requests are read (within a body deadline) and validated on tokio's threads
//! before they are admitted, images decoded on its blocking pool (a few at once), and
//! captions decoded on one thread that owns the model and batches concurrent requests
//! ([`batcher`]). Admission is bounded (503 with `Retry-After` beyond it), every admitted
//! request has a deadline, and shutdown (Ctrl-C or SIGTERM) stops accepting, answers what
//! was admitted, and closes whatever remains after a grace period.

pub mod batcher;
pub mod config;
pub mod error;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod request;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use burn::prelude::Device;

use crate::critic::Critic;
use crate::model::folder::LoadedCaptioner;
use crate::model::settings::DecodeLimits;
use batcher::{Batcher, Engine};
use config::ServeConfig;
use http::{router, AppState};
use listen::ConnLimits;
use metrics::Metrics;

pub struct ServeOptions<'a> {
    pub model: &'a Path,
    pub critic: Option<&'a Path>,
    pub addr: SocketAddr,
    pub api_key: Option<String>,
    pub config: ServeConfig,
}

pub fn run(o: ServeOptions, device: Device) -> Result<()> {
    crate::util::limit_malloc_arenas(2);
    if !o.addr.ip().is_loopback() && o.api_key.is_none() {
        bail!(
            "listening on {} (not loopback) requires --api-key KEY (or STYLECAP_API_KEY)",
            o.addr
        );
    }
    if let Some(key) = &o.api_key {
        config::check_api_key(key)?;
    }
    o.config.check()?;
    let dtype = crate::util::float_type(&device);
    let captioner = LoadedCaptioner::load(o.model, &device)
        .with_context(|| format!("loading the captioner {}", o.model.display()))?;
    let critic = match o.critic {
        Some(dir) => Some(
            Critic::load(dir, &device)
                .with_context(|| format!("loading the critic {}", dir.display()))?,
        ),
        None => None,
    };
    let model = &captioner.model;
    let styles = model.config.style.styles.clone();
    let image_size = model.config.encoder.image_size();
    let mut limits = DecodeLimits::of(model);
    limits.max_new_tokens = limits.max_new_tokens.min(o.config.max_new_tokens);
    limits.max_n = o.config.max_n;
    let preprocess = captioner.preprocess.clone();
    let model_name = o
        .model
        .canonicalize()
        .unwrap_or(o.model.to_path_buf())
        .display()
        .to_string();
    let critic_styles = critic.as_ref().map(|(c, _)| c.info.styles.clone());
    let metrics = Arc::new(Metrics::default());
    let batcher = Batcher::start(
        Engine {
            captioner,
            critic,
            device,
        },
        o.config.clone(),
        metrics.clone(),
    );
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let conn_limits = ConnLimits {
        max_connections: o.config.max_connections,
        header_timeout: Duration::from_millis(o.config.header_timeout_ms),
        shutdown_grace: Duration::from_millis(o.config.shutdown_grace_ms),
    };
    let state = Arc::new(AppState {
        admission: tokio::sync::Semaphore::new(o.config.queue_capacity),
        decodes: Arc::new(tokio::sync::Semaphore::new(http::DECODE_BUDGET_MP)),
        closing,
        config: o.config,
        api_key: o.api_key,
        batcher,
        metrics,
        model_name,
        styles,
        critic_styles,
        preprocess,
        image_size,
        limits,
        next_seed: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Image decoding is short; a small pool keeps threads (and memory) bounded.
        .max_blocking_threads(4)
        .enable_all()
        .build()?;
    let stopped = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(o.addr)
            .await
            .with_context(|| format!("cannot listen on {}", o.addr))?;
        let local = listener.local_addr()?;
        eprintln!(
            "stylecap serve: listening on http://{local} (styles: {}; {dtype})",
            if state.styles.is_empty() {
                "none".to_string()
            } else {
                state.styles.join(", ")
            }
        );
        let shutdown = async {
            shutdown_signal().await;
            eprintln!("stylecap serve: shutting down; answering requests already admitted");
        };
        let app = router(state.clone());
        Ok::<_, anyhow::Error>(
            listen::serve(listener, app, conn_limits, closing_tx, shutdown).await,
        )
    })?;
    if stopped.cut > 0 {
        eprintln!(
            "stylecap serve: closed {} connections still open after the grace period",
            stopped.cut
        );
    }
    // An image decode on the blocking pool cannot be interrupted; it is not waited for long.
    rt.shutdown_timeout(Duration::from_millis(500));
    // Every connection has closed; the last `AppState` drops here and with it the batcher,
    // whose worker skips jobs nobody waits for any more and finishes the rest.
    drop(state);
    eprintln!("stylecap serve: stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
