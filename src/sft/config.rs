//! The supervised training configuration: every setting of a run, with defaults, saved as the
//! run's `config.json` and accepted back as `--config FILE` (JSON or TOML).

use crate::data::pseudo_pairs::ShowPairs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::data::sources::{CaptionSource, CaptionSplits, DataSpec};
use crate::data::tokenizer::TextTokenizer;
use crate::optim::adamw::AdamWConfig;
use crate::util::{check, Precision};

/// The shape of a captioner trained from scratch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelShape {
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_dim: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub decoder_dim: usize,
    pub decoder_layers: usize,
    pub decoder_heads: usize,
    /// BPE vocabulary trained on the captions and style texts.
    pub vocab_size: usize,
    pub max_positions: usize,
    /// Learned prefix tokens per style.
    pub prefix_tokens: usize,
    /// The ViT's patch embedding also sees each patch's colour-free outline
    /// (`model::vit::outlines`), so a kind is recognised by its shape in any colour
    /// (docs/experiments.md measures it). transformers' `ViTModel` has no such input; turn it
    /// off for a plain ViT.
    pub shape_channel: bool,
}

impl Default for ModelShape {
    fn default() -> Self {
        ModelShape {
            image_size: 64,
            patch_size: 16,
            vision_dim: 128,
            vision_layers: 3,
            vision_heads: 4,
            decoder_dim: 128,
            decoder_layers: 2,
            decoder_heads: 4,
            vocab_size: 2048,
            max_positions: 96,
            prefix_tokens: 2,
            shape_channel: true,
        }
    }
}

