//! Dynamic batching: caption requests queue for one decoding thread, which takes the first
//! waiting request, lets others join for a few milliseconds (up to a row budget), encodes
//! their images once, and decodes every (image, style, sample) row in one batch with the KV
//! cache. Each row keeps its own decoding settings and random stream, so a request's captions
//! do not depend on which other requests shared its batch.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use burn::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::oneshot;

use super::config::ServeConfig;
use super::error::ApiError;
use super::metrics::Metrics;
use crate::critic::Critic;
use crate::data::tokenizer::TextTokenizer;
use crate::model::folder::LoadedCaptioner;
use crate::model::generate::{decode_rows, Choice};
use crate::model::repeats::Repeats;
use crate::rng::{streams, Rng};

/// What the decoding thread owns.
pub struct Engine {
    pub captioner: LoadedCaptioner,
    pub critic: Option<(Critic, TextTokenizer)>,
    pub device: Device,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Decoding {
    pub greedy: bool,
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: usize,
    pub seed: u64,
    #[serde(flatten)]
    pub repeats: Repeats,
}

pub struct Job {
    /// `[3, H, W]`, already preprocessed for the encoder.
    pub pixels: Vec<f32>,
    /// Style indices of the captioner.
    pub styles: Vec<usize>,
    pub n: usize,
    pub decoding: Decoding,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<JobOutput, ApiError>>,
}

impl Job {
    fn rows(&self) -> usize {
        self.styles.len() * self.n
    }
}

#[derive(Debug, Serialize)]
pub struct Caption {
    pub style: String,
    pub text: String,
    /// Sum of the log-probabilities of the caption's tokens (end token included).
    pub logprob: f32,
    pub tokens: usize,
    /// The critic's probability of each of its styles for this caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style_probs: Option<BTreeMap<String, f32>>,
}

#[derive(Debug)]
pub struct JobOutput {
    pub captions: Vec<Caption>,
    pub queue_ms: f64,
    pub decode_ms: f64,
    pub batch_requests: usize,
    pub batch_rows: usize,
}

/// The request side of the queue.
pub struct Batcher {
    tx: Option<SyncSender<Job>>,
    metrics: Arc<Metrics>,
    worker: Option<JoinHandle<()>>,
}

impl Batcher {
    pub fn start(engine: Engine, config: ServeConfig, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = sync_channel(config.queue_capacity.max(1));
        let m = metrics.clone();
        let worker = std::thread::Builder::new()
            .name("stylecap-decoder".into())
            .spawn(move || worker(engine, rx, config, m))
            .expect("spawn the decoding thread");
        Batcher {
            tx: Some(tx),
            metrics,
            worker: Some(worker),
        }
    }

    /// Queues a job; a full queue is a 503.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let tx = self.tx.as_ref().ok_or_else(ApiError::overloaded)?;
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(ApiError::overloaded())
            }
        }
    }

    /// Closes the queue and waits until every queued job is answered.
    pub fn finish(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.finish();
    }
}

fn worker(engine: Engine, rx: Receiver<Job>, config: ServeConfig, metrics: Arc<Metrics>) {
    let take = |job: Job| {
        metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        job
    };
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => take(j),
                Err(_) => return,
            },
        };
        let mut rows = first.rows();
        let mut jobs = vec![first];
        if config.batching {
            let until = Instant::now() + Duration::from_millis(config.batch_wait_ms);
            while rows < config.max_batch_rows {
                let wait = until.saturating_duration_since(Instant::now());
                let job = match rx.try_recv() {
                    Ok(j) => take(j),
                    Err(_) => match rx.recv_timeout(wait) {
                        Ok(j) => take(j),
                        Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                            break
                        }
                    },
                };
                if rows + job.rows() > config.max_batch_rows {
                    held = Some(job);
                    break;
                }
                rows += job.rows();
                jobs.push(job);
            }
        }
        // Requests that timed out while queued are not decoded.
        jobs.retain(|j| {
            let alive = !j.reply.is_closed();
            if !alive {
                metrics.error("timeout_in_queue");
            }
            alive
        });
        if jobs.is_empty() {
            continue;
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| run_batch(&engine, &jobs)));
        let decode_ms = started.elapsed().as_secs_f64() * 1e3;
        let rows: usize = jobs.iter().map(Job::rows).sum();
        metrics.batch(jobs.len(), rows);
        let n_jobs = jobs.len();
        match result {
            Ok(Ok(per_job)) => {
                for (job, captions) in jobs.into_iter().zip(per_job) {
                    let queue_ms = (started - job.enqueued).as_secs_f64() * 1e3;
                    let _ = job.reply.send(Ok(JobOutput {
                        captions,
                        queue_ms,
                        decode_ms,
                        batch_requests: n_jobs,
                        batch_rows: rows,
                    }));
                }
            }
            Ok(Err(e)) => {
                for job in jobs {
                    let _ = job.reply.send(Err(ApiError::internal(format!("{e:#}"))));
                }
            }
            Err(_) => {
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(ApiError::internal("the decoder failed on this batch")));
                }
            }
        }
    }
}

