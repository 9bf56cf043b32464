//! One download: per-host pacing, a size cap, content-type check, and retries with
//! exponential backoff for failures that may pass (timeouts, connection errors, 429, 5xx).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Url};
use tokio::sync::Mutex;

use anyhow::Context;

use super::config::{FetchConfig, MAX_BACKOFF_S};
use super::safety::{check_name, check_url, find_blocked, redirect_policy, GuardedResolver};

/// Why a record was dropped: a short stable code (the key in `report.json`) and details.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub detail: String,
}

impl Failure {
    pub fn new(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// Failures that may pass on a later try: timeouts, connection and transfer errors, 429
/// and 5xx. Retried within a run, and by a rerun (`retry_failed`); decided by the reason
/// code alone, so the journal of any earlier run can be read the same way.
pub fn is_transient(reason: &str) -> bool {
    matches!(
        reason,
        "timeout" | "connect_error" | "request_error" | "http_429"
    ) || (reason.len() == 8 && reason.starts_with("http_5"))
}

pub fn client(c: &FetchConfig) -> anyhow::Result<Client> {
    let builder = Client::builder()
        .user_agent(c.user_agent.clone())
        .timeout(Duration::from_secs_f64(c.timeout_s))
        .connect_timeout(Duration::from_secs_f64(c.timeout_s))
        .redirect(redirect_policy(
            c.max_redirects,
            c.allow_private,
            c.proxy.is_some(),
        ))
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: c.allow_private,
        }));
    // The environment's proxy (HTTP_PROXY, ALL_PROXY, ...) is never used: through a proxy
    // the connection is the proxy's, and the resolver's address check would not apply.
    let builder = match &c.proxy {
        None => builder.no_proxy(),
        Some(p) => builder
            .no_proxy()
            .proxy(reqwest::Proxy::all(p).with_context(|| format!("--proxy {p:?}"))?),
    };
    Ok(builder.build()?)
}

/// Spaces requests to the same host at least `1 / rps` apart.
#[derive(Default)]
pub struct HostPacer {
    next: Mutex<HashMap<String, Instant>>,
}

impl HostPacer {
    async fn wait(&self, host: &str, rps: f64) {
        if rps <= 0.0 {
            return;
        }
        let gap = Duration::from_secs_f64(1.0 / rps);
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = next.get(host).copied().unwrap_or(now).max(now);
            next.insert(host.to_string(), slot + gap);
            slot
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// A deterministic jitter in [0, 0.5) from the URL and attempt, so retries of many URLs
/// against one host do not fall in step.
fn jitter(url: &str, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ attempt as u64;
    for b in url.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64 * 0.5
}

pub async fn download(
    client: &Client,
    pacer: &HostPacer,
    url: &Url,
    c: &FetchConfig,
) -> Result<Vec<u8>, Failure> {
    check_url(url, c.allow_private).map_err(|b| Failure::new("blocked_address", b.0))?;
    if c.proxy.is_some() {
        // The proxy resolves the name; resolve it here too so a name of a local address is
        // refused before it is handed over.
        check_name(url, c.allow_private)
            .await
            .map_err(|b| Failure::new("blocked_address", b.0))?;
    }
    let host = url.host_str().unwrap_or("").to_string();
    let mut attempt = 0;
    loop {
        pacer.wait(&host, c.per_host_rps).await;
        match try_once(client, url, c).await {
            Ok(body) => return Ok(body),
            Err(f) if is_transient(&f.reason) && attempt < c.retries => {
                let delay =
                    c.backoff_s * 2f64.powi(attempt as i32) * (1.0 + jitter(url.as_str(), attempt));
                tokio::time::sleep(Duration::from_secs_f64(delay.min(MAX_BACKOFF_S))).await;
                attempt += 1;
            }
            Err(f) => return Err(f),
        }
    }
}

fn request_failure(e: reqwest::Error) -> Failure {
    if let Some(b) = find_blocked(&e) {
        let reason = if b.0.contains("redirects") {
            "too_many_redirects"
        } else {
            "blocked_address"
        };
        return Failure::new(reason, b.0);
    }
    let detail = format!("{e}");
    if e.is_timeout() {
        Failure::new("timeout", detail)
    } else if e.is_connect() {
        Failure::new("connect_error", detail)
    } else {
        Failure::new("request_error", detail)
    }
}

async fn try_once(client: &Client, url: &Url, c: &FetchConfig) -> Result<Vec<u8>, Failure> {
    let mut resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(request_failure)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(Failure::new(
            format!("http_{}", status.as_u16()),
            status.to_string(),
        ));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("image/") {
        return Err(Failure::new(
            "not_image_content_type",
            format!("content-type {content_type:?}"),
        ));
    }
    let too_large = || Failure::new("too_large", format!("more than {} bytes", c.max_bytes));
    if resp.content_length().is_some_and(|n| n > c.max_bytes) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(request_failure)? {
        if body.len() as u64 + chunk.len() as u64 > c.max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
