#![allow(dead_code)]
pub mod browser;

use std::path::PathBuf;

use burn::prelude::*;
use stylecap::model::weights::SafetensorsFile;

/// An empty scratch folder for one test, unique to the test binary's process.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stylecap-{suite}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn reference(name: &str) -> SafetensorsFile {
    SafetensorsFile::open(&fixture(name).join("reference.safetensors"))
        .expect("fixture reference; run tools/make_fixtures.py")
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    max_diff(&values(a), &values(b))
}

/// The largest |a[i] − b[i]| over the common length.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn ints<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
}

use stylecap::model::gpt2::Gpt2Config;
use stylecap::model::vision::VisionConfig;
use stylecap::model::{Captioner, CaptionerConfig, StyleConfig};

/// A tiny captioner: 16×16 images, patch 4; encoder 16 wide, decoder 24 wide (so a
/// projection exists), 2 layers each, optional styles with 2 prefix tokens.
pub fn tiny_config(encoder: &str, styles: &[&str], vocab: usize) -> CaptionerConfig {
    let enc = serde_json::json!({
        "model_type": encoder, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": 16, "patch_size": 4, "initializer_range": 0.2,
        "shape_channel": encoder == "vit",
    });
    let mut dec = Gpt2Config::new(vocab, 40, 24, 2, 2);
    dec.initializer_range = 0.2;
    let style = StyleConfig {
        styles: styles.iter().map(|s| s.to_string()).collect(),
        prefix_tokens: if styles.is_empty() { 0 } else { 2 },
    };
    CaptionerConfig::new(VisionConfig::from_json(&enc).unwrap(), dec, 0, 1, style)
}

/// Six sampled captions of different lengths (two per picture of a three-picture rollout),
/// in `tiny_captioner`'s vocabulary.
pub fn rollout_captions() -> Vec<Vec<u32>> {
    vec![
        vec![5, 9, 12, 7, 3],
        vec![3, 20],
        vec![40, 2, 11, 6, 8, 1, 4],
        vec![7, 7],
        vec![13, 21, 34],
        vec![2, 4, 6, 8, 10, 12],
    ]
}

pub fn tiny_captioner(encoder: &str, styles: &[&str], device: &Device) -> Captioner {
    device.seed(42);
    Captioner::new(tiny_config(encoder, styles, 50), device)
}

/// Runs the `stylecap` binary built for the tests.
pub fn stylecap(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_stylecap"))
        .args(args)
        .output()
        .unwrap()
}

/// A captioner small enough to train a few steps in a test.
pub fn tiny_model_shape() -> stylecap::sft::config::ModelShape {
    stylecap::sft::config::ModelShape {
        image_size: 32,
        patch_size: 16,
        vision_dim: 16,
        vision_layers: 1,
        vision_heads: 2,
        decoder_dim: 16,
        decoder_layers: 1,
        decoder_heads: 2,
        vocab_size: 300,
        max_positions: 64,
        prefix_tokens: 1,
        shape_channel: true,
    }
}

/// burn seeds its CPU random generator per process, so tests that seed it and draw from it
/// (initial weights, random inputs) on several test threads at once would draw each other's
/// numbers: such tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A base captioner run (tiny shape, `steps` supervised steps) and a tiny critic, trained
/// in scratch folders of `suite`: `(run dir, critic dir)`.
pub fn tiny_base_and_critic(suite: &str, steps: usize) -> (PathBuf, PathBuf) {
    use stylecap::critic::train::{train_critic, CriticTrainConfig};
    use stylecap::run::RunOptions;
    use stylecap::sft::config::TrainConfig;
    use stylecap::sft::trainer::Trainer;
    let _turn = serial();
    let device = Device::flex();
    let base = scratch(suite, "base");
    let _ = std::fs::remove_dir_all(&base);
    let sft = TrainConfig {
        world_train: 48,
        world_val: 4,
        style_texts: 60,
        model: tiny_model_shape(),
        steps,
        batch_size: 4,
        style_batch_size: 4,
        eval_every: steps,
        checkpoint_every: steps,
        eval_images: 2,
        max_caption_tokens: 30,
        ..TrainConfig::default()
    };
    Trainer::new(sft, &base, false, &device)
        .unwrap()
        .run(&RunOptions::default())
        .unwrap();
    let critic = scratch(suite, "critic");
    let cc = CriticTrainConfig {
        texts_per_style: 40,
        world_captions: 20,
        steps: 3,
        batch_size: 8,
        vocab_size: 300,
        hidden: 16,
        layers: 1,
        heads: 2,
        ..CriticTrainConfig::default()
    };
    train_critic(&cc, &critic, false, &device).unwrap();
    (base, critic)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A valid PNG header declaring `w`×`h` pixels, followed by almost no data: a
/// decompression bomb's shape.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
    chunk(b"IEND", &[]);
    out
}
