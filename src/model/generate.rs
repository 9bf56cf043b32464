//! Decoding: greedy, sampling (temperature, top-k, top-p) and beam search, batched, with the
//! KV cache. Every strategy returns the generated tokens with the log-probability of each
//! under the model's own distribution (temperature 1, no truncation), which is what the RL
//! stage needs as log π(token).

use anyhow::{ensure, Result};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Distribution, FloatDType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::captioner::{Captioner, EncodedImages};
use super::repeats::{DeviceRepeats, Repeats};
use crate::tensor::in_f32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    Greedy,
    Sample {
        temperature: f32,
        top_k: usize,
        top_p: f32,
    },
    Beam {
        num_beams: usize,
        length_penalty: f32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodeOptions {
    pub strategy: Strategy,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Limits on repeating tokens (off by default).
    #[serde(default)]
    pub repeats: Repeats,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            strategy: Strategy::Greedy,
            max_new_tokens: 32,
            seed: 0,
            repeats: Repeats::default(),
        }
    }
}

/// One decoded caption: its tokens (the end token included when produced) and their
/// log-probabilities.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
}

fn style_tensor(
    styles: Option<&[usize]>,
    repeat: usize,
    device: &Device,
) -> Option<Tensor<1, Int>> {
    styles.map(|s| {
        let ids: Vec<i64> = s
            .iter()
            .flat_map(|&i| std::iter::repeat_n(i as i64, repeat))
            .collect();
        let n = ids.len();
        Tensor::from_data(TensorData::new(ids, [n]), device)
    })
}

/// Captions for a batch of images. `styles` gives one style index per image when the
/// captioner has styles.
pub fn generate(
    model: &Captioner,
    pixel_values: Tensor<4>,
    styles: Option<&[usize]>,
    opts: &DecodeOptions,
) -> Result<Vec<Generation>> {
    let batch = pixel_values.dims()[0];
    if let Some(s) = styles {
        ensure!(
            s.len() == batch,
            "{} styles given for {} images",
            s.len(),
            batch
        );
    }
    let styles = if model.style_prefix.is_some() {
        styles
    } else {
        None
    };
    let room = model
        .decoder
        .max_positions()
        .saturating_sub(model.prefix_len() + 1);
    ensure!(
        opts.max_new_tokens <= room,
        "max_new_tokens {} exceeds what the decoder's {} positions allow ({room})",
        opts.max_new_tokens,
        model.decoder.max_positions()
    );
    let encoded = model.encode(pixel_values);
    match opts.strategy {
        Strategy::Beam {
            num_beams,
            length_penalty,
        } => beam_search(
            model,
            &encoded,
            styles,
            batch,
            num_beams.max(1),
            length_penalty,
            opts.max_new_tokens,
            opts.repeats,
        ),
        _ => Ok(sample_or_greedy(model, &encoded, styles, batch, opts)),
    }
}

/// Greedy or sampled decoding from already encoded images (the RL stage reuses encodings).
pub fn sample_or_greedy(
    model: &Captioner,
    encoded: &EncodedImages,
    styles: Option<&[usize]>,
    batch: usize,
    opts: &DecodeOptions,
) -> Vec<Generation> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let limits = vec![opts.max_new_tokens; batch];
    let repeats = vec![opts.repeats; batch];
    decode_rows(model, encoded, styles, &limits, &repeats, |_| {
        match opts.strategy {
            Strategy::Sample {
                temperature,
                top_k,
                top_p,
            } => Choice::draw(temperature, top_k, top_p, &mut rng),
            _ => Choice::Greedy,
        }
    })
}

/// How one row's next token is chosen. The random draw is made before the row's
/// log-probabilities are read, so that the rows of a step are chosen in parallel while each
/// random stream is consumed in row order, as one thread would.
#[derive(Debug, Clone, Copy)]
pub enum Choice {
    Greedy,
    /// [`sample_token`]'s choice with its uniform draw `u` already made.
    Sample {
        temperature: f32,
        top_k: usize,
        top_p: f32,
        u: f64,
    },
}

impl Choice {
    /// Draws from `rng` what [`sample_token`] would (nothing when the temperature makes the
    /// choice greedy).
    pub fn draw(temperature: f32, top_k: usize, top_p: f32, rng: &mut impl Rng) -> Choice {
        if temperature <= 0.0 {
            return Choice::Greedy;
        }
        Choice::Sample {
            temperature,
            top_k,
            top_p,
            u: rng.random(),
        }
    }

    pub fn pick(&self, row: &[f32]) -> usize {
        match *self {
            Choice::Greedy => argmax(row),
            Choice::Sample {
                temperature,
                top_k,
                top_p,
                u,
            } => sample_with_draw(row, temperature, top_k, top_p, u),
        }
    }
}

