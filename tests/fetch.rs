//! `stylecap data fetch` against a local HTTP server that serves good images, errors, slow
//! and redirecting responses, broken and hostile files and duplicates: the dataset holds
//! exactly the good unique images, the report counts each failure by reason, an interrupted
//! fetch resumes to the same dataset without fetching any URL twice, and local addresses are
//! refused unless allowed.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
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
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let h = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let h = h.clone();
                std::thread::spawn(move || handle(stream, h));
            }
        });
        Server { port, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self) -> HashMap<String, usize> {
        self.hits.lock().unwrap().clone()
    }
}

fn fetch_command(list: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stylecap"));
    c.args([
        "data",
        "fetch",
        "--quiet",
        "--size",
        "32",
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
    let journaled = std::fs::read_to_string(&journal).unwrap().lines().count();
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
    assert_eq!(snapshot(&killed), snapshot(&whole));
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