impl ModelShape {
    /// Checks the shape before any tensor is made: widths divisible by their heads, the
    /// picture by its patches, a vocabulary a byte-level BPE can have.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("model.image_size", self.image_size),
            ("model.patch_size", self.patch_size),
            ("model.vision_dim", self.vision_dim),
            ("model.vision_layers", self.vision_layers),
            ("model.vision_heads", self.vision_heads),
            ("model.decoder_dim", self.decoder_dim),
            ("model.decoder_layers", self.decoder_layers),
            ("model.decoder_heads", self.decoder_heads),
            ("model.max_positions", self.max_positions),
        ] {
            check::within(field, v, 1, 1 << 16)?;
        }
        check::within(
            "model.vocab_size",
            self.vocab_size,
            TextTokenizer::MIN_BPE_VOCAB,
            1 << 20,
        )?;
        // At least one: without a prefix every style writes alike.
        check::within("model.prefix_tokens", self.prefix_tokens, 1, 64)?;
        for (dim, heads, names) in [
            (
                self.vision_dim,
                self.vision_heads,
                "model.vision_dim and model.vision_heads",
            ),
            (
                self.decoder_dim,
                self.decoder_heads,
                "model.decoder_dim and model.decoder_heads",
            ),
        ] {
            ensure!(
                dim.is_multiple_of(heads),
                "{names}: the width {dim} must be a multiple of the heads {heads}"
            );
        }
        ensure!(
            self.image_size.is_multiple_of(self.patch_size),
            "model.image_size {} must be a multiple of model.patch_size {}",
            self.image_size,
            self.patch_size
        );
        ensure!(
            !self.shape_channel || self.patch_size.is_multiple_of(2),
            "model.shape_channel needs an even model.patch_size, got {}",
            self.patch_size
        );
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Image–caption data: a `data synth` folder, COCO JSON, JSONL manifest or image folder.
    /// None: the built-in world, generated in memory.
    pub data: Option<PathBuf>,
    /// Validation pictures in place of the held-out validation slice of `data`.
    pub val_data: Option<PathBuf>,
    /// Test pictures (evaluated at the end, and by the demo's evaluation and report) in
    /// place of the held-out test slice of `data`.
    pub test_data: Option<PathBuf>,
    /// Seed of the held-out validation and test slices of a `data` without splits of its
    /// own (`data::sources::held_out_slices`).
    pub split_seed: u64,
    /// Style corpus (JSONL or folder of STYLE.txt). None: the `data synth` folder's
    /// `styles.jsonl`, or the built-in styles.
    pub styles: Option<PathBuf>,
    /// Built-in world size when `data` is None.
    pub world_train: usize,
    pub world_val: usize,
    pub world_seed: u64,
    /// Built-in style sentences per style when `styles` is None.
    pub style_texts: usize,
    /// Pretrained vision encoder (HF directory or id); None trains one from scratch.
    pub vision: Option<String>,
    /// Pretrained GPT-2 (HF directory or id); None trains one from scratch.
    pub decoder: Option<String>,
    pub model: ModelShape,
    pub seed: u64,
    pub steps: usize,
    /// Image–caption examples per micro-batch.
    pub batch_size: usize,
    /// Style-text examples per micro-batch (the mixing ratio is style_batch : batch_size).
    pub style_batch_size: usize,
    /// Fraction of style texts (those without a picture of their own) shown with a random
    /// unrelated training image instead of the blank one. Off by default: it teaches the
    /// decoder that a styled caption may ignore the picture, which costs content fidelity;
    /// on the built-in world the styled descriptions shown with their pictures already teach
    /// that an image does not by itself mean "factual".
    pub style_image_rate: f32,
    /// Show a style sentence that names things with a picture of those things: the sentences
    /// stay unpaired text, and the decoder learns to take named things from the image under
    /// any style, which alignment then builds on. On the built-in world the picture is
    /// rendered to fit the sentence ("the crimson automobile": a red car); on any other data
    /// it is the training picture whose references share the most of the sentence's words
    /// (`data::pseudo_pairs`, concept-based pseudo-pairs).
    #[serde(alias = "pair_world_mentions")]
    pub pair_mentions: bool,
    /// On data other than the built-in world, the least share of what a style sentence names
    /// (idf-weighted, `data::pseudo_pairs::Pair::coverage`) that its picture's references
    /// must name too for the two to be shown together; a sentence with no such picture is
    /// shown with the blank one, and counts with those that name nothing for
    /// `mention_share`. At 1 (every concept, and no binding of two of them that no reference
    /// has) pairs are fewer and truer, and the base's styled captions name more of what is in
    /// the picture (docs/experiments.md, "Real data end to end").
    pub min_pair_coverage: f32,
    /// On data other than the built-in world, show a style sentence whose picture falls short
    /// of `min_pair_coverage` with that picture all the same, the words its references lack
    /// swapped for theirs that stand in the same places (`data::pseudo_pairs::PseudoPairs::
    /// rewrite`: "the pink automobile" for a picture of a red car becomes "the red car"); a
    /// sentence no swap mends is shown with the blank picture.
    pub rewrite_pairs: bool,
    /// On data other than the built-in world, the share of a style's sentences that must
    /// describe pictures (name two or more of the references' words and be shown with a
    /// picture, as they are or rewritten) for the style to be learnt from those alone.
    /// Below it (reviews, plays: a few percent), each of the style's other sentences is
    /// shown with a training picture drawn at random, the picture's things put in its slots
    /// (`data::pseudo_pairs::PseudoPairs::fill`: "the food was amazing" becomes "the green
    /// mountain was amazing"), so the decoder still learns to name the picture in that
    /// style; a sentence with no slot gets the blank picture. Filling a style that describes
    /// scenes itself hurts it: the `data synth` styles (15–18% describing) aligned to styled
    /// content 0.76 filled and 0.87 not; real-text styles (0–4%) to 0.61–0.66 filled and
    /// 0.12–0.30 not (docs/experiments.md, "Real data end to end"). 0 never fills, 1 fills
    /// every style.
    pub fill_below: f32,
    /// Share of style rows drawn from the style sentences that name things (world things, or
    /// words of the training references; 20% of the built-in corpus names world things): the
    /// base then often writes styled text about the picture, which gives alignment's content
    /// reward something to reinforce. None: corpus order.
    #[serde(alias = "world_mention_share")]
    pub mention_share: Option<f32>,
    /// Probability of training on an image's first (plain) caption rather than a random one:
    /// one consistent phrasing is learnt much faster than a mixture of orders and synonyms.
    pub first_caption_rate: f32,
    pub grad_accum: usize,
    /// Shards of each micro-batch run on parallel threads (results depend on this number).
    pub data_parallel: usize,
    /// Learning rate of the decoder and style prefixes.
    pub lr: f64,
    /// Learning rate of the vision encoder.
    pub lr_encoder: f64,
    /// Learning rate of the projection and the cross-attention blocks.
    pub lr_cross: f64,
    pub warmup_steps: usize,
    pub min_lr_ratio: f64,
    /// AdamW, with β₂ = 0.95 as nanoGPT trains GPT-2.
    pub optimizer: AdamWConfig,
    /// Vision layers to train, counted from the top; None trains the whole encoder, 0 freezes it.
    pub train_vision_layers: Option<usize>,
    /// Keep only each transformer block's input in the forward pass and recompute the block
    /// in the backward pass, as transformers' `gradient_checkpointing` (`sft::recompute`):
    /// much less memory, one more forward pass of time; the same gradients.
    pub gradient_checkpointing: bool,
    /// Mixed precision (`model::autocast`): `f16` or `bf16` computes the matrix products in
    /// that type, with f32 weights, optimizer and everything else (f16 with loss scaling);
    /// `f32` is off. For GPUs with half-precision matrix units; on the CPU it is slower.
    pub mixed_precision: Precision,
    /// With a frozen encoder (`train_vision_layers = 0`), the encoder's output for each
    /// training picture is kept in memory up to this many MiB and reused at later steps
    /// instead of encoding the picture again (0: encode at every step).
    pub feature_cache_mb: usize,
    /// Pictures beyond `feature_cache_mb` go to a file in the run folder
    /// (`feature-cache.bin`, removed at the end) up to this many MiB (0: none; they are then
    /// encoded at every step).
    pub feature_cache_disk_mb: usize,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    /// Validation images captioned at each evaluation.
    pub eval_images: usize,
    /// Images of each test split captioned at the end (the built-in world's test splits have
    /// 200).
    pub test_images: usize,
    pub max_caption_tokens: usize,
    /// Skip bad data records (listed in the run's log) instead of stopping.
    pub skip_bad: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: None,
            val_data: None,
            test_data: None,
            split_seed: 0,
            styles: None,
            world_train: 20000,
            world_val: 200,
            world_seed: 0,
            style_texts: 5000,
            vision: None,
            decoder: None,
            model: ModelShape::default(),
            seed: 0,
            steps: 2000,
            batch_size: 32,
            style_batch_size: 24,
            style_image_rate: 0.0,
            pair_mentions: true,
            min_pair_coverage: 1.0,
            rewrite_pairs: true,
            fill_below: 0.1,
            mention_share: Some(0.85),
            first_caption_rate: 1.0,
            grad_accum: 1,
            data_parallel: 2,
            lr: 2e-3,
            lr_encoder: 1e-3,
            lr_cross: 1e-3,
            warmup_steps: 100,
            min_lr_ratio: 0.05,
            optimizer: AdamWConfig {
                beta2: 0.95,
                ..AdamWConfig::default()
            },
            train_vision_layers: None,
            gradient_checkpointing: false,
            mixed_precision: Precision::F32,
            feature_cache_mb: 2048,
            feature_cache_disk_mb: 0,
            eval_every: 500,
            checkpoint_every: 250,
            eval_images: 100,
            test_images: 200,
            max_caption_tokens: 48,
            skip_bad: false,
        }
    }
}