/// Incremental decoding with the KV cache where each row has its own length limit and limits
/// on repetition, and `choose(row)` says how its next token is picked, so rows of different
/// requests (greedy or sampled, each with its own random stream) can share one batch.
/// `choose` is called in row order for the rows still going; the picks themselves run on all
/// threads.
pub fn decode_rows(
    model: &Captioner,
    encoded: &EncodedImages,
    styles: Option<&[usize]>,
    max_new_tokens: &[usize],
    repeats: &[Repeats],
    mut choose: impl FnMut(usize) -> Choice,
) -> Vec<Generation> {
    let batch = max_new_tokens.len();
    assert_eq!(repeats.len(), batch, "one `Repeats` per row");
    let device = encoded.cross[0].k.device();
    if !super::kernels::on_cpu_backend(&device) {
        return decode_rows_on_device(model, encoded, styles, max_new_tokens, repeats, choose);
    }
    let limited = repeats.iter().any(|r| !r.is_off());
    let eos = model.config.eos_token_id;
    let pad = model.config.pad_token_id.or(eos).unwrap_or(0);
    let vocab = model.decoder.vocab_size();
    let longest = max_new_tokens.iter().copied().max().unwrap_or(0);
    let mut out = vec![Generation::default(); batch];
    let mut done: Vec<bool> = max_new_tokens.iter().map(|&m| m == 0).collect();
    if longest == 0 {
        return out;
    }
    let (mut cache, mut logits) =
        model.start_decoding(encoded, style_tensor(styles, 1, &device), batch);
    for step in 0..longest {
        let f32_logits = logits.cast(FloatDType::F32);
        // Limited rows choose from their logits with the limits applied (the limits read
        // logits, as transformers' do); every row reports the model's own log-probabilities.
        let raw = limited.then(|| crate::tensor::floats(f32_logits.clone()));
        let lp = crate::tensor::floats(log_softmax(f32_logits, 1));
        let choices: Vec<Option<Choice>> =
            (0..batch).map(|i| (!done[i]).then(|| choose(i))).collect();
        let picks: Vec<Option<usize>> = lp
            .par_chunks_exact(vocab)
            .zip(&choices)
            .enumerate()
            .map(|(i, (row, c))| {
                c.map(|c| match &raw {
                    Some(raw) if !repeats[i].is_off() => {
                        let mut scores = raw[i * vocab..(i + 1) * vocab].to_vec();
                        repeats[i].apply(&mut scores, &out[i].tokens);
                        c.pick(&scores)
                    }
                    _ => c.pick(row),
                })
            })
            .collect();
        let mut next = Vec::with_capacity(batch);
        for (i, (row, pick)) in lp.chunks_exact(vocab).zip(picks).enumerate() {
            let Some(tok) = pick else {
                next.push(pad as i64);
                continue;
            };
            out[i].tokens.push(tok as u32);
            out[i].logprobs.push(row[tok]);
            done[i] = Some(tok as u32) == eos || out[i].tokens.len() >= max_new_tokens[i];
            next.push(tok as i64);
        }
        if done.iter().all(|&d| d) || step + 1 == longest {
            break;
        }
        logits = model.step(
            encoded,
            Tensor::from_data(TensorData::new(next, [batch]), &device),
            &mut cache,
        );
    }
    out
}

/// How often (in tokens) [`decode_rows_on_device`] asks whether every row has ended: each
/// ask waits for the device.
const ENDED_CHECK_EVERY: usize = 8;

/// Bisection steps of the nucleus threshold: its bracket ends 2⁻³⁰ of the top probability
/// wide, so only a token within that much of the threshold's value can be kept or dropped
/// differently from the exact ranking.
const NUCLEUS_BISECTIONS: usize = 30;

/// [`decode_rows`] with every choice made on the device: the host sees the tokens and their
/// log-probabilities once, at the end, and asks whether all rows have ended only every
/// [`ENDED_CHECK_EVERY`] tokens (never when the model has no end token), so a GPU is never
/// left waiting on the host between tokens.
///
/// `choose(i)` is called once per row, for its strategy. Greedy rows take the arg-max;
/// sampled rows draw by the Gumbel-max trick (`argmax(logits / T + g)`, g Gumbel noise from
/// the device's generator, seeded from the rows' own draws), after top-k (by the k-th value)
/// and top-p (by a per-row probability threshold found by bisection, no sort of the
/// vocabulary) truncation, in transformers' order. The draws differ from the host path's,
/// which walks the ranking with one uniform draw per token.
pub fn decode_rows_on_device(
    model: &Captioner,
    encoded: &EncodedImages,
    styles: Option<&[usize]>,
    max_new_tokens: &[usize],
    repeats: &[Repeats],
    mut choose: impl FnMut(usize) -> Choice,
) -> Vec<Generation> {
    let batch = max_new_tokens.len();
    assert_eq!(repeats.len(), batch, "one `Repeats` per row");
    let device = encoded.cross[0].k.device();
    let eos = model.config.eos_token_id;
    let pad = model.config.pad_token_id.or(eos).unwrap_or(0);
    let longest = max_new_tokens.iter().copied().max().unwrap_or(0);
    if longest == 0 {
        return vec![Generation::default(); batch];
    }
    let picker = DevicePicker::new(&(0..batch).map(&mut choose).collect::<Vec<_>>(), &device);
    let mut limits_on_device = DeviceRepeats::new(repeats, model.decoder.vocab_size(), &device);
    let limits = Tensor::<1, Int>::from_data(
        TensorData::new(max_new_tokens.iter().map(|&m| m as i64).collect(), [batch]),
        &device,
    );
    // Rows still going, as 1/0.
    let mut going = limits.clone().greater_elem(0).int();
    let (mut tokens, mut logprobs) = (Vec::with_capacity(longest), Vec::with_capacity(longest));
    let (mut cache, mut logits) =
        model.start_decoding(encoded, style_tensor(styles, 1, &device), batch);
    for step in 0..longest {
        // In f32 whatever the model's float type, as transformers' `generate` does: in half
        // precision the softmax over the vocabulary, the nucleus bisection and the Gumbel
        // noise lose the small probabilities and draws that decide a sample.
        let f32_logits = logits.cast(FloatDType::F32);
        let lp = log_softmax(f32_logits.clone(), 1);
        let picked = match &mut limits_on_device {
            Some(limits) => {
                let picked = picker.pick(limits.scores(f32_logits, lp.clone(), &tokens));
                limits.record(picked.clone());
                picked
            }
            None => picker.pick(lp.clone()),
        };
        logprobs.push(
            lp.gather(1, picked.clone().unsqueeze_dim(1))
                .squeeze_dim::<1>(1),
        );
        // Rows that ended feed the pad token; their picks are cut away on the host.
        let fed = (picked.clone().sub_scalar(pad as i64) * going.clone()).add_scalar(pad as i64);
        tokens.push(picked.clone());
        let mut ended = limits.clone().lower_equal_elem(step as i64 + 1);
        if let Some(eos) = eos {
            ended = ended.bool_or(picked.equal_elem(eos as i64));
        }
        going = going * ended.bool_not().int();
        if step + 1 == longest {
            break;
        }
        if eos.is_some()
            && (step + 1) % ENDED_CHECK_EVERY == 0
            && crate::tensor::indices(going.clone().sum())[0] == 0
        {
            break;
        }
        logits = model.step(encoded, fed, &mut cache);
    }
    let steps = tokens.len();
    let tokens = crate::tensor::indices(Tensor::stack::<2>(tokens, 1));
    let logprobs = crate::tensor::floats(Tensor::stack::<2>(logprobs, 1));
    (0..batch)
        .map(|i| {
            let row = &tokens[i * steps..(i + 1) * steps];
            let mut len = max_new_tokens[i].min(steps);
            if let Some(at) = row[..len].iter().position(|&t| Some(t as u32) == eos) {
                len = at + 1;
            }
            Generation {
                tokens: row[..len].iter().map(|&t| t as u32).collect(),
                logprobs: logprobs[i * steps..i * steps + len].to_vec(),
            }
        })
        .collect()
}

