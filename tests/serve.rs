//! `stylecap serve` as a client sees it: every endpoint, every kind of bad input answered
//! with the right 4xx while the server keeps serving, API keys, dynamic batching that does
//! not change a request's captions, overload (503), deadlines (504), slow clients (bodies,
//! headers) that take no queue places and are cut at their deadlines, graceful shutdown
//! bounded by its grace period, the decoding settings' ranges (shared with `caption`), and
//! the web page in a real browser.

mod common;

use std::io::{BufRead, BufReader, Cursor, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::browser::{chromium, Browser};
use reqwest::blocking::{multipart, Client};
use serde_json::{json, Value};

/// A captioner trained a few steps and a critic, shared by every test here.
fn model() -> &'static (PathBuf, PathBuf) {
    static MODEL: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    MODEL.get_or_init(|| common::tiny_base_and_critic("serve", 30))
}

const STYLES: [&str; 6] = [
    "factual", "gothic", "humorous", "noir", "romantic", "surreal",
];

struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let (run, critic) = model();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stylecap"))
            .args(["serve", "--addr", "127.0.0.1:0", "--model"])
            .arg(run)
            .arg("--critic")
            .arg(critic)
            .args(extra)
            .env_remove("STYLECAP_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("server exited: {}", log.lock().unwrap());
            };
            log.lock().unwrap().push_str(&line);
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        let l = log.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                l.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Server {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        // The log is complete once the server's stderr closes.
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 200]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, 90, (y * 4) as u8]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .unwrap();
    out
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn post_json(s: &Server, body: &Value) -> (u16, Value) {
    let r = client()
        .post(s.url("/v1/captions"))
        .json(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn expect_error(status: u16, body: &Value, want_status: u16, want_code: &str, what: &str) {
    assert_eq!(status, want_status, "{what}: {body}");
    assert_eq!(body["error"]["code"], want_code, "{what}: {body}");
    assert!(
        !body["error"]["message"].as_str().unwrap().is_empty(),
        "{what}: a message"
    );
}

#[test]
fn endpoints_answer_and_captions_come_in_every_style_asked() {
    let s = Server::start(&[]);
    let c = client();
    let health: Value = c.get(s.url("/healthz")).send().unwrap().json().unwrap();
    assert_eq!(health["status"], "ok");
    let styles: Value = c.get(s.url("/v1/styles")).send().unwrap().json().unwrap();
    assert_eq!(styles["styles"], json!(STYLES));
    let page = c.get(s.url("/")).send().unwrap().text().unwrap();
    assert!(page.contains("<form") && page.contains("/v1/captions"));
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "the page loads nothing from elsewhere"
    );

    // Multipart upload, two styles, two samples each.
    let form = multipart::Form::new()
        .part(
            "image",
            multipart::Part::bytes(png(40, 30)).file_name("a.png"),
        )
        .text("styles", "noir,gothic")
        .text("n", "2")
        .text("seed", "5");
    let r = c
        .post(s.url("/v1/captions"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    let caps = body["captions"].as_array().unwrap();
    let got: Vec<&str> = caps.iter().map(|c| c["style"].as_str().unwrap()).collect();
    assert_eq!(got, ["noir", "noir", "gothic", "gothic"]);
    for cap in caps {
        let p: f64 = cap["style_probs"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!(
            (p - 1.0).abs() < 1e-3,
            "critic probabilities sum to 1: {cap}"
        );
        assert!(cap["logprob"].as_f64().unwrap() < 0.0);
        assert!(cap["tokens"].as_u64().unwrap() >= 1);
    }
    assert!(body["timing"]["total_ms"].as_f64().unwrap() > 0.0);

    // JSON with a base64 JPEG; the same seed gives the same captions, greedy ignores it.
    let req = json!({"image": b64(&jpeg(33, 20)), "styles": ["humorous"], "seed": 11, "n": 3});
    let (st, a) = post_json(&s, &req);
    assert_eq!(st, 200, "{a}");
    let (_, b) = post_json(&s, &req);
    assert_eq!(a["captions"], b["captions"]);
    let greedy = |seed: u64| {
        let (st, v) = post_json(
            &s,
            &json!({"image": b64(&png(16, 16)), "greedy": true, "seed": seed}),
        );
        assert_eq!(st, 200, "{v}");
        v["captions"].clone()
    };
    let g = greedy(1);
    assert_eq!(
        g.as_array().unwrap().len(),
        6,
        "no styles given: every style"
    );
    assert_eq!(g, greedy(2));

    let metrics = c.get(s.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("stylecap_requests_total{route=\"/v1/captions\",status=\"200\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("stylecap_batch_rows_count 5"), "{metrics}");
    assert!(metrics.contains("stylecap_queue_depth 0"));
}

#[test]
fn bad_input_gets_the_right_4xx_and_the_server_keeps_serving() {
    let s = Server::start(&["--max-body-bytes", "200000", "--max-n", "4"]);
    let c = client();
    let jpg = jpeg(64, 48);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "not an image",
            b"just some text, not pixels".to_vec(),
            415,
            "unsupported_image",
        ),
        (
            "truncated JPEG",
            jpg[..jpg.len() / 2].to_vec(),
            400,
            "bad_image",
        ),
        (
            "20000x20000 PNG header",
            common::png_header_only(20000, 20000),
            413,
            "image_too_large",
        ),
        (
            // Within the pixel limit, but resizing it would take gigabytes.
            "1x24000000 PNG header",
            common::png_header_only(1, 24_000_000),
            400,
            "image_too_thin",
        ),
    ];
    for (what, bytes, status, code) in cases {
        let form = multipart::Form::new()
            .part("image", multipart::Part::bytes(bytes).file_name("x"))
            .text("styles", "noir");
        let r = c
            .post(s.url("/v1/captions"))
            .multipart(form)
            .send()
            .unwrap();
        let st = r.status().as_u16();
        expect_error(st, &r.json().unwrap(), status, code, what);
    }
    let image = b64(&png(20, 20));
    let json_cases = [
        (
            "unknown style",
            json!({"image": image, "styles": ["baroque"]}),
            400,
            "unknown_style",
        ),
        (
            "n too large",
            json!({"image": image, "n": 5}),
            400,
            "invalid_n",
        ),
        (
            "unknown field",
            json!({"image": image, "stlyes": ["noir"]}),
            400,
            "malformed_json",
        ),
        (
            "no image",
            json!({"styles": ["noir"]}),
            400,
            "missing_image",
        ),
        ("bad base64", json!({"image": "@@@"}), 400, "bad_base64"),
        (
            "bad top_p",
            json!({"image": image, "top_p": 1.5}),
            400,
            "invalid_top_p",
        ),
    ];
    for (what, body, status, code) in json_cases {
        let (st, v) = post_json(&s, &body);
        expect_error(st, &v, status, code, what);
    }
    let raw = |body: Vec<u8>, ct: &str| {
        let r = c
            .post(s.url("/v1/captions"))
            .header("content-type", ct)
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (st, v) = raw(b"{\"image\": \"abc\", ".to_vec(), "application/json");
    expect_error(st, &v, 400, "malformed_json", "malformed JSON");
    let (st, v) = raw(vec![b'x'; 300_000], "application/json");
    expect_error(st, &v, 413, "body_too_large", "oversize body");
    let (st, v) = raw(b"hello".to_vec(), "text/plain");
    expect_error(st, &v, 415, "unsupported_media_type", "text body");
    let r = c.get(s.url("/v2/nothing")).send().unwrap();
    assert_eq!(r.status(), 404);

    // Still serving, and the errors were counted by kind.
    let (st, v) = post_json(&s, &json!({"image": image, "styles": ["noir"]}));
    assert_eq!(st, 200, "{v}");
    let metrics = c.get(s.url("/metrics")).send().unwrap().text().unwrap();
    for kind in [
        "image_too_large",
        "bad_image",
        "unknown_style",
        "body_too_large",
    ] {
        assert!(
            metrics.contains(&format!("stylecap_errors_total{{kind=\"{kind}\"}} 1")),
            "{kind}: {metrics}"
        );
    }
}

#[test]
fn api_key_is_required_where_set_and_off_loopback() {
    let (run, _) = model();
    let o = Command::new(env!("CARGO_BIN_EXE_stylecap"))
        .args(["serve", "--addr", "0.0.0.0:0", "--model"])
        .arg(run)
        .env_remove("STYLECAP_API_KEY")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("requires --api-key"));

    let s = Server::start(&["--api-key", "correct-horse-battery"]);
    let c = client();
    let body = json!({"image": b64(&png(20, 20)), "styles": ["noir"]});
    for key in [
        None,
        Some("wrong-horse-battery"),
        Some("correct-horse-batter"),
    ] {
        let mut r = c.post(s.url("/v1/captions")).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let r = r.send().unwrap();
        assert_eq!(r.status(), 401, "{key:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "unauthorized");
    }
    assert_eq!(c.get(s.url("/metrics")).send().unwrap().status(), 401);
    assert_eq!(c.get(s.url("/healthz")).send().unwrap().status(), 200);
    let r = c
        .post(s.url("/v1/captions"))
        .bearer_auth("correct-horse-battery")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn concurrent_requests_share_batches_without_changing_their_captions() {
    let s = Server::start(&["--batch-wait-ms", "150"]);
    let request = |i: u64| {
        json!({"image": b64(&png(20 + i as u32, 24)), "styles": ["noir", "surreal"],
               "n": 2, "seed": i, "temperature": 1.0})
    };
    let together: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let s = &s;
                scope.spawn(move || post_json(s, &request(i)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (st, v) = h.join().unwrap();
                assert_eq!(st, 200, "{v}");
                v
            })
            .collect()
    });
    let most = together
        .iter()
        .map(|v| v["batch"]["requests"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(most >= 2, "concurrent requests were batched together");
    for (i, v) in together.iter().enumerate() {
        let (_, alone) = post_json(&s, &request(i as u64));
        assert_eq!(alone["batch"]["requests"], 1);
        same_captions(&alone["captions"], &v["captions"], i);
    }
}

/// The same captions (texts, tokens, styles) with the same scores. The scores are compared to
/// 1e-5 relative: a batch of another size takes other paths through the multi-threaded matrix
/// products (blocking, edge kernels), which sum in another order, as in any BLAS.
fn same_captions(a: &Value, b: &Value, request: usize) {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len(), "request {request}");
    let close = |x: &Value, y: &Value| {
        let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
        (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1.0)
    };
    for (x, y) in a.iter().zip(b) {
        for key in ["text", "tokens", "style"] {
            assert_eq!(x[key], y[key], "request {request}: {key}");
        }
        assert!(
            close(&x["logprob"], &y["logprob"]),
            "request {request}: {x} vs {y}"
        );
        let probs = x["style_probs"].as_object().unwrap();
        assert_eq!(probs.len(), y["style_probs"].as_object().unwrap().len());
        for (style, p) in probs {
            assert!(
                close(p, &y["style_probs"][style]),
                "request {request}: {style}"
            );
        }
    }
}

#[test]
fn overload_is_503_with_retry_after_and_slow_requests_are_504() {
    let s = Server::start(&["--queue", "1", "--batch-wait-ms", "400"]);
    let body = json!({"image": b64(&png(20, 20)), "styles": ["noir"]});
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let r = client()
                        .post(s.url("/v1/captions"))
                        .json(&body)
                        .send()
                        .unwrap();
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (r.status().as_u16(), retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().any(|(s, _)| *s == 200), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .any(|(s, r)| *s == 503 && r.as_deref() == Some("1")),
        "{statuses:?}"
    );
    assert_eq!(
        post_json(&s, &body).0,
        200,
        "serving again once the queue drains"
    );

    let slow = Server::start(&["--timeout-ms", "100", "--batch-wait-ms", "600"]);
    let (st, v) = post_json(&slow, &body);
    expect_error(st, &v, 504, "timeout", "past the deadline");
}

#[test]
fn shutdown_answers_requests_already_admitted() {
    let mut s = Server::start(&["--batch-wait-ms", "800"]);
    let body = json!({"image": b64(&png(20, 20)), "styles": ["gothic"]});
    let answer = std::thread::scope(|scope| {
        let h = scope.spawn(|| post_json(&s, &body));
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
        h.join().unwrap()
    });
    assert_eq!(answer.0, 200, "{}", answer.1);
    let status = s.terminate();
    assert!(status.success(), "{}", s.log.lock().unwrap());
    assert!(s.log.lock().unwrap().contains("stopped"));
}

#[test]
fn the_web_page_uploads_an_image_and_shows_captions_in_each_chosen_style() {
    let Some(chrome) = chromium() else { return };
    let s = Server::start(&[]);
    let dir = common::scratch("serve", "browser");
    let image = dir.join("upload.png");
    std::fs::write(&image, png(48, 48)).unwrap();
    let mut b = Browser::open(&chrome, &s.url("/"));
    b.wait_for(
        "document.querySelectorAll('input[name=style]').length",
        Duration::from_secs(20),
    );
    b.set_file("#image", &image);
    // Choose two styles, as a user ticking boxes would.
    b.eval(
        "for (const c of document.querySelectorAll('input[name=style]')) \
           c.checked = (c.value === 'noir' || c.value === 'romantic'); true",
    );
    // And the repetition limits.
    b.eval(
        "document.getElementById('repetition_penalty').value = '1.5'; \
         document.getElementById('no_repeat_ngram_size').value = '3'; true",
    );
    b.eval("document.getElementById('n').value = '2'; document.getElementById('go').click(); true");
    let shown = b.wait_for(
        "[...document.querySelectorAll('#results .caption')].map(d => \
           [d.dataset.style, d.querySelector('.text').textContent])",
        Duration::from_secs(30),
    );
    let shown = shown.as_array().unwrap();
    let styles: Vec<&str> = shown.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(styles, ["noir", "noir", "romantic", "romantic"]);
    assert!(
        shown.iter().all(|r| !r[1].as_str().unwrap().is_empty()),
        "{shown:?}"
    );
    assert_eq!(b.eval("document.getElementById('error').textContent"), "");
    // The server decoded with the limits the page sent (the answer's `decoding` echoes them).
    assert_eq!(
        b.eval("document.getElementById('limits').textContent"),
        "; repetition penalty 1.50, no repeated 3-gram"
    );
    b.screenshot(&dir.join("page.png"));
    assert!(std::fs::metadata(dir.join("page.png")).unwrap().len() > 1000);
}

/// A raw connection that sent a caption request's headers (declaring a 100 kB JSON body) and
/// the body's first byte; [`drip`] sends the rest a byte at a time.
fn slow_body(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        b"POST /v1/captions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n{",
    )
    .unwrap();
    s
}

/// A raw connection that sent half a request's headers (slowloris).
fn slow_headers(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /v1/captions HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s
}

/// Sends one more byte on every connection each second until `stop`, as a client on a very
/// slow link would (write errors on connections the server closed are ignored).
fn drip(conns: &[TcpStream], stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        for mut c in conns {
            let _ = c.write_all(b" ");
        }
        for _ in 0..10 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What the server sent on `conn` before closing it, waiting at most `wait`; None when it
/// was still open then.
fn read_until_closed(conn: &mut TcpStream, wait: Duration) -> Option<String> {
    conn.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn slow_bodies_take_no_queue_places_and_are_cut_at_the_body_deadline() {
    let s = Server::start(&["--body-timeout-ms", "2500"]);
    let stop = AtomicBool::new(false);
    // More slow senders than queue places (64).
    let mut slow: Vec<TcpStream> = (0..80).map(|_| slow_body(s.addr)).collect();
    std::thread::scope(|scope| {
        scope.spawn(|| drip(&slow, &stop));
        std::thread::sleep(Duration::from_millis(300));
        let body = json!({"image": b64(&png(20, 20)), "styles": ["noir"]});
        for i in 0..3 {
            let (st, v) = post_json(&s, &body);
            assert_eq!(st, 200, "request {i} with 80 slow senders connected: {v}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    for (i, c) in slow.iter_mut().enumerate().take(5) {
        let answer = read_until_closed(c, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("slow sender {i} still connected after the deadline"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
    }
}

#[test]
fn connections_that_never_finish_their_headers_are_closed_and_connections_are_bounded() {
    let s = Server::start(&["--header-timeout-ms", "600", "--max-connections", "20"]);
    let start = Instant::now();
    let mut loris: Vec<TcpStream> = (0..20).map(|_| slow_headers(s.addr)).collect();
    // Every slot is taken: a real request waits until the header deadline frees them.
    let (st, v) = post_json(&s, &json!({"image": b64(&png(20, 20)), "greedy": true}));
    assert_eq!(st, 200, "{v}");
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "served at {:?}, before any slot was free",
        start.elapsed()
    );
    for (i, c) in loris.iter_mut().enumerate() {
        assert!(
            read_until_closed(c, Duration::from_secs(3)).is_some(),
            "connection {i} still open {:?} after it connected",
            start.elapsed()
        );
    }
}

#[test]
fn sigterm_stops_within_the_grace_period_whatever_clients_remain() {
    let mut s = Server::start(&[
        "--shutdown-grace-ms",
        "1000",
        "--body-timeout-ms",
        "60000",
        "--header-timeout-ms",
        "60000",
    ]);
    let stop = AtomicBool::new(false);
    let slow: Vec<TcpStream> = (0..5)
        .map(|_| slow_body(s.addr))
        .chain((0..3).map(|_| slow_headers(s.addr)))
        .collect();
    let took = std::thread::scope(|scope| {
        scope.spawn(|| drip(&slow, &stop));
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let status = s.terminate();
        stop.store(true, Ordering::Relaxed);
        assert!(status.success(), "{}", s.log.lock().unwrap());
        t.elapsed()
    });
    assert!(
        took < Duration::from_millis(1000 + 1500),
        "exited {took:?} after SIGTERM with a 1 s grace period: {}",
        s.log.lock().unwrap()
    );
    assert!(s.log.lock().unwrap().contains("stopped"));
}

#[test]
fn two_image_parts_in_one_form_are_refused() {
    let s = Server::start(&[]);
    let form = multipart::Form::new()
        .part(
            "image",
            multipart::Part::bytes(png(20, 20)).file_name("a.png"),
        )
        .part(
            "image",
            multipart::Part::bytes(png(30, 30)).file_name("b.png"),
        );
    let r = client()
        .post(s.url("/v1/captions"))
        .multipart(form)
        .send()
        .unwrap();
    let st = r.status().as_u16();
    let v: Value = r.json().unwrap();
    expect_error(st, &v, 400, "duplicate_field", "two images");
    assert!(v["error"]["message"].as_str().unwrap().contains("`image`"));
}

#[test]
fn blank_or_short_api_keys_are_refused_at_startup() {
    let (run, _) = model();
    for (key, says) in [
        ("        ", "--api-key is blank"),
        ("short-key-12345", "at least 16"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_stylecap"))
            .args(["serve", "--addr", "0.0.0.0:0", "--api-key", key, "--model"])
            .arg(run)
            .env_remove("STYLECAP_API_KEY")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{key:?} accepted");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{key:?}: {err}"
        );
    }
}

#[test]
fn the_server_and_caption_sample_the_same_caption_for_one_picture_and_seed() {
    let (run, _) = model();
    let s = Server::start(&[]);
    let dir = common::scratch("serve", "same-sampler");
    let image = dir.join("a.png");
    std::fs::write(&image, png(32, 32)).unwrap();
    for seed in [3, 4] {
        let body = json!({"image": b64(&png(32, 32)), "styles": ["noir"], "seed": seed,
                          "temperature": 1.0, "top_p": 0.9});
        let (st, v) = post_json(&s, &body);
        assert_eq!(st, 200, "{v}");
        let served = v["captions"][0]["text"].as_str().unwrap().to_string();
        let o = Command::new(env!("CARGO_BIN_EXE_stylecap"))
            .args(["caption", "--model"])
            .arg(run.join("model"))
            .arg("--image")
            .arg(&image)
            .args([
                "--style",
                "noir",
                "--temperature",
                "1",
                "--top-p",
                "0.9",
                "--seed",
            ])
            .arg(seed.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8(o.stdout).unwrap().trim_end(),
            served,
            "seed {seed}"
        );
    }
}

/// A caption as shown: text without control characters or replacement characters.
fn assert_clean_caption(text: &str, what: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() || c == '\u{FFFD}'),
        "{what}: {text:?}"
    );
}

#[test]
fn decoding_settings_out_of_range_are_refused_by_the_cli_and_the_server() {
    let (run, _) = model();
    let dir = common::scratch("serve", "settings");
    let image = dir.join("a.png");
    std::fs::write(&image, png(32, 32)).unwrap();
    let caption = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stylecap"))
            .args(["caption", "--model"])
            .arg(run.join("model"))
            .arg("--image")
            .arg(&image)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused: &[(&[&str], &str)] = &[
        (
            &["--beams", "100000"],
            "--beams is 100000; it must be 1 to 16",
        ),
        (&["--beams", "0"], "--beams is 0; it must be 1 to 16"),
        (&["--beams=-1"], "--beams is -1"),
        (
            &["--temperature", "nan"],
            "--temperature is NaN; it must be 0.01 to 10",
        ),
        (&["--temperature=-1"], "--temperature is -1.0"),
        (&["--temperature", "1e-45"], "--temperature is 1e-45"),
        (&["--temperature", "0"], "--temperature is 0.0"),
        (
            &["--top-p", "2"],
            "--top-p is 2.0; it must be above 0 and at most 1",
        ),
        (&["--top-p", "nan"], "--top-p is NaN"),
        (&["--top-p", "0"], "--top-p is 0.0"),
        (&["--top-k", "0"], "--top-k is 0; it must be 1 to 300"),
        (
            &["--max-new-tokens", "0"],
            "--max-new-tokens is 0; it must be 1 to",
        ),
        (
            &["--max-new-tokens", "100000"],
            "--max-new-tokens is 100000",
        ),
        (
            &["--repetition-penalty", "0.5"],
            "--repetition-penalty is 0.5; it must be 1 (off) to 10",
        ),
        (
            &["--repetition-penalty", "nan"],
            "--repetition-penalty is NaN",
        ),
        (
            &["--no-repeat-ngram-size", "100000"],
            "--no-repeat-ngram-size is 100000; it must be 0 (off) to",
        ),
    ];
    for (args, says) in refused {
        let o = caption(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked at"), "{args:?}: {err}");
    }
    let accepted: &[&[&str]] = &[
        &["--temperature", "0.01"],
        &["--temperature", "10", "--seed", "3"],
        &["--top-p", "1"],
        &["--top-p", "0.001"],
        &["--top-k", "1"],
        &["--top-k", "300", "--temperature", "10"],
        &["--beams", "1"],
        &["--beams", "16"],
        &["--max-new-tokens", "1"],
        &["--max-new-tokens", "62"],
        &["--repetition-penalty", "1.3", "--no-repeat-ngram-size", "2"],
        &["--beams", "3", "--no-repeat-ngram-size", "1"],
        &["--repetition-penalty", "1", "--no-repeat-ngram-size", "0"],
        &["--temperature", "1", "--repetition-penalty", "10"],
    ];
    for args in accepted {
        let o = caption(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8(o.stdout).expect("UTF-8 output");
        assert_clean_caption(out.trim_end_matches('\n'), &format!("{args:?}"));
    }

    let s = Server::start(&[]);
    let image = b64(&png(20, 20));
    let json_refused = [
        (
            json!({"temperature": 1e-45}),
            "invalid_temperature",
            "`temperature` is 1e-45",
        ),
        (
            json!({"temperature": -1}),
            "invalid_temperature",
            "`temperature` is -1.0",
        ),
        (
            json!({"temperature": 0}),
            "invalid_temperature",
            "it must be 0.01 to 10",
        ),
        (
            json!({"temperature": 11}),
            "invalid_temperature",
            "`temperature` is 11.0",
        ),
        (json!({"top_p": 2}), "invalid_top_p", "`top_p` is 2.0"),
        (
            json!({"top_p": 0}),
            "invalid_top_p",
            "above 0 and at most 1",
        ),
        (json!({"n": 0}), "invalid_n", "`n` is 0; it must be 1 to 8"),
        (json!({"n": -1}), "invalid_n", "`n` is -1"),
        (json!({"n": 100000}), "invalid_n", "`n` is 100000"),
        (
            json!({"max_new_tokens": 0}),
            "invalid_max_new_tokens",
            "`max_new_tokens` is 0",
        ),
        (
            json!({"max_new_tokens": -5}),
            "invalid_max_new_tokens",
            "it must be 1 to",
        ),
        (
            json!({"max_new_tokens": 100000}),
            "invalid_max_new_tokens",
            "is 100000",
        ),
        (
            json!({"repetition_penalty": 0.5}),
            "invalid_repetition_penalty",
            "`repetition_penalty` is 0.5; it must be 1 (off) to 10",
        ),
        (
            json!({"no_repeat_ngram_size": 100000}),
            "invalid_no_repeat_ngram_size",
            "`no_repeat_ngram_size` is 100000; it must be 0 (off) to",
        ),
    ];
    for (mut body, code, says) in json_refused {
        body["image"] = json!(image);
        let (st, v) = post_json(&s, &body);
        expect_error(st, &v, 400, code, &body.to_string());
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    // JSON has no NaN: a form can send it.
    for (field, value) in [
        ("temperature", "nan"),
        ("top_p", "NaN"),
        ("n", "-3"),
        ("repetition_penalty", "nan"),
        ("no_repeat_ngram_size", "-1"),
    ] {
        let form = multipart::Form::new()
            .part(
                "image",
                multipart::Part::bytes(png(20, 20)).file_name("a.png"),
            )
            .text(field, value);
        let r = client()
            .post(s.url("/v1/captions"))
            .multipart(form)
            .send()
            .unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().unwrap();
        expect_error(st, &v, 400, &format!("invalid_{field}"), field);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("`{field}`")));
    }
    let cap: Value = client()
        .get(s.url("/v1/styles"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let cap = cap["limits"]["max_new_tokens"].as_u64().unwrap();
    let json_accepted = [
        json!({"temperature": 0.01}),
        json!({"temperature": 10, "seed": 3}),
        json!({"top_p": 1}),
        json!({"top_p": 0.001}),
        json!({"n": 8, "styles": ["noir"]}),
        json!({"max_new_tokens": 1}),
        json!({"max_new_tokens": cap, "temperature": 10}),
        json!({"repetition_penalty": 10, "no_repeat_ngram_size": 1, "greedy": true}),
        json!({"repetition_penalty": 1.2, "no_repeat_ngram_size": cap}),
        json!({"repetition_penalty": 1, "no_repeat_ngram_size": 0}),
    ];
    for mut body in json_accepted {
        body["image"] = json!(image);
        let (st, v) = post_json(&s, &body);
        assert_eq!(st, 200, "{body}: {v}");
        // The answer echoes the limits it decoded with (off where not asked).
        for (field, off) in [("repetition_penalty", 1.0), ("no_repeat_ngram_size", 0.0)] {
            let want = body.get(field).and_then(Value::as_f64).unwrap_or(off);
            let got = v["decoding"][field].as_f64().unwrap();
            // An f32 setting, echoed as an f64.
            assert!((got - want).abs() < 1e-6, "{field} {got} for {want}: {v}");
        }
        for c in v["captions"].as_array().unwrap() {
            assert_clean_caption(c["text"].as_str().unwrap(), &body.to_string());
        }
    }
}

/// Resident and peak resident memory of a process, in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let line = s.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn memory_returns_near_idle_after_concurrent_large_uploads() {
    let s = Server::start(&[]);
    let (st, v) = post_json(&s, &json!({"image": b64(&png(20, 20)), "greedy": true}));
    assert_eq!(st, 200, "{v}");
    let (idle, _) = rss_mb(s.child.id());
    // 25 megapixels, the default limit: 75 MB once decoded, under 0.5 MB as a PNG.
    let big = png(5000, 5000);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let form = multipart::Form::new()
                    .part(
                        "image",
                        multipart::Part::bytes(big.clone()).file_name("big.png"),
                    )
                    .text("greedy", "true");
                let r = client()
                    .post(s.url("/v1/captions"))
                    .multipart(form)
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
            });
        }
    });
    let (after, peak) = rss_mb(s.child.id());
    let figures = format!("idle {idle:.1} MB, after {after:.1} MB, peak {peak:.1} MB");
    eprintln!("8 concurrent 25-megapixel uploads: {figures}");
    // Two decodes at once (75 MB each) bound the peak; all eight at once would pass 600 MB.
    assert!(peak < idle + 350.0, "{figures}");
    assert!(after < idle + 100.0, "{figures}");
}
