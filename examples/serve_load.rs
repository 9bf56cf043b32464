//! Load benchmark for `stylecap serve` (not a test): N concurrent clients post captions for
//! S seconds; prints requests/s, latency percentiles, status counts, the server's mean batch
//! size and its resident memory over the run (from /proc). With SLOW_CLIENTS, that many more
//! connections send a caption request's body at one byte per second the whole time (and
//! reconnect when the server cuts them), as clients on a hopeless link or an attacker would.
//!
//!     cargo run --release --example serve_load -- URL IMAGE [CLIENTS] [SECONDS] [SERVER_PID] [SLOW_CLIENTS]
//!
//! tools/serve_load.sh starts the server with batching on and off and runs this against each.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

fn rss_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A connection that sent a caption request's headers (a 100 kB body declared) and will send
/// its body a byte at a time.
fn slow_connection(addr: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(
        b"POST /v1/captions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n{",
    )
    .ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Keeps `n` slow senders connected until `stop`: one byte per connection per second; a
/// connection the server answered or closed is counted (`answered_408`, `cut`) and replaced.
fn slow_senders(
    addr: String,
    n: usize,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    cut: Arc<AtomicU64>,
) {
    let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| slow_connection(&addr)).collect();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        for c in conns.iter_mut() {
            let alive = match c {
                None => false,
                Some(s) => match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(k) => {
                        if buf[..k].starts_with(b"HTTP/1.1 408") {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        false
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => s.write_all(b" ").is_ok(),
                    Err(_) => false,
                },
            };
            if !alive {
                if c.is_some() {
                    cut.fetch_add(1, Ordering::Relaxed);
                }
                *c = slow_connection(&addr);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args.first().expect("URL").trim_end_matches('/').to_string();
    let image = std::fs::read(args.get(1).expect("IMAGE")).expect("read the image");
    let clients: usize = args.get(2).map_or(64, |a| a.parse().unwrap());
    let seconds: u64 = args.get(3).map_or(30, |a| a.parse().unwrap());
    let pid: Option<u32> = args.get(4).map(|a| a.parse().unwrap());
    let slow: usize = args.get(5).map_or(0, |a| a.parse().unwrap());
    let body = json!({
        "image": base64::engine::general_purpose::STANDARD.encode(&image),
        "styles": ["noir"],
        "n": 1,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let batch_sizes = Arc::new(Mutex::new(Vec::new()));
    let (answered_408, cut) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let slow_thread = (slow > 0).then(|| {
        let addr = url.trim_start_matches("http://").to_string();
        let (stop, a, c) = (stop.clone(), answered_408.clone(), cut.clone());
        let t = std::thread::spawn(move || slow_senders(addr, slow, stop, a, c));
        // Let them connect before the real clients start.
        std::thread::sleep(Duration::from_secs(1));
        t
    });
    let start = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, lat, st, bs, body, url) = (
                stop.clone(),
                latencies.clone(),
                statuses.clone(),
                batch_sizes.clone(),
                body.clone(),
                url.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (code, v) =
                        match client.post(format!("{url}/v1/captions")).json(&body).send() {
                            Ok(r) => {
                                let code = r.status().as_u16();
                                (code, r.json::<Value>().ok())
                            }
                            Err(_) => (0, None),
                        };
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    *st.lock().unwrap().entry(code).or_default() += 1;
                    if code == 200 {
                        lat.lock().unwrap().push(ms);
                        if let Some(n) = v.and_then(|v| v["batch"]["requests"].as_u64()) {
                            bs.lock().unwrap().push(n as f64);
                        }
                    } else if code == 503 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    let mut rss = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        if let Some(m) = pid.and_then(rss_mb) {
            rss.push(m);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let measured = start.elapsed().as_secs_f64();
    for w in workers {
        w.join().unwrap();
    }
    if let Some(t) = slow_thread {
        t.join().unwrap();
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let statuses = statuses.lock().unwrap().clone();
    let bs = batch_sizes.lock().unwrap();
    let server_errors: u64 = statuses
        .iter()
        .filter(|(c, _)| **c >= 500 && **c != 503 || **c == 0)
        .map(|(_, n)| n)
        .sum();
    let third = rss.len() / 3;
    let report = json!({
        "clients": clients,
        "slow_clients": slow,
        "slow_connections_answered_408": answered_408.load(Ordering::Relaxed),
        "slow_connections_closed": cut.load(Ordering::Relaxed),
        "seconds": measured,
        "ok": lat.len(),
        "requests_per_s": lat.len() as f64 / measured,
        "p50_ms": percentile(&lat, 0.5),
        "p99_ms": percentile(&lat, 0.99),
        "statuses": statuses,
        "server_errors_other_than_503": server_errors,
        "mean_batch_requests": bs.iter().sum::<f64>() / bs.len().max(1) as f64,
        "rss_mb_first_third_max": rss[..third].iter().copied().fold(f64::NAN, f64::max),
        "rss_mb_last_third_max": rss[rss.len() - third..].iter().copied().fold(f64::NAN, f64::max),
        "rss_mb_max": rss.iter().copied().fold(f64::NAN, f64::max),
        "rss_mb_every_10s": rss.iter().step_by(10).map(|m| (m * 10.0).round() / 10.0).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