/// The per-row settings of [`decode_rows_on_device`]'s choices, as device tensors.
struct DevicePicker {
    /// Some row samples (else every row is greedy and no noise is drawn).
    sampling: Option<Sampling>,
}

struct Sampling {
    /// 1 for sampled rows, 0 for greedy ones, `[B]`.
    sampled: Tensor<1, Int>,
    /// Temperatures (1 on greedy rows), `[B, 1]`.
    temperature: Tensor<2>,
    /// The largest top-k and each row's k−1 (rows without top-k: none).
    top_k: Option<(usize, Tensor<2, Int>, Tensor<2, Bool>)>,
    /// Each row's top-p, and which rows truncate (top-p < 1).
    top_p: Option<(Tensor<2>, Tensor<2, Bool>)>,
}

impl DevicePicker {
    fn new(choices: &[Choice], device: &Device) -> Self {
        let batch = choices.len();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (mut sampled, mut temperature, mut top_k, mut top_p) = (
            Vec::with_capacity(batch),
            Vec::with_capacity(batch),
            Vec::with_capacity(batch),
            Vec::with_capacity(batch),
        );
        for c in choices {
            let (s, t, k, p) = match *c {
                Choice::Greedy => (0, 1.0, 0, 1.0),
                Choice::Sample {
                    temperature,
                    top_k,
                    top_p,
                    u,
                } => {
                    seed = (seed ^ u.to_bits()).wrapping_mul(0x100_0000_01b3);
                    (1i64, temperature, top_k, top_p)
                }
            };
            sampled.push(s);
            temperature.push(t);
            top_k.push(k);
            top_p.push(p);
        }
        if sampled.iter().all(|&s| s == 0) {
            return Self { sampling: None };
        }
        device.seed(seed);
        let column = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<1>::from_data(TensorData::new(v, [n]), in_f32(device)).unsqueeze_dim(1)
        };
        let largest_k = top_k.iter().copied().max().unwrap_or(0);
        let top_k = (largest_k > 0).then(|| {
            let at: Vec<i64> = top_k.iter().map(|&k| k.max(1) as i64 - 1).collect();
            let limited =
                column(top_k.iter().map(|&k| (k > 0) as i32 as f32).collect()).greater_elem(0.5);
            (
                largest_k,
                Tensor::<1, Int>::from_data(TensorData::new(at, [batch]), device).unsqueeze_dim(1),
                limited,
            )
        });
        let truncates = top_p.iter().any(|&p| p < 1.0);
        let top_p = truncates.then(|| {
            let limited =
                column(top_p.iter().map(|&p| (p < 1.0) as i32 as f32).collect()).greater_elem(0.5);
            (column(top_p), limited)
        });
        Self {
            sampling: Some(Sampling {
                sampled: Tensor::from_data(TensorData::new(sampled, [batch]), device),
                temperature: column(temperature),
                top_k,
                top_p,
            }),
        }
    }

    /// The token of each row of log-probabilities `lp` `[B, V]` (or of logits: only the
    /// differences within a row count).
    fn pick(&self, lp: Tensor<2>) -> Tensor<1, Int> {
        let greedy = lp.clone().argmax(1).squeeze_dim::<1>(1);
        let Some(s) = &self.sampling else {
            return greedy;
        };
        let mut scaled = lp / s.temperature.clone();
        if let Some((largest, at, limited)) = &s.top_k {
            let kth = scaled.clone().topk(*largest, 1).gather(1, at.clone());
            let below = scaled
                .clone()
                .lower(kth.expand(scaled.dims()))
                .bool_and(limited.clone().expand(scaled.dims()));
            scaled = scaled.mask_fill(below, f32::NEG_INFINITY);
        }
        if let Some((top_p, limited)) = &s.top_p {
            let probs = softmax(scaled.clone(), 1);
            let threshold = nucleus_threshold(probs.clone(), top_p.clone());
            let below = probs
                .lower(threshold.expand(scaled.dims()))
                .bool_and(limited.clone().expand(scaled.dims()));
            scaled = scaled.mask_fill(below, f32::NEG_INFINITY);
        }
        let dims = scaled.dims();
        let uniform = Tensor::<2>::random(
            dims,
            Distribution::Uniform(0.0, 1.0),
            in_f32(&scaled.device()),
        )
        .clamp(1e-20, 1.0 - 6e-8);
        let gumbel = uniform.log().neg().log().neg();
        let drawn = (scaled + gumbel).argmax(1).squeeze_dim::<1>(1);
        greedy.clone() + (drawn - greedy) * s.sampled.clone()
    }
}