impl TrainConfig {
    /// How style sentences find their pictures on data other than the built-in world;
    /// `fill` for a style below `fill_below`.
    pub fn show_pairs(&self, fill: bool) -> ShowPairs {
        ShowPairs {
            min_coverage: self.min_pair_coverage,
            rewrite: self.rewrite_pairs,
            fill,
        }
    }

    /// The data part of the configuration.
    pub fn data_spec(&self) -> DataSpec<'_> {
        DataSpec {
            data: self.data.as_deref(),
            val_data: self.val_data.as_deref(),
            test_data: self.test_data.as_deref(),
            styles: self.styles.as_deref(),
            skip_bad: self.skip_bad,
            split_seed: self.split_seed,
            world_seed: self.world_seed,
            world_train: self.world_train,
            world_val: self.world_val,
            image_size: self.model.image_size,
            style_texts: self.style_texts,
        }
    }

    /// The first `n` test pictures of this run's data (rendered at `image_size`, for the
    /// built-in world): `test_data`, a `data synth` folder's test split, the held-out test
    /// slice of any other dataset, or the built-in world's test split. The demo evaluates
    /// and the report shows these, so neither ever shows a picture the base trained on.
    pub fn test_pictures(&self, image_size: usize, n: usize) -> Result<CaptionSource> {
        let spec = DataSpec {
            image_size,
            world_val: n,
            ..self.data_spec()
        };
        CaptionSplits::load(&spec, &mut Vec::new())?.test(n)
    }

    /// Checks every setting against its allowed range, naming the field of the first that
    /// is out of it.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        check::within("steps", self.steps, 1, 100_000_000)?;
        check::within("batch_size", self.batch_size, 1, 1 << 16)?;
        check::within("style_batch_size", self.style_batch_size, 0, 1 << 16)?;
        check::within("grad_accum", self.grad_accum, 1, 1 << 12)?;
        check::within("data_parallel", self.data_parallel, 1, 256)?;
        check::within("world_train", self.world_train, 1, 100_000_000)?;
        check::within("world_val", self.world_val, 1, 100_000_000)?;
        check::within("style_texts", self.style_texts, 1, 100_000_000)?;
        check::within("lr", self.lr, 1e-9, 10.0)?;
        check::within("lr_encoder", self.lr_encoder, 0.0, 10.0)?;
        check::within("lr_cross", self.lr_cross, 0.0, 10.0)?;
        check::within("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)?;
        check::within("style_image_rate", self.style_image_rate, 0.0, 1.0)?;
        check::within("first_caption_rate", self.first_caption_rate, 0.0, 1.0)?;
        check::within("min_pair_coverage", self.min_pair_coverage, 0.0, 1.0)?;
        check::within("fill_below", self.fill_below, 0.0, 1.0)?;
        if let Some(share) = self.mention_share {
            check::within("mention_share", share, 0.0, 1.0)?;
        }
        self.optimizer.validate("optimizer")?;
        check::at_least("eval_every", self.eval_every, 1)?;
        check::at_least("checkpoint_every", self.checkpoint_every, 1)?;
        check::within("eval_images", self.eval_images, 1, 1_000_000)?;
        check::within("feature_cache_mb", self.feature_cache_mb, 0, 1 << 30)?;
        check::within(
            "feature_cache_disk_mb",
            self.feature_cache_disk_mb,
            0,
            1 << 30,
        )?;
        check::within("max_caption_tokens", self.max_caption_tokens, 1, 4096)?;
        if self.decoder.is_none() {
            let need = self.model.prefix_tokens + self.max_caption_tokens + 2;
            ensure!(
                need <= self.model.max_positions,
                "max_caption_tokens {} plus model.prefix_tokens {} need {need} positions; \
                 model.max_positions is {}",
                self.max_caption_tokens,
                self.model.prefix_tokens,
                self.model.max_positions
            );
        }
        Ok(())
    }

    /// Reads a config file: `.toml`, or JSON otherwise. Missing settings take defaults.
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::util::read_config_file(path)
    }
}
