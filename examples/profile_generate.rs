//! Greedy generation of the benchmark model (batch 16, 32 tokens), for profilers:
//! `perf record target/release/examples/profile_generate`.
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use stylecap::model::{generate, Captioner, DecodeOptions};

fn main() {
    stylecap::util::keep_freed_memory();
    let device = Device::flex();
    let model = Captioner::new(stylecap::bench::bench_model_config(), &device);
    let pixels = Tensor::<4>::random([16, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let opts = DecodeOptions {
        max_new_tokens: 32,
        ..Default::default()
    };
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = generate(&model, pixels.clone(), None, &opts).expect("generation");
        assert_eq!(out[0].tokens.len(), 32);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!("median of {}: {:.3} s", times.len(), times[times.len() / 2]);
}