/// Per row of `probs` `[B, V]`, the largest probability t such that the tokens of probability
/// ≥ t hold at least `top_p` `[B, 1]` of the mass: the nucleus is the tokens at or above it.
/// Bisection on t, every row at once, on the device.
fn nucleus_threshold(probs: Tensor<2>, top_p: Tensor<2>) -> Tensor<2> {
    let [batch, _] = probs.dims();
    let device = probs.device();
    // Invariant: the mass at or above `lo` reaches top-p, the mass at or above `hi` does not.
    let mut lo = Tensor::<2>::zeros([batch, 1], in_f32(&device));
    let mut hi = probs.clone().max_dim(1) * (1.0 + 1e-6) + 1e-30;
    for _ in 0..NUCLEUS_BISECTIONS {
        let mid = (lo.clone() + hi.clone()) * 0.5;
        let below = probs.clone().lower(mid.clone().expand(probs.dims()));
        let mass = probs.clone().mask_fill(below, 0.0).sum_dim(1);
        let reaches = mass.greater_equal(top_p.clone());
        lo = lo.mask_where(reaches.clone(), mid.clone());
        hi = mid.mask_where(reaches, hi);
    }
    lo
}

/// First index of the maximum, as `torch.argmax`.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Samples from log-probs `row` with temperature, then top-k and top-p (nucleus) truncation
/// (HF's order: temperature, top-k, top-p; at least one token is always kept).
pub fn sample_token(
    row: &[f32],
    temperature: f32,
    top_k: usize,
    top_p: f32,
    rng: &mut impl Rng,
) -> usize {
    Choice::draw(temperature, top_k, top_p, rng).pick(row)
}

/// [`sample_token`] with its uniform draw `u` made.
///
/// Tokens are ranked by probability and the draw walks that ranking. Sorting the whole
/// vocabulary for every token would cost V log V per token, so the ranking is built only
/// over the tokens of relative probability ≥ [`HEAD`]: every other token ranks below all of
/// them, so whenever the draw (or the nucleus) ends inside that head the answer is the one the
/// full ranking gives. Otherwise (flat distributions: a random model's, high temperatures) the
/// walk finds its token by selection over the whole vocabulary ([`first_reaching`]), in
/// expected linear time, without sorting it.
fn sample_with_draw(row: &[f32], temperature: f32, top_k: usize, top_p: f32, u: f64) -> usize {
    if temperature <= 0.0 {
        return argmax(row);
    }
    let weights = unnormalised(row, temperature);
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    // A temperature too small for f32 (the settings refuse it) makes every weight NaN; the
    // draw would then fall through to the least likely token.
    if !(total.is_finite() && total > 0.0) {
        return argmax(row);
    }
    if top_k == 0 {
        let mut head: Vec<usize> = (0..row.len())
            .filter(|&i| weights[i] as f64 >= HEAD * total)
            .collect();
        head.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let probs: Vec<f64> = head.iter().map(|&i| weights[i] as f64 / total).collect();
        if let Some(token) = draw(&head, &probs, top_p, u, false) {
            return token;
        }
        let mut keys = ranking_keys(row);
        let prob = |key: u64| weights[key_token(key)] as f64 / total;
        let (keep, target) = if top_p < 1.0 {
            match first_reaching(&mut keys, prob, |cum| cum >= top_p as f64) {
                Some((j, mass)) => (j + 1, u * mass),
                None => (keys.len(), u * keys.iter().map(|&k| prob(k)).sum::<f64>()),
            }
        } else {
            (keys.len(), u)
        };
        let kept = &mut keys[..keep];
        return match first_reaching(kept, prob, |cum| target < cum) {
            Some((j, _)) => key_token(kept[j]),
            // Rounding left the draw past the last kept token: that token, as `draw` does.
            None => key_token(kept.iter().copied().max().expect("at least one token kept")),
        };
    }
    let mut idx = ranking(row);
    idx.truncate(top_k);
    let total: f64 = idx.iter().map(|&i| weights[i] as f64).sum();
    let probs: Vec<f64> = idx.iter().map(|&i| weights[i] as f64 / total).collect();
    draw(&idx, &probs, top_p, u, true).expect("a complete ranking always yields a token")
}

