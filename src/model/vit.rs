//! ViT as transformers' `ViTModel`: patch-embedding convolution, CLS token, learned position
//! embeddings, pre-norm transformer layers, final layer norm (and the optional pooler, kept
//! only so that checkpoints round-trip).

use anyhow::Result;
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, Linear};
use burn::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::layers::{
    apply_linear, attend, layer_norm, linear, merge_heads, normal_param, split_heads, Activation,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViTConfig {
    #[serde(default = "model_type")]
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "act")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d224")]
    pub image_size: usize,
    #[serde(default = "d16")]
    pub patch_size: usize,
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    #[serde(default = "init")]
    pub initializer_range: f64,
    /// stylecap's own addition (not in transformers): the patch embedding also sees
    /// colour-free outlines of each patch (see [`outlines`]), so that recognising a shape
    /// does not have to be learnt once per colour. Off for HF checkpoints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shape_channel: bool,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn model_type() -> String {
    "vit".into()
}
fn act() -> String {
    "gelu".into()
}
fn eps() -> f64 {
    1e-12
}
fn d224() -> usize {
    224
}
fn d16() -> usize {
    16
}
fn d3() -> usize {
    3
}
fn yes() -> bool {
    true
}
fn init() -> f64 {
    0.02
}

impl ViTConfig {
    pub fn new(
        image_size: usize,
        patch_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
    ) -> Self {
        Self {
            model_type: model_type(),
            hidden_size,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden_size,
            hidden_act: act(),
            layer_norm_eps: eps(),
            image_size,
            patch_size,
            num_channels: 3,
            qkv_bias: true,
            initializer_range: init(),
            shape_channel: false,
            extra: Default::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            !self.shape_channel || self.patch_size.is_multiple_of(2),
            "shape_channel needs an even patch_size (its finer outline halves it), got {}",
            self.patch_size
        );
        super::layers::check_vision_shape(
            self.hidden_size,
            self.num_attention_heads,
            self.image_size,
            self.patch_size,
            &self.hidden_act,
        )
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

#[derive(Module, Debug)]
pub struct ViTPatchEmbeddings {
    pub projection: Conv2d,
    /// Embeds [`outlines`] (two channels) beside `projection`; present with `shape_channel`.
    pub shape_projection: Option<Conv2d>,
}

#[derive(Module, Debug)]
pub struct ViTEmbeddings {
    pub cls_token: Param<Tensor<3>>,
    pub position_embeddings: Param<Tensor<3>>,
    pub patch_embeddings: ViTPatchEmbeddings,
}

#[derive(Module, Debug)]
pub struct ViTSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
}

#[derive(Module, Debug)]
pub struct ViTDense {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct ViTAttention {
    pub attention: ViTSelfAttention,
    pub output: ViTDense,
}

#[derive(Module, Debug)]
pub struct ViTLayer {
    pub attention: ViTAttention,
    pub intermediate: ViTDense,
    pub output: ViTDense,
    pub layernorm_before: LayerNorm,
    pub layernorm_after: LayerNorm,
}

#[derive(Module, Debug)]
pub struct ViTEncoder {
    pub layer: Vec<ViTLayer>,
}

#[derive(Module, Debug)]
pub struct ViTModel {
    pub embeddings: ViTEmbeddings,
    pub encoder: ViTEncoder,
    pub layernorm: LayerNorm,
    /// `pooler.dense`: unused for captioning; present when the checkpoint has it.
    pub pooler: Option<ViTDense>,
    #[module(skip)]
    pub n_head: usize,
    #[module(skip)]
    pub patch_size: usize,
    #[module(skip)]
    pub act: super::layers::ActivationName,
}

impl ViTModel {
    pub fn new(cfg: &ViTConfig, with_pooler: bool, device: &Device) -> Self {
        let d = cfg.hidden_size;
        let std = cfg.initializer_range;
        let eps = cfg.layer_norm_eps;
        let normal = |shape: [usize; 3]| normal_param(shape, std, device);
        let patchify = |channels: usize, bias: bool| {
            Conv2dConfig::new([channels, d], [cfg.patch_size, cfg.patch_size])
                .with_stride([cfg.patch_size, cfg.patch_size])
                .with_bias(bias)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device)
        };
        let projection = patchify(cfg.num_channels, true);
        let shape_projection = cfg.shape_channel.then(|| patchify(2, false));
        let layer = (0..cfg.num_hidden_layers)
            .map(|_| ViTLayer {
                attention: ViTAttention {
                    attention: ViTSelfAttention {
                        query: linear(d, d, cfg.qkv_bias, std, device),
                        key: linear(d, d, cfg.qkv_bias, std, device),
                        value: linear(d, d, cfg.qkv_bias, std, device),
                    },
                    output: ViTDense {
                        dense: linear(d, d, true, std, device),
                    },
                },
                intermediate: ViTDense {
                    dense: linear(d, cfg.intermediate_size, true, std, device),
                },
                output: ViTDense {
                    dense: linear(cfg.intermediate_size, d, true, std, device),
                },
                layernorm_before: layer_norm(d, eps, device),
                layernorm_after: layer_norm(d, eps, device),
            })
            .collect();
        Self {
            embeddings: ViTEmbeddings {
                cls_token: normal([1, 1, d]),
                position_embeddings: normal([1, cfg.num_patches() + 1, d]),
                patch_embeddings: ViTPatchEmbeddings {
                    projection,
                    shape_projection,
                },
            },
            encoder: ViTEncoder { layer },
            layernorm: layer_norm(d, eps, device),
            pooler: with_pooler.then(|| ViTDense {
                dense: linear(d, d, true, std, device),
            }),
            n_head: cfg.num_attention_heads,
            patch_size: cfg.patch_size,
            act: super::layers::ActivationName(
                Activation::parse(&cfg.hidden_act).unwrap_or(Activation::Gelu),
            ),
        }
    }

