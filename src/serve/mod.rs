//! `stylecap serve`: an HTTP API and a web page for styled captions.
//!
//! Requests are read and validated on tokio's threads, images decoded on its blocking pool,
//! and captions decoded on one thread that owns the model and batches concurrent requests
//! ([`batcher`]). Admission is bounded (503 with `Retry-After` beyond it), every request has
//! a deadline, and shutdown (Ctrl-C or SIGTERM) stops accepting, then answers everything
//! already admitted.

pub mod batcher;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod request;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::prelude::Device;

use crate::critic::Critic;
use crate::model::folder::LoadedCaptioner;
use batcher::{Batcher, Engine};
use config::ServeConfig;
use http::{router, AppState};
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
    if o.api_key.as_deref().is_some_and(|k| k.len() < 8) {
        bail!("--api-key is shorter than 8 characters");
    }
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
    let model_max_tokens = model
        .decoder
        .max_positions()
        .saturating_sub(model.prefix_len() + 1);
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
    let state = Arc::new(AppState {
        admission: tokio::sync::Semaphore::new(o.config.queue_capacity.max(1)),
        config: o.config,
        api_key: o.api_key,
        batcher,
        metrics,
        model_name,
        styles,
        critic_styles,
        preprocess,
        image_size,
        model_max_tokens,
        next_seed: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Image decoding is short; a small pool keeps threads (and memory) bounded.
        .max_blocking_threads(4)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(o.addr)
            .await
            .with_context(|| format!("cannot listen on {}", o.addr))?;
        let local = listener.local_addr()?;
        eprintln!(
            "stylecap serve: listening on http://{local} (styles: {})",
            state.styles.join(", ")
        );
        axum::serve(listener, router(state.clone()))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        eprintln!("stylecap serve: shutting down; answering requests already admitted");
        Ok::<_, anyhow::Error>(())
    })?;
    // Every connection has closed; the last `AppState` drops here and with it the batcher,
    // whose worker finishes what is queued.
    drop(rt);
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
