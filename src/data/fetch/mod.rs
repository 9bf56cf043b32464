//! `stylecap data fetch`: an image–caption dataset from a list of URLs with captions (the
//! way CC3M, CC12M or LAION are assembled), in the project's own layout:
//! `images/SHARD/INDEX.jpg`, `manifest.jsonl` (every kept record), `shards/SHARD.jsonl`
//! (the same per image folder) and `report.json` (every dropped record counted by reason).
//!
//! Downloads run concurrently (tokio), decoding and resizing on the blocking pool. Each
//! finished record is appended to a journal, so a rerun continues where a run stopped and
//! downloads nothing twice. Duplicates are removed after all downloads, in input order, so
//! the dataset does not depend on download order or interruptions. File names come from the
//! record's index only; nothing in a URL or caption reaches a path.

pub mod clean;
pub mod config;
pub mod dedup;
pub mod download;
pub mod input;
pub mod journal;
pub mod process;
pub mod safety;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::util::{read_json, write_atomic, write_json};
use clean::clean_caption;
use config::FetchConfig;
use dedup::{Deduper, Duplicate, MAX_NEAR_BITS};
use download::{client, download, Failure, HostPacer};
use input::{read_list, Entry};
use journal::{Done, Journal, Kept};
use process::process;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FetchReport {
    pub input: PathBuf,
    /// Rows in the list (readable or not).
    pub records: usize,
    pub kept: usize,
    /// Dropped records by reason (`malformed_row`, `http_404`, `timeout`, `duplicate`, ...).
    pub dropped: BTreeMap<String, usize>,
    /// Up to three examples per reason: list line, URL and details.
    pub examples: BTreeMap<String, Vec<serde_json::Value>>,
    pub shards: usize,
    pub settings: FetchConfig,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct State {
    input_sha256: String,
    settings: serde_json::Value,
}

fn validate(c: &FetchConfig) -> Result<()> {
    ensure!(c.parallel >= 1, "--parallel must be at least 1");
    ensure!(c.size >= 1, "--size must be at least 1");
    ensure!(c.shard_size >= 1, "--shard-size must be at least 1");
    ensure!(c.timeout_s > 0.0, "--timeout must be positive");
    ensure!(
        c.near_duplicate_bits <= MAX_NEAR_BITS,
        "--near-duplicate-bits is at most {MAX_NEAR_BITS}"
    );
    ensure!(
        (1..=100).contains(&c.jpeg_quality),
        "--jpeg-quality is 1 to 100"
    );
    Ok(())
}

fn image_path(i: usize, c: &FetchConfig) -> String {
    format!(
        "images/{:05}/{i:09}.{}",
        i / c.shard_size,
        c.format.extension()
    )
}

/// Checks that need no network: caption filters, URL syntax and scheme.
fn precheck(e: &Entry, c: &FetchConfig) -> Result<(String, reqwest::Url), Failure> {
    let caption = clean_caption(&e.caption);
    let words = caption.split_whitespace().count();
    if words == 0 {
        return Err(Failure::new("caption_empty", "no caption after cleaning"));
    }
    if words < c.min_caption_words {
        return Err(Failure::new("caption_too_short", format!("{words} words")));
    }
    if caption.chars().count() > c.max_caption_chars {
        return Err(Failure::new(
            "caption_too_long",
            format!("over {} characters", c.max_caption_chars),
        ));
    }
    let url = reqwest::Url::parse(e.url.trim())
        .map_err(|err| Failure::new("invalid_url", format!("{err}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Failure::new(
            "bad_scheme",
            format!("scheme {:?} (http and https only)", url.scheme()),
        ));
    }
    Ok((caption, url))
}

fn failed(i: usize, f: Failure) -> Done {
    Done {
        i,
        kept: None,
        reason: Some(f.reason),
        detail: Some(f.detail),
    }
}

pub fn run(input: &Path, out: &Path, c: FetchConfig, show_progress: bool) -> Result<FetchReport> {
    validate(&c)?;
    let started = Instant::now();
    let (entries, bad_rows) = read_list(input, &c.url_col, &c.caption_col)?;
    let work = out.join(".fetch");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let state = State {
        input_sha256: Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        settings: c.output_settings(),
    };
    let state_path = work.join("state.json");
    if state_path.is_file() {
        let before: State = read_json(&state_path)?;
        if before != state {
            bail!(
                "{} was fetched from another list or with other output settings ({}); \
                 rerun with the same list and flags, or choose a new --out",
                out.display(),
                state_path.display()
            );
        }
    } else {
        write_json(&state_path, &state)?;
    }
    let report_path = out.join("report.json");
    if report_path.is_file() {
        eprintln!("{}: complete already (report.json exists)", out.display());
        return read_json(&report_path);
    }

    let journal_path = work.join("journal.jsonl");
    let mut done = journal::read(&journal_path)?;
    // A kept record whose image is gone (deleted by hand) is fetched again.
    done.retain(|_, d| d.kept.as_ref().is_none_or(|k| out.join(&k.file).is_file()));
    let journal = Arc::new(Journal::open(&journal_path)?);
    let mut pending = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if done.contains_key(&i) {
            continue;
        }
        match precheck(e, &c) {
            Ok((_, url)) => pending.push((i, url)),
            Err(f) => {
                let d = failed(i, f);
                journal.append(&d)?;
                done.insert(i, d);
            }
        }
    }
    let resumed = done.len();
    let fetched = fetch_all(
        out,
        &c,
        pending,
        journal,
        resumed,
        entries.len(),
        show_progress,
    )?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "downloaded {fetched} records in {secs:.1} s ({:.1}/s){}",
        fetched as f64 / secs.max(1e-9),
        if resumed > 0 {
            format!("; {resumed} were done before")
        } else {
            String::new()
        }
    );
    finish(input, out, &c, &entries, &bad_rows, &journal_path)
}

