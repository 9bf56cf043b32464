//! Scene-world generation speed on one core: pictures with their scene graphs and captions,
//! with and without PNG encoding. Medians of repeated runs.
//!
//! cargo run --release --example bench_world [-- SIZE IMAGES RUNS]

use std::time::Instant;

use stylecap::data::synth::encode_png;
use stylecap::world::{Split, World, WorldConfig};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: SIZE IMAGES RUNS"))
        .collect();
    let size = args.first().copied().unwrap_or(64) as u32;
    let n = args.get(1).copied().unwrap_or(4000) as u64;
    let runs = args.get(2).copied().unwrap_or(7);
    let world = World::new(WorldConfig {
        image_size: size,
        ..WorldConfig::default()
    });
    let mut rates = Vec::new();
    let mut png_rates = Vec::new();
    let mut bytes = 0usize;
    for run in 0..runs {
        let offset = run as u64 * n;
        let t = Instant::now();
        for i in 0..n {
            std::hint::black_box(world.example(Split::Train, offset + i));
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for i in 0..n {
            bytes += encode_png(&world.example(Split::Train, offset + i).image).len();
        }
        png_rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "{size}x{size}, one thread, {n} images x {runs} runs: median {:.0} images/s (picture + \
         scene graph + 5 captions), {:.0} images/s with PNG encoding ({:.1} KB per PNG)",
        median(rates),
        median(png_rates),
        bytes as f64 / (runs as f64 * n as f64) / 1024.0
    );
}