/// The first position of the ranking (ascending `keys`, see [`ranking_keys`]) at which the
/// running sum of `prob` satisfies `reached` (which must stay true once true), and the sum
/// there; None if it never does. `keys` is reordered so that every key before that position
/// ranks before it and every key after ranks after it. Quickselect: each round splits the
/// remaining range at its median and keeps the half where the sum is reached.
fn first_reaching(
    keys: &mut [u64],
    prob: impl Fn(u64) -> f64,
    reached: impl Fn(f64) -> bool,
) -> Option<(usize, f64)> {
    const SORT_BELOW: usize = 64;
    let (mut lo, mut hi, mut before) = (0, keys.len(), 0.0f64);
    while hi - lo > SORT_BELOW {
        let mid = lo + (hi - lo) / 2;
        keys[lo..hi].select_nth_unstable(mid - lo);
        let left: f64 = keys[lo..mid].iter().map(|&k| prob(k)).sum();
        if reached(before + left) {
            hi = mid;
            continue;
        }
        let at = before + left + prob(keys[mid]);
        if reached(at) {
            return Some((mid, at));
        }
        before = at;
        lo = mid + 1;
    }
    keys[lo..hi].sort_unstable();
    for (j, &key) in keys.iter().enumerate().take(hi).skip(lo) {
        before += prob(key);
        if reached(before) {
            return Some((j, before));
        }
    }
    None
}

/// Token indices by descending value, ties by ascending index (`f32::total_cmp`'s order).
fn ranking(row: &[f32]) -> Vec<usize> {
    let mut keys = ranking_keys(row);
    keys.sort_unstable();
    keys.into_iter().map(key_token).collect()
}

/// One `u64` per token whose ascending order is [`ranking`]'s: the value's bits mapped to an
/// unsigned order equal to `total_cmp`'s and reversed, then the index. Sorting or selecting
/// these is several times faster than comparing indices through the row.
fn ranking_keys(row: &[f32]) -> Vec<u64> {
    row.iter()
        .enumerate()
        .map(|(i, &v)| {
            let bits = v.to_bits();
            let ascending = if bits >> 31 == 1 {
                !bits
            } else {
                bits | 1 << 31
            };
            (u64::from(!ascending) << 32) | i as u64
        })
        .collect()
}

fn key_token(key: u64) -> usize {
    (key & 0xffff_ffff) as usize
}

/// exp((row − max row) / temperature) for every token: one vectorizable pass.
fn unnormalised(row: &[f32], temperature: f32) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) / temperature;
    row.iter()
        .map(|&l| super::kernels::exp(l / temperature - max))
        .collect()
}

/// Relative probability above which a token is ranked by [`sample_token`]'s fast path.
const HEAD: f64 = 1e-4;

/// The token the draw `u` picks from `ranked` tokens with probabilities `probs` (descending,
/// summing to 1 when `complete`, to less when only the head is ranked), after nucleus
/// truncation at `top_p`; None when the answer lies beyond an incomplete ranking.
fn draw(ranked: &[usize], probs: &[f64], top_p: f32, u: f64, complete: bool) -> Option<usize> {
    let mut keep = probs.len();
    if top_p < 1.0 {
        let mut cum = 0.0;
        match probs.iter().position(|p| {
            cum += p;
            cum >= top_p as f64
        }) {
            Some(j) => keep = j + 1,
            None if !complete => return None,
            None => {}
        }
    }
    // Within the nucleus, the draw is scaled by its mass rather than each probability
    // renormalised.
    let nucleus = top_p < 1.0;
    let target = if nucleus {
        u * probs[..keep].iter().sum::<f64>()
    } else {
        u
    };
    let mut cum = 0.0;
    for (j, p) in probs[..keep].iter().enumerate() {
        cum += p;
        if target < cum {
            return Some(ranked[j]);
        }
    }
    if complete || nucleus {
        ranked.get(keep.saturating_sub(1)).copied()
    } else {
        None
    }
}

/// A continuation of a beam: the token after beam `beam` of its batch row, with the
/// hypothesis's summed log-probability `score` and the token's own `logprob`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Continuation {
    pub score: f32,
    pub beam: usize,
    pub token: usize,
    pub logprob: f32,
}

/// The `k` best continuations of each batch row's `beams` hypotheses (`scores`, one per row
/// of `lp`), best first; ties go to the lower beam, then the lower token, as a stable sort of
/// the row's `[beams · V]` candidates would order them. One pass over the candidates keeps
/// the `k` best so far: sorting all `beams · V` of them at every token cost more than a small
/// model's decoding step (docs/performance.md, "Beam search").
pub fn best_continuations(
    lp: &[f32],
    scores: &[f32],
    beams: usize,
    k: usize,
) -> Vec<Vec<Continuation>> {
    let vocab = lp.len() / scores.len();
    lp.chunks_exact(beams * vocab)
        .zip(scores.chunks_exact(beams))
        .map(|(rows, bases)| {
            let mut best: Vec<Continuation> = Vec::with_capacity(k + 1);
            for (beam, (row, &base)) in rows.chunks_exact(vocab).zip(bases).enumerate() {
                for (token, &logprob) in row.iter().enumerate() {
                    let score = base + logprob;
                    if best.len() == k && best[k - 1].score.total_cmp(&score).is_ge() {
                        continue;
                    }
                    let at = best.partition_point(|c| c.score.total_cmp(&score).is_ge());
                    best.insert(
                        at,
                        Continuation {
                            score,
                            beam,
                            token,
                            logprob,
                        },
                    );
                    best.truncate(k);
                }
            }
            best
        })
        .collect()
}