    /// `last_hidden_state` `[B, 1 + patches, D]` for `pixel_values` `[B, C, H, W]`.
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        let x =
            (0..self.encoder.layer.len()).fold(self.embed(pixel_values), |x, i| self.layer(i, x));
        self.layernorm.forward(x)
    }

    /// transformers' `ViTEmbeddings`: the CLS token, then the patches, plus positions.
    pub fn embed(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        let patches = self.embed_patches(pixel_values); // [B, N, D]
        let [b, _, d] = patches.dims();
        let cls = self.embeddings.cls_token.val().expand([b, 1, d]);
        Tensor::cat(vec![cls, patches], 1) + self.embeddings.position_embeddings.val()
    }

    /// transformers' `ViTLayer` `i`: pre-norm self-attention, then the pre-norm MLP.
    pub fn layer(&self, i: usize, x: Tensor<3>) -> Tensor<3> {
        let layer = &self.encoder.layer[i];
        let d = x.dims()[2];
        let h = layer.layernorm_before.forward(x.clone());
        let sa = &layer.attention.attention;
        let q = split_heads(apply_linear(&sa.query, h.clone()), self.n_head);
        let k = split_heads(apply_linear(&sa.key, h.clone()), self.n_head);
        let v = split_heads(apply_linear(&sa.value, h), self.n_head);
        let scale = 1.0 / ((d / self.n_head) as f64).sqrt();
        let attn = merge_heads(attend(q, k, v, None, false, scale));
        let x = x + apply_linear(&layer.attention.output.dense, attn);
        let h = apply_linear(
            &layer.intermediate.dense,
            layer.layernorm_after.forward(x.clone()),
        );
        x + apply_linear(&layer.output.dense, self.act.0.forward(h))
    }

