//! `stylecap data fetch` against a local HTTP server that serves good images, errors, slow
//! and redirecting responses, broken and hostile files and duplicates: the dataset holds
//! exactly the good unique images, the report counts each failure by reason, an interrupted
//! fetch resumes to the same dataset without fetching any URL twice, a server that dies
//! midway is retried by the rerun, a thin giant PNG costs bounded memory, local addresses
//! are refused unless allowed (proxies included), and out-of-range flags are refused.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::scratch;
use serde_json::Value;

fn encode(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// Picture `k`: random 8×6 blocks of grey levels, so different pictures have unrelated
/// perceptual hashes.
fn picture(k: u64) -> image::RgbImage {
    let mut s = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let blocks: Vec<u8> = (0..48).map(|_| (next() % 256) as u8).collect();
    image::RgbImage::from_fn(80, 60, |x, y| {
        let v = blocks[(y / 10 * 8 + x / 10) as usize];
        image::Rgb([v, v / 2 + 40, 255 - v])
    })
}

struct Server {
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    up: Arc<AtomicBool>,
}

/// A 1,562,500 × 32 black PNG: 50 million pixels (at the default pixel limit) in ~146 KB.
fn thin_giant_png() -> &'static [u8] {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| {
        encode(
            &image::RgbImage::new(1_562_500, 32),
            image::ImageFormat::Png,
        )
    })
}

fn respond(mut s: &TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

fn handle(stream: TcpStream, hits: Arc<Mutex<HashMap<String, usize>>>) {
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let count = {
        let mut m = hits.lock().unwrap();
        let c = m.entry(path.clone()).or_default();
        *c += 1;
        *c
    };
    let png = |k| encode(&picture(k), image::ImageFormat::Png);
    let ct = |v: &str| vec![("Content-Type", v.to_string())];
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let num = |s: &str| -> u64 { s.split('.').next().unwrap().parse().unwrap() };
    match parts.as_slice() {
        ["good", name] if name.ends_with(".jpg") => respond(
            &stream,
            "200 OK",
            &ct("image/jpeg"),
            &encode(&picture(num(name)), image::ImageFormat::Jpeg),
        ),
        ["good", name] => respond(&stream, "200 OK", &ct("image/png"), &png(num(name))),
        ["delay", name] => {
            std::thread::sleep(Duration::from_millis(80));
            respond(&stream, "200 OK", &ct("image/png"), &png(num(name)))
        }
        ["dup", _] => respond(&stream, "200 OK", &ct("image/png"), &png(0)),
        ["near", _] => {
            let mut img = picture(1);
            img.pixels_mut()
                .for_each(|p| p.0 = p.0.map(|v| v.saturating_add(5)));
            respond(
                &stream,
                "200 OK",
                &ct("image/jpeg"),
                &encode(&img, image::ImageFormat::Jpeg),
            )
        }
        ["flaky", k] if count == 1 => {
            let _ = k;
            respond(
                &stream,
                "503 Service Unavailable",
                &ct("text/plain"),
                b"busy",
            )
        }
        ["flaky", k] => respond(&stream, "200 OK", &ct("image/png"), &png(100 + num(k))),
        ["slow"] => {
            std::thread::sleep(Duration::from_secs(3));
            respond(&stream, "200 OK", &ct("image/png"), &png(7))
        }
        ["redirect", n] => {
            let n = num(n);
            let to = if n == 0 {
                "/good/50.png".to_string()
            } else {
                format!("/redirect/{}", n - 1)
            };
            respond(&stream, "302 Found", &[("Location", to)], b"")
        }
        ["truncated"] => {
            let j = encode(&picture(8), image::ImageFormat::Jpeg);
            respond(&stream, "200 OK", &ct("image/jpeg"), &j[..j.len() / 2])
        }
        ["page"] => respond(
            &stream,
            "200 OK",
            &ct("image/jpeg"),
            b"<html><body>not a picture</body></html>",
        ),
        ["text"] => respond(&stream, "200 OK", &ct("text/html"), b"<html></html>"),
        ["huge"] => respond(
            &stream,
            "200 OK",
            &ct("image/png"),
            &common::png_header_only(20000, 20000),
        ),
        ["giant"] => respond(&stream, "200 OK", &ct("image/png"), thin_giant_png()),
        ["big"] => respond(&stream, "200 OK", &ct("image/png"), &vec![7u8; 3 << 20]),
        ["tiny"] => respond(
            &stream,
            "200 OK",
            &ct("image/png"),
            &encode(&image::RgbImage::new(8, 8), image::ImageFormat::Png),
        ),
        _ => respond(&stream, "404 Not Found", &ct("text/plain"), b"no"),
    }
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server {
            port: listener.local_addr().unwrap().port(),
            hits: Arc::new(Mutex::new(HashMap::new())),
            up: Arc::new(AtomicBool::new(true)),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: TcpListener) {
        let (hits, up) = (self.hits.clone(), self.up.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if !up.load(Ordering::SeqCst) {
                    break; // closes the listener: connections are refused from now on
                }
                let h = hits.clone();
                std::thread::spawn(move || handle(stream, h));
            }
        });
    }

    /// The server dies: requests in progress finish, new connections are refused.
    fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Each connection wakes the accept loop; once it has closed the listener they fail.
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server comes back on the same port.
    fn restart(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.up.store(true, Ordering::SeqCst);
        self.serve(listener);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self) -> HashMap<String, usize> {
        self.hits.lock().unwrap().clone()
    }
}

