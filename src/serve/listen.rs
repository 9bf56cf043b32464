//! The accept loop: HTTP/1 connections, at most `max_connections` open at once, each given
//! `header_timeout` to send a request's headers (idle keep-alive connections included), and a
//! shutdown that ends within its grace period whatever clients remain connected.
//!
//! axum's own `serve` has neither a header timeout nor a connection bound nor an end to its
//! graceful shutdown: a few hundred connections that never finish their headers, or one that
//! never finishes its body, would keep it waiting.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// What became of the connections at shutdown.
pub struct Stopped {
    /// Connections still open when the grace period ended, closed without an answer.
    pub cut: usize,
}

/// Serves `app` until `shutdown` resolves, then sets `closing` (which the handlers watch, so
/// requests still sending their body are answered at once), lets open connections finish
/// their answers for up to the grace period, and closes the rest.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    closing: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let slots = std::sync::Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: beyond the bound, connections wait in the kernel's listen backlog
        // instead of costing a task and buffers here.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    eprintln!("stylecap serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|req: Request<Incoming>| req.map(Body::new)),
        );
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let closing = closing.subscribe();
        conns.spawn(async move {
            let _slot = slot;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = closed(closing) => {
                    // Idle connections close now; busy ones after their answer.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    closing.send_replace(true);
    let all_done = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(limits.shutdown_grace, all_done).await;
    let cut = conns.len();
    conns.shutdown().await;
    Stopped { cut }
}

/// Resolves once `closing` is set (or its sender is gone).
pub async fn closed(mut closing: watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}
