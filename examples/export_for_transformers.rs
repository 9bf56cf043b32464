//! Writes a small random stylecap captioner (ViT + GPT-2, widths differ) and the logits it
//! computes, and in `lora/` LoRA adapters over it with the logits of base + adapters, for
//! tools/check_transformers_opens.py to compare against transformers and PEFT.

use burn::prelude::*;
use burn::tensor::Distribution;
use stylecap::model::gpt2::Gpt2Config;
use stylecap::model::lora::{self, LoraConfig};
use stylecap::model::vision::VisionConfig;
use stylecap::model::vit::ViTConfig;
use stylecap::model::weights::{replace_named, write_safetensors, StoredTensor};
use stylecap::model::{Captioner, CaptionerConfig, StyleConfig};

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: export_for_transformers OUT_DIR"),
    );
    let device = Device::flex();
    device.seed(1);
    let mut dec = Gpt2Config::new(64, 32, 32, 2, 4);
    dec.initializer_range = 0.2;
    let cfg = CaptionerConfig::new(
        VisionConfig::Vit(ViTConfig::new(32, 8, 24, 2, 4)),
        dec,
        0,
        0,
        StyleConfig::default(),
    );
    let model = Captioner::new(cfg, &device);
    model.save(&out)?;
    let pixels = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let ids: Vec<i64> = (0..16).map(|i| (i * 7 % 64) as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 8]), &device);
    write_logits(&out, &model, pixels.clone(), ids.clone())?;

    // Adapters with non-zero B (fresh ones would leave the logits as they are).
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        mlp: true,
    };
    let adapted = lora::add_adapters(model, &config, &device);
    let adapted = replace_named(adapted, "", |name, shape| {
        name.contains(".lora_B.").then(|| StoredTensor {
            shape: shape.to_vec(),
            values: (0..shape.iter().product::<usize>())
                .map(|i| ((i * 7919 + name.len()) % 101) as f32 / 100.0 - 0.5)
                .collect(),
        })
    });
    let lora_dir = out.join("lora");
    lora::save_adapters(&lora_dir, &adapted, &std::path::absolute(&out)?)?;
    write_logits(&lora_dir, &adapted, pixels, ids)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn write_logits(
    dir: &std::path::Path,
    model: &Captioner,
    pixels: Tensor<4>,
    ids: Tensor<2, Int>,
) -> anyhow::Result<()> {
    let logits = model.forward(pixels.clone(), None, ids.clone(), None);
    let t = |name: &str, dims: Vec<usize>, v: Vec<f32>| (name.to_string(), dims, v);
    write_safetensors(
        &dir.join("stylecap_logits.safetensors"),
        &[
            t(
                "pixel_values",
                pixels.dims().to_vec(),
                pixels.into_data().try_to_vec::<f32>().unwrap(),
            ),
            t(
                "decoder_input_ids",
                ids.dims().to_vec(),
                ids.into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap(),
            ),
            t(
                "logits",
                logits.dims().to_vec(),
                logits.into_data().try_to_vec::<f32>().unwrap(),
            ),
        ],
    )
}
