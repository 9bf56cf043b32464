//! Server metrics in the Prometheus text format: requests by route and status, latency and
//! batch-size histograms, queue depth, errors by kind.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

struct Histogram {
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b);
        self.counts[i.unwrap_or(self.bounds.len())] += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {cum}", self.sum);
    }
}

pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram>,
    batch_rows: Mutex<Histogram>,
    batch_requests: Mutex<Histogram>,
    /// Caption requests waiting for the decoding worker.
    pub queue_depth: AtomicI64,
    pub captions: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
        Metrics {
            requests: Mutex::default(),
            errors: Mutex::default(),
            latency: Mutex::new(Histogram::new(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])),
            batch_rows: Mutex::new(Histogram::new(&sizes)),
            batch_requests: Mutex::new(Histogram::new(&sizes)),
            queue_depth: AtomicI64::new(0),
            captions: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        *lock(&self.requests)
            .entry((route.to_string(), status))
            .or_default() += 1;
        if route == "/v1/captions" {
            lock(&self.latency).observe(seconds);
        }
    }

    pub fn error(&self, kind: &str) {
        *lock(&self.errors).entry(kind.to_string()).or_default() += 1;
    }

    pub fn batch(&self, requests: usize, rows: usize) {
        lock(&self.batch_requests).observe(requests as f64);
        lock(&self.batch_rows).observe(rows as f64);
        self.captions.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP stylecap_requests_total HTTP requests by route and status.\n");
        s.push_str("# TYPE stylecap_requests_total counter\n");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                s,
                "stylecap_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        s.push_str("# HELP stylecap_errors_total Failed requests by error code.\n");
        s.push_str("# TYPE stylecap_errors_total counter\n");
        for (kind, n) in lock(&self.errors).iter() {
            let _ = writeln!(s, "stylecap_errors_total{{kind=\"{kind}\"}} {n}");
        }
        lock(&self.latency).render(
            &mut s,
            "stylecap_request_duration_seconds",
            "Latency of POST /v1/captions.",
        );
        lock(&self.batch_rows).render(
            &mut s,
            "stylecap_batch_rows",
            "Captions decoded together per batch.",
        );
        lock(&self.batch_requests).render(
            &mut s,
            "stylecap_batch_requests",
            "Requests decoded together per batch.",
        );
        let _ = writeln!(
            s,
            "# HELP stylecap_queue_depth Caption requests waiting for the decoder.\n# TYPE stylecap_queue_depth gauge\nstylecap_queue_depth {}",
            self.queue_depth.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP stylecap_captions_total Captions generated.\n# TYPE stylecap_captions_total counter\nstylecap_captions_total {}",
            self.captions.load(Ordering::Relaxed)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        for v in [0.001, 0.02, 0.02, 50.0] {
            m.request("/v1/captions", 200, v);
        }
        let text = m.render();
        assert!(text.contains("stylecap_request_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("stylecap_request_duration_seconds_bucket{le=\"0.025\"} 3"));
        assert!(text.contains("stylecap_request_duration_seconds_bucket{le=\"30\"} 3"));
        assert!(text.contains("stylecap_request_duration_seconds_bucket{le=\"+Inf\"} 4"));
        assert!(text.contains("stylecap_requests_total{route=\"/v1/captions\",status=\"200\"} 4"));
    }
}