/// Downloads and processes `pending`; returns how many finished. Stops scheduling on
/// Ctrl-C or SIGTERM, lets the downloads in flight finish and journals them.
fn fetch_all(
    out: &Path,
    c: &FetchConfig,
    pending: Vec<(usize, reqwest::Url)>,
    journal: Arc<Journal>,
    already: usize,
    total: usize,
    show_progress: bool,
) -> Result<usize> {
    let bar = if show_progress {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("template"),
    );
    bar.set_position(already as u64);
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let finished = rt.block_on(async {
        let client = Arc::new(client(c)?);
        let pacer = Arc::new(HostPacer::default());
        let slots = Arc::new(tokio::sync::Semaphore::new(c.parallel));
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cpu = Arc::new(tokio::sync::Semaphore::new(cpus));
        let config = Arc::new(c.clone());
        tokio::spawn(watch_signals(stop.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        let mut finished = 0usize;
        for (i, url) in pending {
            let permit = slots.clone().acquire_owned().await?;
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let (client, pacer, cpu, config, journal) = (
                client.clone(),
                pacer.clone(),
                cpu.clone(),
                config.clone(),
                journal.clone(),
            );
            let (ok, bad, bar, out) = (ok.clone(), bad.clone(), bar.clone(), out.to_path_buf());
            tasks.spawn(async move {
                let _permit = permit;
                let d = match download(&client, &pacer, &url, &config).await {
                    Err(f) => failed(i, f),
                    Ok(body) => {
                        let _cpu = cpu.acquire_owned().await?;
                        tokio::task::spawn_blocking(move || store(i, &body, &out, &config))
                            .await??
                    }
                };
                journal.append(&d)?;
                let counter = if d.kept.is_some() { &ok } else { &bad };
                counter.fetch_add(1, Ordering::Relaxed);
                bar.set_message(format!(
                    "ok {} failed {}",
                    ok.load(Ordering::Relaxed),
                    bad.load(Ordering::Relaxed)
                ));
                bar.inc(1);
                anyhow::Ok(())
            });
            while let Some(r) = tasks.try_join_next() {
                r??;
                finished += 1;
            }
        }
        while let Some(r) = tasks.join_next().await {
            r??;
            finished += 1;
        }
        anyhow::Ok(finished)
    })?;
    bar.finish_and_clear();
    if stop.load(Ordering::SeqCst) {
        bail!(
            "interrupted after {} of {total} records; rerun the same command to continue",
            already + finished
        );
    }
    Ok(finished)
}

/// Decodes, checks, resizes and writes one image (atomically); a failure is a dropped record.
fn store(i: usize, body: &[u8], out: &Path, c: &FetchConfig) -> Result<Done> {
    Ok(match process(body, c) {
        Err(f) => failed(i, f),
        Ok(p) => {
            let file = image_path(i, c);
            let path = out.join(&file);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_atomic(&path, &p.encoded)?;
            Done {
                i,
                kept: Some(Kept {
                    file,
                    sha256: p.sha256,
                    phash: p.phash,
                    width: p.width,
                    height: p.height,
                }),
                reason: None,
                detail: None,
            }
        }
    })
}

/// Temporary files of image writes cut short by a kill (`.NAME.tmpPID`, see `AtomicWriter`).
fn remove_partial_writes(images: &Path) {
    let Ok(shards) = std::fs::read_dir(images) else {
        return;
    };
    for shard in shards.flatten() {
        for f in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

async fn watch_signals(stop: Arc<AtomicBool>) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    for round in 0..2 {
        #[cfg(unix)]
        let term_recv = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term_recv = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term_recv => {},
        }
        if round == 0 {
            stop.store(true, Ordering::SeqCst);
            eprintln!("stopping: finishing the downloads in flight (signal again to quit now)");
        } else {
            eprintln!("quitting; rerun the same command to continue");
            std::process::exit(130);
        }
    }
}

/// Removes duplicates in input order and writes the manifests and the report.
fn finish(
    input: &Path,
    out: &Path,
    c: &FetchConfig,
    entries: &[Entry],
    bad_rows: &[input::BadRow],
    journal_path: &Path,
) -> Result<FetchReport> {
    let done = journal::read(journal_path)?;
    let mut dedup = Deduper::new(c.near_duplicate_bits);
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut drop = |reason: &str, line: usize, url: &str, detail: &str| {
        *dropped.entry(reason.to_string()).or_default() += 1;
        let ex = examples.entry(reason.to_string()).or_default();
        if ex.len() < 3 {
            ex.push(json!({"line": line, "url": url, "detail": detail}));
        }
    };
    for b in bad_rows {
        drop("malformed_row", b.line, "", &b.problem);
    }
    let mut shards: BTreeMap<usize, String> = BTreeMap::new();
    let mut manifest = String::new();
    let mut kept = 0;
    for (i, e) in entries.iter().enumerate() {
        let d = done
            .get(&i)
            .with_context(|| format!("record {i} (line {}) has no result", e.line))?;
        let Some(k) = &d.kept else {
            let reason = d.reason.as_deref().unwrap_or("unknown");
            drop(reason, e.line, &e.url, d.detail.as_deref().unwrap_or(""));
            continue;
        };
        if let Some(dup) = dedup.check(&k.sha256, k.phash) {
            let reason = match dup {
                Duplicate::Exact => "duplicate",
                Duplicate::Near => "near_duplicate",
            };
            drop(
                reason,
                e.line,
                &e.url,
                "an earlier record has the same image",
            );
            let _ = std::fs::remove_file(out.join(&k.file));
            continue;
        }
        kept += 1;
        let caption = clean_caption(&e.caption);
        let line = |image: &str| {
            json!({"id": format!("{i:09}"), "image": image, "caption": caption, "url": e.url})
                .to_string()
                + "\n"
        };
        manifest.push_str(&line(&k.file));
        shards
            .entry(i / c.shard_size)
            .or_default()
            .push_str(&line(&format!("../{}", k.file)));
    }
    remove_partial_writes(&out.join("images"));
    std::fs::create_dir_all(out.join("shards"))?;
    for (s, text) in &shards {
        write_atomic(&out.join(format!("shards/{s:05}.jsonl")), text.as_bytes())?;
    }
    write_atomic(&out.join("manifest.jsonl"), manifest.as_bytes())?;
    let report = FetchReport {
        input: input.to_path_buf(),
        records: entries.len() + bad_rows.len(),
        kept,
        dropped,
        examples,
        shards: shards.len(),
        settings: c.clone(),
    };
    // Written last: its presence means the dataset is complete.
    write_json(&out.join("report.json"), &report)?;
    Ok(report)
}