fn run_batch(engine: &Engine, jobs: &[Job]) -> anyhow::Result<Vec<Vec<Caption>>> {
    let LoadedCaptioner {
        model, tokenizer, ..
    } = &engine.captioner;
    let size = model.config.encoder.image_size();
    let mut pixels = Vec::with_capacity(jobs.len() * 3 * size * size);
    for j in jobs {
        pixels.extend_from_slice(&j.pixels);
    }
    let pixels = Tensor::<4>::from_data(
        TensorData::new(pixels, [jobs.len(), 3, size, size]),
        &engine.device,
    );
    let encoded = model.encode(pixels);

    // One row per (request, style, sample).
    let mut image_of_row = Vec::new();
    let mut style_of_row = Vec::new();
    let mut limits = Vec::new();
    let mut pickers = Vec::new();
    let mut repeats = Vec::new();
    for (ji, j) in jobs.iter().enumerate() {
        for (si, &style) in j.styles.iter().enumerate() {
            for k in 0..j.n {
                image_of_row.push(ji);
                style_of_row.push(style);
                limits.push(j.decoding.max_new_tokens);
                repeats.push(j.decoding.repeats);
                let stream = (si * j.n + k) as u64;
                pickers.push((
                    j.decoding,
                    StdRng::seed_from_u64(
                        Rng::for_item(j.decoding.seed, streams::CAPTION_SAMPLING, stream)
                            .next_u64(),
                    ),
                ));
            }
        }
    }
    let rows = image_of_row.len();
    let encoded = encoded.for_rows(&image_of_row);
    let styles = model
        .style_prefix
        .is_some()
        .then_some(style_of_row.as_slice());
    let gens = decode_rows(model, &encoded, styles, &limits, &repeats, |i| {
        let (d, rng) = &mut pickers[i];
        if d.greedy {
            Choice::Greedy
        } else {
            Choice::draw(d.temperature, 0, d.top_p, rng)
        }
    });
    let mut texts = Vec::with_capacity(rows);
    for g in &gens {
        texts.push(tokenizer.decode_caption(&g.tokens)?);
    }
    let probs = match &engine.critic {
        Some((critic, tok)) => {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let p = critic.probabilities(tok, &refs, &engine.device)?;
            let names = &critic.info.styles;
            p.into_iter()
                .map(|row| Some(names.iter().cloned().zip(row).collect()))
                .collect()
        }
        None => vec![None; rows],
    };
    let names = &model.config.style.styles;
    let mut out = Vec::with_capacity(jobs.len());
    let mut it = gens.into_iter().zip(texts).zip(probs).zip(style_of_row);
    for j in jobs {
        let mut captions = Vec::with_capacity(j.rows());
        for (((g, text), style_probs), style) in it.by_ref().take(j.rows()) {
            captions.push(Caption {
                style: names.get(style).cloned().unwrap_or_default(),
                text,
                logprob: g.logprobs.iter().sum(),
                tokens: g.tokens.len(),
                style_probs,
            });
        }
        out.push(captions);
    }
    Ok(out)
}