fn fetch_command(list: &Path, out: &Path, extra: &[&str]) -> Command {
    fetch_sized(list, out, "32", extra)
}

fn fetch_sized(list: &Path, out: &Path, size: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stylecap"));
    c.args([
        "data",
        "fetch",
        "--quiet",
        "--size",
        size,
        "--timeout",
        "1",
        "--retries",
        "1",
    ])
    .args([
        "--backoff",
        "0.05",
        "--max-bytes",
        "1000000",
        "--shard-size",
        "4",
    ])
    .arg("--input")
    .arg(list)
    .arg("--out")
    .arg(out)
    .args(extra);
    c
}

fn read_report(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn only_good_unique_images_are_kept_and_every_drop_is_counted() {
    let server = Server::start();
    let dir = scratch("fetch", "mixed");
    let good = [
        "/good/0.png",
        "/good/1.png",
        "/good/2.png",
        "/good/3.png",
        "/good/4.png",
        "/good/5.png",
        "/good/6.jpg",
        "/redirect/2",
        "/flaky/1",
    ];
    let bad = [
        ("/dup/1", "duplicate"),
        ("/dup/2", "duplicate"),
        ("/near/1", "near_duplicate"),
        ("/missing", "http_404"),
        ("/slow", "timeout"),
        ("/redirect/9", "too_many_redirects"),
        ("/truncated", "decode_failed"),
        ("/page", "not_an_image"),
        ("/huge", "image_too_large"),
        ("/big", "too_large"),
        ("/text", "not_image_content_type"),
        ("/tiny", "image_too_small"),
    ];
    let mut tsv = String::from("url\tcaption\n");
    for (k, p) in good.iter().enumerate() {
        tsv.push_str(&format!(
            "{}\tA <b>good</b> picture &amp; number {k}\n",
            server.url(p)
        ));
    }
    for (p, _) in bad {
        tsv.push_str(&format!("{}\ta bad one\n", server.url(p)));
    }
    tsv.push_str("ftp://example.com/a.png\tnot over http\n");
    tsv.push_str(&format!("{}\t  <i></i> \n", server.url("/good/9.png")));
    tsv.push_str("\tno url on this row\n");
    let list = dir.join("list.tsv");
    std::fs::write(&list, tsv).unwrap();
    let out = dir.join("out");
    let o = fetch_command(&list, &out, &["--allow-private"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let manifest = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let lines: Vec<Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), good.len(), "{manifest}");
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(l["caption"], format!("A good picture & number {k}"));
        assert_eq!(l["url"], server.url(good[k]));
        let img = image::open(out.join(l["image"].as_str().unwrap())).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
    }
    let files = walk(&out.join("images"));
    assert_eq!(
        files.len(),
        good.len(),
        "only kept images stay on disk: {files:?}"
    );

    let report = read_report(&out);
    let mut want: HashMap<&str, u64> = HashMap::new();
    for (_, reason) in bad {
        *want.entry(reason).or_default() += 1;
    }
    want.insert("bad_scheme", 1);
    want.insert("caption_empty", 1);
    want.insert("malformed_row", 1);
    let got: HashMap<&str, u64> = report["dropped"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(got, want, "{report}");
    assert_eq!(report["kept"], good.len());
    let hits = server.hits();
    assert_eq!(hits["/flaky/1"], 2, "a 503 is retried once");
    assert_eq!(hits["/slow"], 2, "a timeout is retried once");
    assert_eq!(hits["/missing"], 1, "a 404 is not retried");
    assert!(
        !hits.contains_key("/good/9.png"),
        "an empty caption is dropped before fetching"
    );

    // Shard manifests cover the same records, with paths relative to shards/.
    let shard_lines: usize = walk(&out.join("shards"))
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum();
    assert_eq!(shard_lines, good.len());
    let first = std::fs::read_to_string(out.join("shards/00000.jsonl")).unwrap();
    let rel: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(out
        .join("shards")
        .join(rel["image"].as_str().unwrap())
        .is_file());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// Every file under `dir` (relative path → bytes), the fetch's own bookkeeping left out.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .filter(|p| !p.starts_with(dir.join(".fetch")))
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_interrupted_fetch_resumes_to_the_same_dataset_fetching_nothing_twice() {
    let server = Server::start();
    let dir = scratch("fetch", "resume");
    let mut jsonl = String::new();
    for k in 0..40 {
        jsonl.push_str(&serde_json::json!({"url": server.url(&format!("/delay/{k}.png")), "caption": format!("picture {k}")}).to_string());
        jsonl.push('\n');
    }
    let list = dir.join("list.jsonl");
    std::fs::write(&list, jsonl).unwrap();
    let args = ["--allow-private", "--parallel", "4"];

    let whole = dir.join("whole");
    assert!(fetch_command(&list, &whole, &args)
        .status()
        .unwrap()
        .success());
    let before = server.hits();
    assert!(before.values().all(|&n| n == 1));

    let cut = dir.join("cut");
    let child = fetch_command(&list, &cut, &args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let journal = cut.join(".fetch/journal.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&journal).map_or(0, |j| j.lines().count()) < 8 {
        assert!(Instant::now() < deadline, "the fetch did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert!(
        !o.status.success(),
        "an interrupted fetch does not report success"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("rerun the same command"));
    let journaled = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("decoding"))
        .count();
    assert!(journaled < 40, "stopped mid-way ({journaled} of 40 done)");
    assert!(!cut.join("report.json").exists());

    let o = fetch_command(&list, &cut, &args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        snapshot(&cut),
        snapshot(&whole),
        "same dataset as an uninterrupted run"
    );
    let after = server.hits();
    for (path, n) in &after {
        assert_eq!(
            n - before[path],
            1,
            "{path} fetched once by the interrupted run and its rerun"
        );
    }
    // A hard kill (no chance to finish anything) also resumes to the same dataset.
    let killed = dir.join("killed");
    let mut child = fetch_command(&list, &killed, &args).spawn().unwrap();
    let journal = killed.join(".fetch/journal.jsonl");
    while std::fs::read_to_string(&journal).map_or(0, |j| j.lines().count()) < 8 {
        assert!(Instant::now() < deadline, "the fetch did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("report.json").exists());
    assert!(fetch_command(&list, &killed, &args)
        .status()
        .unwrap()
        .success());
    let report = read_report(&killed);
    match report["dropped"]["decode_interrupted"].as_u64() {
        None => assert_eq!(snapshot(&killed), snapshot(&whole)),
        // A hard kill can land while an image is decoded: that record is dropped, since the
        // rerun cannot tell the kill from a crash that decoding it caused.
        Some(n) => {
            assert!(n <= 4, "{report}");
            assert_eq!(report["kept"].as_u64(), Some(40 - n), "{report}");
        }
    }
    let after = server.hits();

    // A third run finds the dataset complete and fetches nothing.
    assert!(fetch_command(&list, &cut, &args)
        .status()
        .unwrap()
        .success());
    assert_eq!(server.hits(), after);

    // Other output settings on the same folder are refused, not mixed in.
    let o = fetch_command(&list, &cut, &["--allow-private", "--format", "png"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("other output settings"));
}

#[test]
fn loopback_and_private_addresses_are_refused_without_the_flag() {
    let server = Server::start();
    let dir = scratch("fetch", "private");
    let list = dir.join("list.csv");
    std::fs::write(
        &list,
        format!(
            "caption,url\n\"by IP, quoted\",{}\nby name,http://localhost:{}/good/2.png\nmetadata,http://169.254.169.254/latest/meta-data\n",
            server.url("/good/1.png"),
            server.port
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let o = fetch_command(&list, &out, &[]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = read_report(&out);
    assert_eq!(report["kept"], 0);
    assert_eq!(report["dropped"]["blocked_address"], 3, "{report}");
    assert!(
        server.hits().is_empty(),
        "no request reached the local server"
    );
}

/// Journal lines of a fetch folder as JSON.
fn journal(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join(".fetch/journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_server_that_dies_midway_is_retried_by_the_rerun() {
    let server = Server::start();
    let dir = scratch("fetch", "outage");
    // Records 1 and 2 repeat record 0's image: downloaded, then removed as duplicates.
    let mut paths: Vec<String> = vec!["/good/0.png".into(), "/dup/1".into(), "/dup/2".into()];
    paths.extend((1..=30).map(|k| format!("/delay/{k}.png")));
    let mut jsonl = String::new();
    for (k, p) in paths.iter().enumerate() {
        jsonl.push_str(
            &serde_json::json!({"url": server.url(p), "caption": format!("picture {k}")})
                .to_string(),
        );
        jsonl.push('\n');
    }
    let list = dir.join("list.jsonl");
    std::fs::write(&list, jsonl).unwrap();
    let args = ["--allow-private", "--parallel", "2"];
    let whole = dir.join("whole");
    assert!(fetch_command(&list, &whole, &args)
        .status()
        .unwrap()
        .success());
    let whole_report = read_report(&whole);
    assert_eq!(whole_report["kept"], 31);
    assert_eq!(whole_report["still_failing"], 0);

    let cut = dir.join("cut");
    let child = fetch_command(&list, &cut, &args).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let kept: Vec<u64> = journal(&cut)
            .iter()
            .filter(|d| d.get("kept").is_some())
            .map(|d| d["i"].as_u64().unwrap())
            .collect();
        if kept.len() >= 6 && kept.contains(&1) && kept.contains(&2) {
            break;
        }
        assert!(Instant::now() < deadline, "the fetch did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.stop();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the run finishes with the failures counted"
    );
    let report = read_report(&cut);
    let failing = report["still_failing"].as_u64().unwrap();
    assert!(failing > 0, "{report}");
    assert_eq!(
        report["kept"].as_u64().unwrap() + failing,
        31,
        "every record is kept, a duplicate or still failing: {report}"
    );

    server.restart();
    let before = server.hits();
    let o = fetch_command(&list, &cut, &args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fetching again"));
    assert_eq!(
        snapshot(&cut),
        snapshot(&whole),
        "same dataset, report included, as a run the outage never touched"
    );
    let after = server.hits();
    let fetched_again: usize = paths
        .iter()
        .map(|p| after.get(p).unwrap_or(&0) - before.get(p).unwrap_or(&0))
        .sum();
    assert_eq!(
        fetched_again as u64, failing,
        "only the failed records are fetched"
    );
    for p in ["/good/0.png", "/dup/1", "/dup/2"] {
        assert_eq!(after[p], before[p], "{p} is not downloaded again");
    }

    // Complete now: another rerun fetches nothing.
    assert!(fetch_command(&list, &cut, &args)
        .status()
        .unwrap()
        .success());
    assert_eq!(server.hits(), after);
}

/// Runs a command to its end; its exit status and its peak resident memory in bytes.
fn run_measured(mut c: Command) -> (bool, u64) {
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // wait4 gives this child's own usage (RUSAGE_CHILDREN would mix in other tests' children).
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, usage.ru_maxrss as u64 * 1024)
}

#[test]
fn a_thin_giant_png_costs_bounded_memory_and_is_never_decoded_twice() {
    let server = Server::start();
    let dir = scratch("fetch", "giant");
    let list = dir.join("list.tsv");
    std::fs::write(
        &list,
        format!(
            "url\tcaption\n{}\ta picture\n{}\ta thin giant\n",
            server.url("/good/1.png"),
            server.url("/giant")
        ),
    )
    .unwrap();
    let limit = 1u64 << 30;

    // By default its shape is refused from the header, before decoding.
    let out = dir.join("default");
    let (ok, peak) = run_measured(fetch_sized(&list, &out, "224", &["--allow-private"]));
    assert!(ok);
    let report = read_report(&out);
    assert_eq!(report["kept"], 1);
    assert_eq!(report["dropped"]["image_too_large"], 1, "{report}");
    eprintln!("peak RSS, refused from the header: {} MB", peak >> 20);
    assert!(peak < limit, "peak RSS {} MB", peak >> 20);

    // Allowed, it is decoded (50 million pixels) and cropped before it is resized.
    let out = dir.join("decoded");
    let args = ["--allow-private", "--max-aspect-ratio", "100000"];
    let (ok, peak) = run_measured(fetch_sized(&list, &out, "224", &args));
    assert!(ok);
    assert_eq!(read_report(&out)["kept"], 2);
    eprintln!("peak RSS, decoded: {} MB", peak >> 20);
    assert!(peak < limit, "peak RSS {} MB", peak >> 20);

    // A run killed while decoding it leaves it "decoding" in the journal: the rerun drops
    // it and neither downloads nor decodes it again.
    let lines = journal(&out);
    let marker = lines
        .iter()
        .position(|d| d["i"] == 1 && d["decoding"] == true)
        .expect("the record is journalled before it is decoded");
    let cut: String = lines
        .iter()
        .enumerate()
        .filter(|(k, d)| d["i"] != 1 || *k <= marker)
        .map(|(_, d)| d.to_string() + "\n")
        .collect();
    std::fs::write(out.join(".fetch/journal.jsonl"), cut).unwrap();
    for f in ["report.json", "manifest.jsonl"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let before = server.hits();
    let (ok, _) = run_measured(fetch_sized(&list, &out, "224", &args));
    assert!(ok);
    let report = read_report(&out);
    assert_eq!(report["kept"], 1, "{report}");
    assert_eq!(report["dropped"]["decode_interrupted"], 1, "{report}");
    assert_eq!(server.hits(), before, "nothing is downloaded again");
}

#[test]
fn proxies_never_carry_a_request_past_the_address_guard() {
    let server = Server::start();
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.local_addr().unwrap().port());
    let reached = Arc::new(AtomicUsize::new(0));
    let r = reached.clone();
    let local = format!("http://localhost:{}/good/3.png", server.port);
    // A hostile proxy: it redirects every request to a local name.
    std::thread::spawn(move || {
        for stream in proxy.incoming().flatten() {
            r.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            respond(&stream, "302 Found", &[("Location", local.clone())], b"");
        }
    });
    let dir = scratch("fetch", "proxy");
    let by_name = dir.join("by-name.tsv");
    std::fs::write(
        &by_name,
        format!(
            "url\tcaption\nhttp://localhost:{}/good/2.png\tby name\n",
            server.port
        ),
    )
    .unwrap();
    let by_ip = dir.join("by-ip.tsv");
    std::fs::write(
        &by_ip,
        format!("url\tcaption\n{}\tby IP\n", server.url("/good/1.png")),
    )
    .unwrap();
    let with_env = |list: &Path, out: &str, extra: &[&str]| {
        let mut c = fetch_command(list, &dir.join(out), extra);
        for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            c.env(v, &proxy_url).env(v.to_lowercase(), &proxy_url);
        }
        c.env_remove("NO_PROXY").env_remove("no_proxy");
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_report(&dir.join(out))
    };

    // The environment's proxy is not used: a local name is refused by the guard...
    let report = with_env(&by_name, "env-name", &[]);
    assert_eq!(report["dropped"]["blocked_address"], 1, "{report}");
    // ...and an allowed local address is fetched directly.
    let report = with_env(&by_ip, "env-ip", &["--allow-private"]);
    assert_eq!(report["kept"], 1, "{report}");
    // An explicit proxy gets no local name either: names are resolved and checked first.
    let report = with_env(&by_name, "explicit", &["--proxy", &proxy_url]);
    assert_eq!(report["dropped"]["blocked_address"], 1, "{report}");

    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "no connection reached the proxy"
    );
    // A public address goes through the explicit proxy; its redirect to a local name is
    // checked like the name itself.
    let public = dir.join("public.tsv");
    std::fs::write(
        &public,
        "url\tcaption\nhttp://93.184.216.34/a.png\tpublic\n",
    )
    .unwrap();
    let report = with_env(&public, "redirected", &["--proxy", &proxy_url]);
    assert_eq!(report["dropped"]["blocked_address"], 1, "{report}");
    assert!(
        report.to_string().contains("localhost resolves to"),
        "{report}"
    );
    assert_eq!(reached.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.hits().into_iter().collect::<Vec<_>>(),
        [("/good/1.png".to_string(), 1)]
    );
}

#[test]
fn out_of_range_flags_are_refused_naming_the_flag() {
    let dir = scratch("fetch", "flags");
    let list = dir.join("list.tsv");
    std::fs::write(&list, "url\tcaption\nhttp://example.com/a.png\ta\n").unwrap();
    let out = dir.join("out");
    let synth = dir.join("synth");
    let fetch = |flag: &[&str]| {
        let mut a = vec!["data", "fetch", "--quiet", "--input"];
        a.push(list.to_str().unwrap());
        a.extend(["--out", out.to_str().unwrap()]);
        a.extend(flag);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let synth_args = ["data", "synth", "--size", "0", "--n", "2", "--out"];
    let mut synth_args: Vec<String> = synth_args.map(String::from).to_vec();
    synth_args.push(synth.display().to_string());
    // Each error names the flag and what it allows.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (synth_args, "--size (world.image_size) must be 1 to 4096"),
        (
            fetch(&["--timeout", "1e20"]),
            "--timeout must be 0.001 to 86400",
        ),
        (fetch(&["--backoff", "nan"]), "--backoff must be 0 to 3600"),
        (fetch(&["--backoff=-1"]), "--backoff must be 0 to 3600"),
        (
            fetch(&["--per-host-rps", "nan"]),
            "--per-host-rps must be 0 (no limit) or 0.001 to",
        ),
        (
            fetch(&["--per-host-rps", "1e-300"]),
            "--per-host-rps must be 0 (no limit) or 0.001 to",
        ),
        (fetch(&["--size", "0"]), "--size must be 1 to 4096"),
        (
            fetch(&["--resize", "keep", "--max-aspect-ratio", "500"]),
            "--max-aspect-ratio is 500 with --resize keep",
        ),
        (
            fetch(&["--proxy", "socks5://127.0.0.1:1"]),
            "--proxy must be an http:// or https:// URL",
        ),
    ];
    for (args, expected) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_stylecap"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(expected) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !out.exists() && !synth.join("images").exists(),
        "nothing was written"
    );
}