    /// The patch embeddings `[B, N, D]`: transformers' `ViTPatchEmbeddings` (a convolution
    /// with stride = kernel = patch), plus the shape channel's projection of [`outlines`].
    ///
    /// On the CPU the convolution is computed as what it is, one product of each patch's values
    /// `[B·N, C·P·P]` (gathered on the host, where the outlines are computed anyway; the pixels
    /// take no gradient) with the kernel flattened to `[D, C·P·P]`. burn's convolution costs
    /// about twice as much here, forward and backward.
    pub fn embed_patches(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        let embed = &self.embeddings.patch_embeddings;
        let shape = embed.shape_projection.as_ref();
        let device = pixel_values.device();
        if !super::layers::on_cpu_backend(&device) {
            let patches = match shape {
                Some(shape) => {
                    let outline = outlines(pixel_values.clone(), self.patch_size);
                    embed.projection.forward(pixel_values) + shape.forward(outline)
                }
                None => embed.projection.forward(pixel_values),
            }; // [B, D, h, w]
            let [b, d, h, w] = patches.dims();
            return patches.reshape([b, d, h * w]).swap_dims(1, 2);
        }
        let [b, c, hh, ww] = pixel_values.dims();
        let p = self.patch_size;
        let n = (hh / p) * (ww / p);
        let pixels = crate::tensor::floats(pixel_values);
        // Each patch's row: its C colour planes, then its two outline maps.
        let maps = shape.map(|_| outline_maps(&pixels, b, c, hh, ww, p));
        let mut sources = vec![(pixels.as_slice(), c)];
        sources.extend(maps.as_deref().map(|m| (m, 2)));
        let k = sources.iter().map(|s| s.1).sum::<usize>();
        let rows = patch_rows(&sources, b, hh, ww, p);
        let rows = Tensor::<2>::from_data(TensorData::new(rows, [b * n, k * p * p]), &device);
        let flat = |conv: &Conv2d| {
            let [d, ch, _, _] = conv.weight.dims();
            conv.weight.val().reshape([d, ch * p * p])
        };
        let kernel = match shape {
            Some(shape) => Tensor::cat(vec![flat(&embed.projection), flat(shape)], 1),
            None => flat(&embed.projection),
        };
        let d = kernel.dims()[0];
        let bias = embed.projection.bias.as_ref().map(|b| b.val());
        super::layers::dense(rows, kernel.transpose(), bias).reshape([b, n, d])
    }

    /// transformers' `pooler_output`: tanh(dense(CLS)).
    pub fn pooled(&self, last_hidden: Tensor<3>) -> Option<Tensor<2>> {
        let [b, _, d] = last_hidden.dims();
        self.pooler
            .as_ref()
            .map(|p| apply_linear(&p.dense, last_hidden.narrow(1, 0, 1).reshape([b, d])).tanh())
    }
}

/// The shape channel's input `[B, 2, H, W]`: [`shape_map`] over the patches and over their
/// quarters. The finer map keeps an object's outline sharp where a patch also holds another
/// object or a large piece of sky and ground.
///
/// Computed on the host: the maps take no gradient, and burn's ops over six-dimensional
/// views of the pictures cost more than this loop.
pub fn outlines(pixel_values: Tensor<4>, patch: usize) -> Tensor<4> {
    let device = pixel_values.device();
    let [b, c, h, w] = pixel_values.dims();
    let maps = outline_maps(&crate::tensor::floats(pixel_values), b, c, h, w, patch);
    Tensor::from_data(TensorData::new(maps, [b, 2, h, w]), &device)
}

/// [`outlines`] of host pixels `[B, C, H, W]`, as `[B, 2, H, W]`.
fn outline_maps(pixels: &[f32], b: usize, c: usize, h: usize, w: usize, patch: usize) -> Vec<f32> {
    let mut out = vec![0f32; b * 2 * h * w];
    out.par_chunks_mut(2 * h * w)
        .zip(pixels.par_chunks(c * h * w))
        .for_each(|(maps, image)| {
            let (coarse, fine) = maps.split_at_mut(h * w);
            outline_into(image, c, h, w, patch, coarse);
            outline_into(image, c, h, w, (patch / 2).max(1), fine);
        });
    out
}

