//! Routes: the caption API, styles, health, metrics and the web page; bearer-token checks;
//! request accounting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde_json::json;
use tokio::sync::{oneshot, watch, Semaphore};

use super::batcher::{Batcher, Decoding, Job};
use super::config::ServeConfig;
use super::error::ApiError;
use super::listen::closed;
use super::metrics::Metrics;
use super::request::{check, parse_json, parse_multipart};
use crate::data::image::PreprocessorConfig;
use crate::data::image_check::{check_shape, decode_checked, header};
use crate::model::settings::DecodeLimits;

pub struct AppState {
    pub config: ServeConfig,
    pub api_key: Option<String>,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub model_name: String,
    pub styles: Vec<String>,
    pub critic_styles: Option<Vec<String>>,
    pub preprocess: PreprocessorConfig,
    pub image_size: usize,
    /// Ranges of the decoding settings: the model's and the server's caps.
    pub limits: DecodeLimits,
    /// Admission: requests queued or decoded (their body already read and valid); beyond
    /// capacity, 503.
    pub admission: Semaphore,
    /// Megapixels being decoded, one permit each. A 25-megapixel upload takes a few hundred
    /// MB while it is decoded and resized; this bounds the sum however many arrive together.
    /// The permits go with the decoding thread, which runs on after its request times out.
    pub decodes: Arc<Semaphore>,
    /// Set when shutdown begins: requests still sending their body are answered at once.
    pub closing: watch::Receiver<bool>,
    pub next_seed: AtomicU64,
}

/// Megapixels decoded at once (see [`AppState::decodes`]): two 25-megapixel uploads, or
/// many small ones (an image takes a megapixel at least), so large uploads cannot add up
/// while the usual small ones never wait for each other.
pub const DECODE_BUDGET_MP: usize = 50;

/// Images with more pixels than this hand their freed memory back to the system after
/// decoding; smaller ones are not worth the pass over the heap.
const LARGE_IMAGE_PIXELS: u64 = 4_000_000;

const PAGE: &str = include_str!("page.html");

pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/captions", post(captions))
        .route("/v1/styles", get(styles))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(protected)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(middleware::from_fn_with_state(state.clone(), account))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Counts every request by route and status, and errors by code.
async fn account(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |p| p.as_str())
        .to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    st.metrics.request(
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    if let Some(code) = resp.extensions().get::<&'static str>() {
        st.metrics.error(code);
    }
    resp
}

/// Compares in time that depends only on the expected key's length, so response timing does
/// not reveal how much of a guess was right.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = (given.len() != expected.len()) as u8;
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

async fn require_key(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &st.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid `Authorization: Bearer KEY` header is required",
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn styles(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "model": st.model_name,
        "styles": st.styles,
        "critic_styles": st.critic_styles,
        "limits": {
            "max_styles": st.config.max_styles,
            "max_n": st.config.max_n,
            "max_new_tokens": st.limits.max_new_tokens,
            "max_body_bytes": st.config.max_body_bytes,
            "max_pixels": st.config.max_pixels,
        },
    }))
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

async fn captions(State(st): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let start = Instant::now();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (parts, body) = req.into_parts();
    let bytes = read_body(&st, &parts.headers, body).await?;
    let mut params = if content_type.starts_with("application/json") {
        parse_json(&bytes)?
    } else if content_type.starts_with("multipart/form-data") {
        parse_multipart(Request::from_parts(parts, Body::from(bytes))).await?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json (base64 image) or multipart/form-data (image file)",
        ));
    };
    let checked = check(&params, &st.styles, &st.limits, &st.config)?;
    // Only a complete, valid request takes a place in the queue.
    let _permit = st
        .admission
        .try_acquire()
        .map_err(|_| ApiError::overloaded())?;
    let deadline = Instant::now() + Duration::from_millis(st.config.timeout_ms);
    let decoding = Decoding {
        greedy: checked.greedy,
        temperature: checked.temperature,
        top_p: checked.top_p,
        max_new_tokens: checked.max_new_tokens,
        repeats: checked.repeats,
        seed: params
            .seed
            .unwrap_or_else(|| st.next_seed.fetch_add(1, Ordering::Relaxed)),
    };
    let image = std::mem::take(&mut params.image_bytes);
    let answer = async {
        let pixels = decode_image(&st, image).await?;
        let (tx, rx) = oneshot::channel();
        st.batcher.submit(Job {
            pixels,
            styles: checked.styles,
            n: checked.n,
            decoding,
            enqueued: Instant::now(),
            reply: tx,
        })?;
        rx.await
            .map_err(|_| ApiError::internal("the decoder stopped"))?
    };
    let out = tokio::time::timeout_at(deadline.into(), answer)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("no answer within {} ms", st.config.timeout_ms),
            )
        })??;
    Ok(Json(json!({
        "model": st.model_name,
        "captions": out.captions,
        "decoding": decoding,
        "timing": {
            "queue_ms": out.queue_ms,
            "decode_ms": out.decode_ms,
            "total_ms": start.elapsed().as_secs_f64() * 1e3,
        },
        "batch": {"requests": out.batch_requests, "rows": out.batch_rows},
    }))
    .into_response())
}

/// The whole body, within the size limit and the body deadline. A request still sending
/// when the server begins to shut down is answered 503 at once: it was never admitted.
async fn read_body(st: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = st.config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds {limit} bytes"),
        )
        .and_close()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let timeout = Duration::from_millis(st.config.body_timeout_ms);
    tokio::select! {
        read = tokio::time::timeout(timeout, Limited::new(body, limit).collect()) => match read {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err(ApiError::bad_request(
                "bad_body",
                format!("the body could not be read: {e}"),
            )
            .and_close()),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {} ms", st.config.body_timeout_ms),
            )
            .and_close()),
        },
        _ = closed(st.closing.clone()) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; retry elsewhere",
        )
        .and_close()),
    }
}

/// Decodes and preprocesses an upload off the async threads, within [`DECODE_BUDGET_MP`]
/// megapixels decoded at once (the size read from the header).
async fn decode_image(st: &Arc<AppState>, bytes: Vec<u8>) -> Result<Vec<f32>, ApiError> {
    let (_, width, height) = header(&bytes)?;
    check_shape(width, height)?;
    let megapixels = (width as u64 * height as u64).div_ceil(1_000_000) as usize;
    let slot = st
        .decodes
        .clone()
        .acquire_many_owned(megapixels.clamp(1, DECODE_BUDGET_MP) as u32)
        .await
        .map_err(|_| ApiError::internal("image decoding stopped"))?;
    let st2 = st.clone();
    let pixels = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let img = decode_checked(&bytes, st2.config.max_pixels)?;
        drop(bytes);
        let large = img.width() as u64 * img.height() as u64 > LARGE_IMAGE_PIXELS;
        let pixels = st2.preprocess.pixels(&img);
        drop(img);
        if large {
            crate::util::release_free_memory();
        }
        Ok::<_, ApiError>(pixels)
    })
    .await
    .map_err(|e| ApiError::internal(format!("image decoding failed: {e}")))??;
    let s = st.image_size;
    if pixels.len() != 3 * s * s {
        return Err(ApiError::internal(format!(
            "preprocessing gave {} values, the encoder expects 3x{s}x{s}",
            pixels.len()
        )));
    }
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