/// [`best_continuations`] on the device, for `lp` in f32: the host reads `k` continuations a
/// batch row instead of the `[rows, V]` log-probabilities. burn's top-k orders tied scores as
/// the backend does. GPU top-k kernels may leave out −∞ scores, so a batch row needs `k`
/// finite candidates: its live beams must hold at least `k` tokens ([`beam_search`] takes
/// the host's pick otherwise).
pub fn best_continuations_on_device(
    lp: Tensor<2>,
    scores: &[f32],
    beams: usize,
    k: usize,
) -> Vec<Vec<Continuation>> {
    let [rows, vocab] = lp.dims();
    let batch = rows / beams;
    let device = lp.device();
    let bases = Tensor::<1>::from_data(TensorData::new(scores.to_vec(), [rows]), in_f32(&device));
    let candidates = (lp.clone() + bases.unsqueeze_dim(1)).reshape([batch, beams * vocab]);
    let (best, index) = candidates.topk_with_indices(k, 1);
    let logprobs = lp.reshape([batch, beams * vocab]).gather(1, index.clone());
    let values = crate::tensor::floats(Tensor::cat(vec![best, logprobs], 1));
    let index = crate::tensor::indices(index);
    (0..batch)
        .map(|b| {
            (0..k)
                .map(|r| {
                    let flat = index[b * k + r];
                    Continuation {
                        score: values[b * 2 * k + r],
                        beam: flat / vocab,
                        token: flat % vocab,
                        logprob: values[b * 2 * k + k + r],
                    }
                })
                .collect()
        })
        .collect()
}

#[derive(Clone)]
struct Hypothesis {
    score: f32,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
}

