//! Rough split of one benchmark training step: forward, loss, backward, the trainers' AdamW.
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use stylecap::model::lm_head;
use stylecap::model::Captioner;
use stylecap::optim::{Accumulated, AdamW, AdamWConfig};
use stylecap::sft::step::teacher_forcing;

fn main() {
    stylecap::util::keep_freed_memory();
    let device = Device::flex().autodiff();
    let cfg = stylecap::bench::bench_model_config();
    let mut model = Captioner::new(cfg, &device);
    let captions: Vec<Vec<u32>> = (0..16)
        .map(|i| {
            (0..63)
                .map(|j| ((i * 131 + j * 17) % 8191 + 1) as u32)
                .collect()
        })
        .collect();
    let (ids, targets, mask) = teacher_forcing(&captions, 0, 0, 0, &device);
    let px = Tensor::<4>::random([16, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let mut optim = AdamW::new(AdamWConfig::default());
    let mut rows: Vec<[f64; 5]> = Vec::new();
    for _ in 0..12 {
        let t0 = Instant::now();
        let enc = model.encode_hidden(px.clone());
        let _ = enc.clone().into_data();
        let t1 = Instant::now();
        let hidden = model.hidden(px.clone(), None, ids.clone(), None);
        let _ = hidden.clone().into_data();
        let t2 = Instant::now();
        let weight = model.decoder.lm_head_weight();
        let loss = lm_head::cross_entropy(hidden, weight, targets.clone(), mask.clone());
        let _ = loss.clone().into_data();
        let t3 = Instant::now();
        let grads = loss.backward();
        let t4 = Instant::now();
        let mut acc = Accumulated::default();
        acc.add(&model, grads, 1.0);
        model = optim.update(model, acc, |_| 1e-4).0;
        let t5 = Instant::now();
        rows.push([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4].map(|d| d.as_secs_f64()));
    }
    // Medians over the runs after two warm-ups.
    let median = |i: usize| {
        let mut v: Vec<f64> = rows[2..].iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median of {}: encoder {:.3} fwd(to hidden) {:.3} head+loss {:.3} bwd {:.3} optim {:.3} s",
        rows.len() - 2,
        median(0),
        median(1),
        median(2),
        median(3),
        median(4)
    );
}