/// The values under each `p`×`p` patch of `[B, K, H, W]` planes, one row per patch (patches
/// in row-major order), ordered as a convolution kernel `[D, K, P, P]` flattens; the K planes
/// are those of each source `(values [B, k, H, W], k)` in turn.
fn patch_rows(sources: &[(&[f32], usize)], b: usize, h: usize, w: usize, p: usize) -> Vec<f32> {
    let (ph, pw) = (h / p, w / p);
    let row = sources.iter().map(|s| s.1).sum::<usize>() * p * p;
    let mut out = vec![0f32; b * ph * pw * row];
    out.par_chunks_mut(ph * pw * row)
        .enumerate()
        .for_each(|(picture, rows)| {
            for (i, dst) in rows.chunks_mut(row).enumerate() {
                let (py, px) = (i / pw, i % pw);
                let mut at = 0;
                for &(values, k) in sources {
                    let image = &values[picture * k * h * w..(picture + 1) * k * h * w];
                    for ch in 0..k {
                        for y in 0..p {
                            let src = ch * h * w + (py * p + y) * w + px * p;
                            dst[at..at + p].copy_from_slice(&image[src..src + p]);
                            at += p;
                        }
                    }
                }
            }
        });
    out
}

/// [`shape_map`] of one `[C, H, W]` picture with `cell`-pixel cells, written into `out` `[H, W]`.
fn outline_into(image: &[f32], c: usize, h: usize, w: usize, cell: usize, out: &mut [f32]) {
    let area = (cell * cell) as f32;
    for cy in (0..h).step_by(cell) {
        for cx in (0..w).step_by(cell) {
            let pixels =
                || (cy..cy + cell).flat_map(move |y| (cx..cx + cell).map(move |x| y * w + x));
            let mean: Vec<f32> = (0..c)
                .map(|k| pixels().map(|p| image[k * h * w + p]).sum::<f32>() / area)
                .collect();
            let mut spread = 0f32;
            for p in pixels() {
                let d2: f32 = (0..c)
                    .map(|k| (image[k * h * w + p] - mean[k]).powi(2))
                    .sum();
                out[p] = d2;
                spread += d2;
            }
            let norm = spread / area + SHAPE_FLOOR as f32;
            for p in pixels() {
                out[p] = (out[p] / norm).sqrt();
            }
        }
    }
}

/// Cells whose colours spread (RMS, in normalised pixel units) much less than 0.05 are damped
/// instead of stretched to full contrast, so rain and snow dots stay faint.
const SHAPE_FLOOR: f64 = 0.05 * 0.05;