/// Beam search as transformers' (`early_stopping=True`): at each step the top `2·beams`
/// continuations are considered; an end token among the top `beams` closes a hypothesis,
/// scored `sum log p / len^length_penalty` (len counts the end token). Limits on repetition
/// apply to each hypothesis's log-probabilities, and its score sums them so limited, as
/// transformers' does; the log-probabilities reported are the model's own.
#[allow(clippy::too_many_arguments)]
fn beam_search(
    model: &Captioner,
    encoded: &EncodedImages,
    styles: Option<&[usize]>,
    batch: usize,
    beams: usize,
    length_penalty: f32,
    max_new_tokens: usize,
    repeats: Repeats,
) -> Result<Vec<Generation>> {
    let device = encoded.cross[0].k.device();
    let eos = model.config.eos_token_id;
    let vocab = model.decoder.vocab_size();
    let rows: Vec<usize> = (0..batch)
        .flat_map(|b| std::iter::repeat_n(b, beams))
        .collect();
    let encoded = encoded.for_rows(&rows);
    let (mut cache, mut logits) = model.start_decoding(
        &encoded,
        style_tensor(styles, beams, &device),
        batch * beams,
    );
    // Only the first beam is live at the start, so the first step does not pick duplicates.
    let mut running: Vec<Vec<Hypothesis>> = (0..batch)
        .map(|_| {
            (0..beams)
                .map(|j| Hypothesis {
                    score: if j == 0 { 0.0 } else { f32::NEG_INFINITY },
                    tokens: vec![],
                    logprobs: vec![],
                })
                .collect()
        })
        .collect();
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); batch];
    let mut done = vec![false; batch];
    let normalised = |h: &Hypothesis| h.score / (h.tokens.len() as f32).powf(length_penalty);
    let considered = (2 * beams).min(beams * vocab);
    // At the first step only one beam a picture is live.
    let on_device =
        !super::kernels::on_cpu_backend(&device) && vocab >= considered && repeats.is_off();
    for step in 0..max_new_tokens {
        let lp = log_softmax(logits.cast(FloatDType::F32), 1);
        let scores: Vec<f32> = running
            .iter()
            .flat_map(|r| (0..beams).map(|j| r.get(j).map_or(f32::NEG_INFINITY, |h| h.score)))
            .collect();
        let best = if on_device {
            best_continuations_on_device(lp, &scores, beams, considered)
        } else if repeats.is_off() {
            best_continuations(&crate::tensor::floats(lp), &scores, beams, considered)
        } else {
            let lp = crate::tensor::floats(lp);
            let mut limited = lp.clone();
            for (r, row) in limited.chunks_exact_mut(vocab).enumerate() {
                if let Some(h) = running[r / beams].get(r % beams) {
                    repeats.apply(row, &h.tokens);
                }
            }
            let mut best = best_continuations(&limited, &scores, beams, considered);
            for (b, best) in best.iter_mut().enumerate() {
                for c in best {
                    c.logprob = lp[(b * beams + c.beam) * vocab + c.token];
                }
            }
            best
        };
        let mut parent = Vec::with_capacity(batch * beams);
        let mut next_tokens = Vec::with_capacity(batch * beams);
        for (b, best) in best.into_iter().enumerate() {
            if done[b] {
                for j in 0..beams {
                    parent.push((b * beams + j) as i64);
                    next_tokens.push(eos.unwrap_or(0) as i64);
                }
                continue;
            }
            let mut next: Vec<Hypothesis> = Vec::with_capacity(beams);
            for (rank, c) in best.into_iter().enumerate() {
                let mut h = running[b][c.beam].clone();
                h.score = c.score;
                h.tokens.push(c.token as u32);
                h.logprobs.push(c.logprob);
                if Some(c.token as u32) == eos {
                    if rank < beams {
                        finished[b].push(h);
                    }
                } else if next.len() < beams {
                    parent.push((b * beams + c.beam) as i64);
                    next_tokens.push(c.token as i64);
                    next.push(h);
                }
                if next.len() == beams {
                    break;
                }
            }
            running[b] = next;
            if finished[b].len() >= beams {
                done[b] = true;
            }
        }
        if done.iter().all(|&d| d) || step + 1 == max_new_tokens {
            break;
        }
        cache.select(Tensor::from_data(
            TensorData::new(parent, [batch * beams]),
            &device,
        ));
        logits = model.step(
            &encoded,
            Tensor::from_data(TensorData::new(next_tokens, [batch * beams]), &device),
            &mut cache,
        );
    }
    Ok((0..batch)
        .map(|b| {
            let mut all = finished[b].clone();
            if !done[b] {
                all.extend(running[b].iter().cloned());
            }
            let best = all
                .into_iter()
                .max_by(|x, y| normalised(x).total_cmp(&normalised(y)))
                .expect("at least one hypothesis");
            Generation {
                tokens: best.tokens,
                logprobs: best.logprobs,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The continuations as a stable sort of every candidate would rank them.
    fn by_full_sort(lp: &[f32], scores: &[f32], beams: usize, k: usize) -> Vec<Vec<Continuation>> {
        let vocab = lp.len() / scores.len();
        (0..scores.len() / beams)
            .map(|b| {
                let mut all: Vec<Continuation> = (0..beams * vocab)
                    .map(|flat| {
                        let (beam, token) = (flat / vocab, flat % vocab);
                        let logprob = lp[(b * beams + beam) * vocab + token];
                        let score = scores[b * beams + beam] + logprob;
                        Continuation {
                            score,
                            beam,
                            token,
                            logprob,
                        }
                    })
                    .collect();
                all.sort_by(|x, y| y.score.total_cmp(&x.score));
                all.truncate(k);
                all
            })
            .collect()
    }

    /// Log-probabilities of `rows` × `vocab` on a coarse grid (many ties), and hypothesis
    /// scores with a dead beam (−∞, as at the first step) in every batch row.
    fn beam_inputs(rows: usize, vocab: usize, beams: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let lp = (0..rows * vocab)
            .map(|_| -(rng.random_range(0..24) as f32) * 0.25)
            .collect();
        let scores = (0..rows)
            .map(|r| match r % beams {
                1 => f32::NEG_INFINITY,
                _ => -(rng.random_range(0..8) as f32) * 0.5,
            })
            .collect();
        (lp, scores)
    }

    #[test]
    fn beam_continuations_are_the_full_ranking_s_best() {
        for (beams, vocab, seed) in [(1, 7, 0), (3, 11, 1), (4, 50, 2), (2, 3, 3)] {
            let (lp, scores) = beam_inputs(5 * beams, vocab, beams, seed);
            for k in [1, 2 * beams, beams * vocab] {
                assert_eq!(
                    best_continuations(&lp, &scores, beams, k),
                    by_full_sort(&lp, &scores, beams, k),
                    "{beams} beams, vocabulary {vocab}, k {k}"
                );
            }
        }
    }

    /// The device form reads the same continuations (distinct scores: burn's top-k may order
    /// ties otherwise).
    #[test]
    fn beam_continuations_on_the_device_are_the_host_s() {
        let device = Device::flex();
        let (beams, vocab) = (3, 40);
        let mut rng = StdRng::seed_from_u64(7);
        let lp: Vec<f32> = (0..4 * beams * vocab)
            .map(|_| -rng.random::<f32>() * 9.0)
            .collect();
        let scores: Vec<f32> = (0..4 * beams)
            .map(|r| {
                if r % beams == 2 {
                    f32::NEG_INFINITY
                } else {
                    -rng.random::<f32>()
                }
            })
            .collect();
        let on_device = best_continuations_on_device(
            Tensor::from_data(TensorData::new(lp.clone(), [4 * beams, vocab]), &device),
            &scores,
            beams,
            2 * beams,
        );
        assert_eq!(
            on_device,
            best_continuations(&lp, &scores, beams, 2 * beams)
        );
    }

    #[test]
    fn nucleus_keeps_only_the_head() {
        let row: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let t = sample_token(&row, 1.0, 0, 0.7, &mut rng);
            assert!(
                t < 2,
                "top-p 0.7 must keep only the two most likely tokens, got {t}"
            );
        }
        for _ in 0..200 {
            assert_eq!(sample_token(&row, 1.0, 1, 1.0, &mut rng), 0);
        }
    }

    /// The plain algorithm: ranks the whole vocabulary for every draw.
    fn sample_by_full_ranking(row: &[f32], top_p: f32, u: f64) -> usize {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let weights = unnormalised(row, 1.0);
        let total: f64 = idx.iter().map(|&i| weights[i] as f64).sum();
        let mut probs: Vec<f64> = idx.iter().map(|&i| weights[i] as f64 / total).collect();
        if top_p < 1.0 {
            let mut cum = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cum += p;
                    cum >= top_p as f64
                })
                .map_or(probs.len(), |j| j + 1);
            probs.truncate(keep);
            idx.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut cum = 0.0;
        for (j, p) in probs.iter().enumerate() {
            cum += p;
            if u < cum {
                return idx[j];
            }
        }
        *idx.last().unwrap()
    }

    #[test]
    fn the_head_and_the_selection_pick_what_the_full_ranking_picks() {
        // Rows of random sharpness (the head decides), and rows of one likely token over a
        // wide flat tail of tokens each below the head's threshold (the draw often lands in
        // the tail: the selection over the whole row decides).
        let mut gen = StdRng::seed_from_u64(3);
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for sharpness in [0.5f32, 3.0, 8.0] {
            for _ in 0..20 {
                rows.push(
                    (0..500)
                        .map(|_| sharpness * 4.0 * gen.random::<f32>().powi(2))
                        .collect(),
                );
            }
        }
        for _ in 0..10 {
            let mut row: Vec<f32> = (0..5000).map(|_| 0.1 * gen.random::<f32>()).collect();
            row[gen.random_range(0..5000)] = 10.0;
            rows.push(row);
        }
        let (mut fallbacks, mut trials) = (0, 0);
        for logits in rows {
            let lse = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
            let row: Vec<f32> = logits.iter().map(|l| l - lse).collect();
            for top_p in [1.0f32, 0.9, 0.5] {
                for seed in 0..30u64 {
                    let u: f64 = StdRng::seed_from_u64(seed).random();
                    let mut rng = StdRng::seed_from_u64(seed);
                    let fast = sample_token(&row, 1.0, 0, top_p, &mut rng);
                    let full = sample_by_full_ranking(&row, top_p, u);
                    assert_eq!(fast, full, "top-p {top_p}, draw {u}");
                    fallbacks += usize::from((row[fast] as f64).exp() < HEAD);
                    trials += 1;
                }
            }
        }
        assert!(
            fallbacks > 0 && fallbacks < trials,
            "both paths exercised: {fallbacks} tail draws of {trials}"
        );
    }

    #[test]
    fn ranking_is_total_cmp_descending_with_ties_by_index() {
        let row = [
            0.5f32,
            -0.0,
            0.0,
            f32::NEG_INFINITY,
            -3.25,
            0.5,
            f32::INFINITY,
            -1e-30,
            1e-30,
            -3.25,
        ];
        let mut want: Vec<usize> = (0..row.len()).collect();
        want.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        assert_eq!(ranking(&row), want);
    }

    /// The device picker's frequencies over many copies of one row: plain sampling, with
    /// temperature, top-k and top-p, and greedy rows mixed in.
    #[test]
    fn device_picks_follow_the_truncated_distribution() {
        let device = Device::flex();
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let rows = 4000;
        let lp: Vec<f32> = (0..rows).flat_map(|_| probs.map(f32::ln)).collect();
        let lp = || Tensor::<2>::from_data(TensorData::new(lp.clone(), [rows, 4]), &device);
        let sample = |temperature, top_k, top_p, u| Choice::Sample {
            temperature,
            top_k,
            top_p,
            u,
        };
        // Expected frequencies of each setting (greedy rows always take token 0).
        let sharp: Vec<f64> = probs.iter().map(|&p| (p as f64).powi(2)).collect();
        let sharp_total: f64 = sharp.iter().sum();
        let settings: [(Choice, [f64; 4]); 5] = [
            (sample(1.0, 0, 1.0, 0.1), [0.5, 0.3, 0.15, 0.05]),
            (
                sample(0.5, 0, 1.0, 0.2),
                std::array::from_fn(|i| sharp[i] / sharp_total),
            ),
            (sample(1.0, 2, 1.0, 0.3), [0.625, 0.375, 0.0, 0.0]),
            (sample(1.0, 0, 0.7, 0.4), [0.625, 0.375, 0.0, 0.0]),
            (Choice::Greedy, [1.0, 0.0, 0.0, 0.0]),
        ];
        let choices: Vec<Choice> = (0..rows).map(|i| settings[i % 5].0).collect();
        let picks = crate::tensor::indices(DevicePicker::new(&choices, &device).pick(lp()));
        for (s, (_, want)) in settings.iter().enumerate() {
            let mine: Vec<usize> = picks.iter().skip(s).step_by(5).copied().collect();
            for (token, &p) in want.iter().enumerate() {
                let f = mine.iter().filter(|&&t| t == token).count() as f64 / mine.len() as f64;
                if p == 0.0 {
                    assert_eq!(f, 0.0, "setting {s}: token {token} must be truncated");
                } else {
                    assert!(
                        (f - p).abs() < 0.05,
                        "setting {s}: token {token} at {f}, want {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_nucleus_threshold_keeps_the_smallest_head_reaching_top_p() {
        let device = Device::flex();
        let probs = Tensor::<2>::from_data(
            TensorData::new(vec![0.1f32, 0.5, 0.15, 0.25, 0.4, 0.3, 0.2, 0.1], [2, 4]),
            &device,
        );
        let top_p = Tensor::<2>::from_data(TensorData::new(vec![0.7f32, 0.71], [2, 1]), &device);
        let t = crate::tensor::floats(nucleus_threshold(probs, top_p));
        // Row 0: 0.5 + 0.25 = 0.75 ≥ 0.7, so the nucleus ends at 0.25; row 1: 0.4 + 0.3 =
        // 0.7 < 0.71, so it takes 0.2 too.
        assert!(t[0] > 0.15 && t[0] <= 0.25, "row 0 threshold {}", t[0]);
        assert!(t[1] > 0.1 && t[1] <= 0.2, "row 1 threshold {}", t[1]);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let row: Vec<f32> = [0.7f32, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let mut rng = StdRng::seed_from_u64(2);
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            counts[sample_token(&row, 1.0, 0, 1.0, &mut rng)] += 1;
        }
        let f = counts[0] as f64 / 20_000.0;
        assert!((f - 0.7).abs() < 0.02, "frequency of the 0.7 token: {f}");
    }
}
