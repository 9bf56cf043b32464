//! Matrix products at the shapes of decoding (few rows) and of teacher-forced passes (many
//! rows) at the ViT-B/16 + GPT-2 scale, through burn's CPU backend, with gemm's default
//! packing threshold and with `util::tune_matmul`'s: GFLOP/s, medians of 15.
//! `RAYON_NUM_THREADS=2 cargo run --release --example matmul_shapes`
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;

fn gflops(x: &Tensor<2>, w: &Tensor<2>, transposed: bool) -> f64 {
    let [m, k] = x.dims();
    let n = if transposed { w.dims()[0] } else { w.dims()[1] };
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            let w = if transposed {
                w.clone().transpose()
            } else {
                w.clone()
            };
            std::hint::black_box(x.clone().matmul(w));
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    2.0 * (m * k * n) as f64 / times[7] / 1e9
}

fn main() {
    stylecap::util::keep_freed_memory();
    let device = Device::flex();
    // (rows, in, out, weight stored [out, in] as the tied LM head)
    let shapes = [
        (8, 768, 2304, false),
        (8, 768, 3072, false),
        (32, 768, 768, false),
        (32, 768, 2304, false),
        (32, 768, 3072, false),
        (32, 3072, 768, false),
        (32, 768, 50257, true),
        (1056, 768, 2304, false),
        (1056, 768, 3072, false),
        (1056, 3072, 768, false),
    ];
    println!("rows x in x out: GFLOP/s with gemm's default packing, then with tune_matmul");
    for (m, k, n, transposed) in shapes {
        let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let shape = if transposed { [n, k] } else { [k, n] };
        let w = Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        stylecap::util::tune_matmul(false);
        let before = gflops(&x, &w, transposed);
        stylecap::util::tune_matmul(true);
        let after = gflops(&x, &w, transposed);
        println!("{m:>5} x {k:>4} x {n:>5}: {before:6.1} -> {after:6.1}");
    }
}