/// A colour-free outline of each `patch`×`patch` cell, `[B, 1, H, W]` for `[B, C, H, W]`:
/// each pixel's distance (in colour space) from its cell's mean colour, over the cell's RMS
/// distance. A cell holding part of an object of one colour over a background of another gives
/// the same map whatever the two colours are (√((1−f)/f) on the object, √(f/(1−f)) around it,
/// f its share of the cell), and a flat cell gives zeros. A linear patch embedding of raw
/// pixels must learn a crescent separately in every colour it comes in, and a captioner trained
/// so then reads colour as evidence of kind (a white moon, never seen, is called a white sun);
/// from this map one set of weights recognises the crescent in any colour.
pub fn shape_map(pixel_values: Tensor<4>, patch: usize) -> Tensor<4> {
    let [b, c, hh, ww] = pixel_values.dims();
    let (h, w) = (hh / patch, ww / patch);
    let cells = pixel_values.reshape([b, c, h, patch, w, patch]);
    let mean = cells.clone().mean_dim(5).mean_dim(3);
    let dist2 = (cells - mean).powi_scalar(2).sum_dim(1); // [b, 1, h, p, w, p]
    let spread = dist2.clone().mean_dim(5).mean_dim(3);
    (dist2 / (spread + SHAPE_FLOOR))
        .sqrt()
        .reshape([b, 1, hh, ww])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two 4×4 cells over a 4×8 picture: the left one holds a shape in colour `a` on
    /// background `b`, the right one is flat `b`. Returns `[1, 3, 4, 8]` pixel values.
    fn picture(a: [f32; 3], b: [f32; 3], device: &Device) -> Tensor<4> {
        let inside = |y: usize, x: usize| x < 4 && (y == 1 || x == 2);
        let mut v = Vec::new();
        for c in 0..3 {
            for y in 0..4 {
                for x in 0..8 {
                    v.push(if inside(y, x) { a[c] } else { b[c] });
                }
            }
        }
        Tensor::from_data(TensorData::new(v, [1, 3, 4, 8]), device)
    }

    /// The host loop computes what the tensor form computes, at both cell sizes.
    #[test]
    fn host_outlines_equal_the_tensor_shape_maps() {
        let device = Device::flex();
        let v: Vec<f32> = (0..2 * 3 * 8 * 16)
            .map(|i| (i * 37 % 101) as f32 / 50.0 - 1.0)
            .collect();
        let pixels = Tensor::<4>::from_data(TensorData::new(v, [2, 3, 8, 16]), &device);
        let host: Vec<f32> = outlines(pixels.clone(), 8)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let reference = Tensor::cat(vec![shape_map(pixels.clone(), 8), shape_map(pixels, 4)], 1);
        let reference: Vec<f32> = reference.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(host.len(), reference.len());
        for (i, (a, b)) in host.iter().zip(&reference).enumerate() {
            assert!((a - b).abs() < 1e-4, "value {i}: {a} against {b}");
        }
    }

    /// The patch embedding computed as one product over gathered patches equals burn's
    /// convolutions of the pixels and the outlines, with and without the shape channel.
    #[test]
    fn patch_products_equal_the_convolutions() {
        let device = Device::flex();
        for shape_channel in [false, true] {
            let cfg: ViTConfig = serde_json::from_value(serde_json::json!({
                "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 16, "image_size": 16, "patch_size": 4,
                "shape_channel": shape_channel,
            }))
            .unwrap();
            let model = ViTModel::new(&cfg, false, &device);
            let v: Vec<f32> = (0..2 * 3 * 16 * 16)
                .map(|i| (i * 53 % 97) as f32 / 48.0 - 1.0)
                .collect();
            let pixels = Tensor::<4>::from_data(TensorData::new(v, [2, 3, 16, 16]), &device);
            let embed = &model.embeddings.patch_embeddings;
            let mut conv = embed.projection.forward(pixels.clone());
            if let Some(shape) = &embed.shape_projection {
                conv = conv + shape.forward(outlines(pixels.clone(), 4));
            }
            let conv: Vec<f32> = conv
                .reshape([2, 8, 16])
                .swap_dims(1, 2)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let ours: Vec<f32> = model
                .embed_patches(pixels)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            assert_eq!(conv.len(), ours.len());
            for (i, (a, b)) in conv.iter().zip(&ours).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4,
                    "shape {shape_channel}, value {i}: {a} against {b}"
                );
            }
        }
    }

    #[test]
    fn the_shape_map_is_the_same_in_any_two_colours() {
        let device = Device::flex();
        let white_on_blue = shape_map(picture([1.0, 1.0, 1.0], [-0.8, -0.6, 0.4], &device), 4);
        let red_on_grass = shape_map(picture([0.9, -0.9, -0.7], [-0.5, 0.3, -0.6], &device), 4);
        let a: Vec<f32> = white_on_blue.to_data().try_to_vec::<f32>().unwrap();
        let b: Vec<f32> = red_on_grass.to_data().try_to_vec::<f32>().unwrap();
        // 7 of the left cell's 16 pixels are the shape: √(9/7) on it, √(7/9) off it.
        let (on, off) = ((9.0f32 / 7.0).sqrt(), (7.0f32 / 9.0).sqrt());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() < 1e-3, "pixel {i}: {x} against {y}");
            let (row, col) = (i / 8, i % 8);
            if col >= 4 {
                assert_eq!(*x, 0.0, "the flat cell at pixel {i}");
            } else {
                assert!(
                    (x - on).abs() < 1e-2 || (x - off).abs() < 1e-2,
                    "pixel {i} ({row}, {col}): {x}"
                );
            }
        }
        // And it does see the shape: another shape in the same colours gives another map.
        let moved = shape_map(
            picture([1.0, 1.0, 1.0], [-0.8, -0.6, 0.4], &device).flip([3]),
            4,
        );
        let m: Vec<f32> = moved.to_data().try_to_vec::<f32>().unwrap();
        assert!(m.iter().zip(&a).any(|(p, q)| (p - q).abs() > 0.5));
    }
}
