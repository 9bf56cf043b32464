//! `stylecap data fetch`: an image–caption dataset from a list of URLs with captions (the
//! way CC3M, CC12M or LAION are assembled), in the project's own layout:
//! `images/SHARD/INDEX.jpg`, `manifest.jsonl` (every kept record), `shards/SHARD.jsonl`
//! (the same per image folder) and `report.json` (every dropped record counted by reason).
//!
//! Downloads run concurrently (tokio), decoding and resizing on the blocking pool. Each
//! finished record is appended to a journal, so a rerun continues where a run stopped and
//! downloads nothing twice; a rerun fetches again only what failed for a reason that may
//! pass (a timeout, a refused connection, 429, 5xx). Duplicates are removed after all
//! downloads, in input order, so the dataset does not depend on download order,
//! interruptions or retries; their images are set aside in `.fetch/`, not deleted, since
//! a later retry may change which copy comes first. File names come from the record's
//! index only; nothing in a URL or caption reaches a path.

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
use dedup::{Deduper, Duplicate};
use download::{client, download, is_transient, Failure, HostPacer};
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
    /// Dropped records whose failure may pass (timeouts, connection errors, 429, 5xx): a
    /// rerun of the same command fetches them again.
    #[serde(default)]
    pub still_failing: usize,
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

/// Bookkeeping of a fetch folder: the state, the journal, set-aside duplicates.
const WORK: &str = ".fetch";
/// Where duplicates' images wait (same relative paths), under `WORK`.
const SET_ASIDE: &str = "duplicates";

/// Settings saved by an earlier version lack the fields added since; read back with their
/// defaults, they compare equal when nothing that decides the output changed.
fn same_output(before: &State, now: &State) -> bool {
    before.input_sha256 == now.input_sha256
        && serde_json::from_value::<FetchConfig>(before.settings.clone())
            .is_ok_and(|c| c.output_settings() == now.settings)
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
        decoding: false,
    }
}

pub fn run(input: &Path, out: &Path, c: FetchConfig, show_progress: bool) -> Result<FetchReport> {
    c.validate()?;
    let started = Instant::now();
    let (entries, bad_rows) = read_list(input, &c.url_col, &c.caption_col)?;
    let work = out.join(WORK);
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
        if !same_output(&before, &state) {
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

    let journal_path = work.join("journal.jsonl");
    let mut done = journal::read(&journal_path)?;
    let journal = Arc::new(Journal::open(&journal_path)?);
    // A run that died while decoding a record may have died of it: that record is dropped,
    // so no rerun dies of it again.
    for d in done.values_mut().filter(|d| d.decoding) {
        // Written, perhaps, just before the kill.
        let _ = std::fs::remove_file(out.join(image_path(d.i, &c)));
        *d = failed(
            d.i,
            Failure::new(
                "decode_interrupted",
                "the fetch stopped while decoding this image; it is not decoded again",
            ),
        );
        journal.append(d)?;
    }
    let set_aside = work.join(SET_ASIDE);
    let before = done.len();
    // A kept record whose image is gone (deleted by hand) is fetched again, and so is a
    // failure that may pass.
    done.retain(|_, d| match &d.kept {
        Some(k) => out.join(&k.file).is_file() || set_aside.join(&k.file).is_file(),
        None => !(c.retry_failed && d.reason.as_deref().is_some_and(is_transient)),
    });
    let retried = before - done.len();
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
    let report_path = out.join("report.json");
    if report_path.is_file() && pending.is_empty() {
        eprintln!("{}: complete already (report.json exists)", out.display());
        return read_json(&report_path);
    }
    if retried > 0 {
        eprintln!(
            "fetching again {retried} records that failed before (timeouts, connection \
             errors, 429, 5xx, missing images; --retry-failed false keeps failures final)"
        );
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
        let memory = Arc::new(tokio::sync::Semaphore::new(DECODE_BUDGET_MB as usize));
        let config = Arc::new(c.clone());
        tokio::spawn(watch_signals(stop.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        let mut finished = 0usize;
        for (i, url) in pending {
            let permit = slots.clone().acquire_owned().await?;
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let (client, pacer, cpu, memory, config, journal) = (
                client.clone(),
                pacer.clone(),
                cpu.clone(),
                memory.clone(),
                config.clone(),
                journal.clone(),
            );
            let (ok, bad, bar, out) = (ok.clone(), bad.clone(), bar.clone(), out.to_path_buf());
            tasks.spawn(async move {
                let _permit = permit;
                let d = match download(&client, &pacer, &url, &config).await {
                    Err(f) => failed(i, f),
                    Ok(body) => {
                        let _memory = memory
                            .acquire_many_owned(decode_cost_mb(&body, config.max_pixels))
                            .await?;
                        let _cpu = cpu.acquire_owned().await?;
                        journal.append(&Done::decoding(i))?;
                        match tokio::task::spawn_blocking(move || store(i, &body, &out, &config))
                            .await
                        {
                            Ok(d) => d?,
                            // A decoder that panics on one image drops that record, not the run.
                            Err(e) if e.is_panic() => failed(
                                i,
                                Failure::new("decode_failed", "the image decoder panicked"),
                            ),
                            Err(e) => return Err(e.into()),
                        }
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

/// Memory all decodes in flight may take, in MB, so that many large images wait for each
/// other instead of adding up (one larger than this, with a raised --max-pixels, decodes
/// alone).
const DECODE_BUDGET_MB: u32 = 2048;

/// What decoding `body` may cost, from its header: the RGB image, its grey copy and the
/// hash's resize buffers, about 8 bytes a pixel (measured 395 MB for 50 million pixels).
/// An image over the limit is refused before decoding, at no cost.
fn decode_cost_mb(body: &[u8], max_pixels: u64) -> u32 {
    let pixels = crate::data::image_check::header(body).map_or(0, |(_, w, h)| w as u64 * h as u64);
    let pixels = if pixels > max_pixels { 0 } else { pixels };
    ((pixels * 8) >> 20).clamp(1, DECODE_BUDGET_MB as u64) as u32
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
                decoding: false,
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

/// Moves an image between the dataset and the set-aside duplicates (nothing to do when it
/// is not at `from`: moved by an earlier, interrupted finish).
fn move_image(from: &Path, to: &Path) -> Result<()> {
    if !from.is_file() {
        return Ok(());
    }
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::rename(from, to)
        .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
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
    let set_aside = out.join(WORK).join(SET_ASIDE);
    let mut dedup = Deduper::new(c.near_duplicate_bits);
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut still_failing = 0;
    let mut drop = |reason: &str, line: usize, url: &str, detail: &str| {
        still_failing += is_transient(reason) as usize;
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
            move_image(&out.join(&k.file), &set_aside.join(&k.file))?;
            continue;
        }
        let path = out.join(&k.file);
        if !path.is_file() {
            ensure!(
                set_aside.join(&k.file).is_file(),
                "{}: the image of line {} is missing; rerun the same command to fetch it again",
                path.display(),
                e.line
            );
            move_image(&set_aside.join(&k.file), &path)?;
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
        still_failing,
        examples,
        shards: shards.len(),
        settings: c.clone(),
    };
    // Written last: its presence means the dataset is complete.
    write_json(&out.join("report.json"), &report)?;
    Ok(report)
}
