//! Settings of an alignment run; saved as the run's `config.json`.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::advantage::Algo;
use super::kl::KlEstimator;
use super::reward::{ContentRewardKind, CLIP_NEEDS_FOLDER};
use crate::model::lora::LoraConfig;
use crate::model::settings::check_sampling;
use crate::optim::adamw::AdamWConfig;
use crate::util::{check, Precision};

/// How the critic's opinion becomes the style reward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StyleReward {
    /// p(target style): bounded in [0, 1], on the scale of the content F1.
    Prob,
    /// log p(target style): unbounded below.
    Logprob,
    /// log p / (1 − p).
    Logit,
}

impl StyleReward {
    pub fn of(self, p: f32) -> f32 {
        let p = p.clamp(1e-6, 1.0 - 1e-6);
        match self {
            StyleReward::Prob => p,
            StyleReward::Logprob => p.ln(),
            StyleReward::Logit => (p / (1.0 - p)).ln(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlignConfig {
    /// The base captioner folder (a `stylecap train` run or its `model/`).
    pub base: PathBuf,
    /// The reward critic folder.
    pub critic: PathBuf,
    /// Pictures with reference captions to align on, in any format `train --data` reads;
    /// None: the built-in world.
    pub data: Option<PathBuf>,
    /// Validation pictures; None: a fixed held-out slice of `data` (disjoint from the
    /// pictures alignment trains on), or the built-in world's validation split.
    pub val_data: Option<PathBuf>,
    /// Seed of the held-out slices of a `data` without splits of its own; the same as the
    /// base's `split_seed` keeps alignment off the base's test pictures.
    pub split_seed: u64,
    /// The content reward; None: `scene` where every picture has a scene graph, else
    /// `concepts`.
    pub content_reward: Option<ContentRewardKind>,
    /// The sentence encoder of the `similarity` reward (a sentence-transformers folder).
    pub content_encoder: Option<PathBuf>,
    /// The CLIP model of the `clip` reward (a `CLIPModel` folder).
    pub clip: Option<PathBuf>,
    /// The most the `cider` content reward pays: CIDEr-D of a plain factual caption (about 3)
    /// would outweigh the whole style reward, and alignment would drop the styles.
    pub cider_cap: f32,
    /// Target styles; empty: every style of the captioner except `factual`.
    pub styles: Vec<String>,
    pub algo: Algo,
    pub seed: u64,
    pub steps: usize,
    /// Images per step; each gets one target style (cycling) and `samples` captions.
    pub images_per_step: usize,
    pub samples: usize,
    pub lr: f64,
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: usize,
    pub w_style: f32,
    /// Weight of the content reward; None: the content reward's own
    /// ([`ContentRewardKind::default_weight`]), which the trainer records.
    pub w_content: Option<f32>,
    pub style_reward: StyleReward,
    /// KL estimator in the reward (GRPO's loss term always uses k3).
    pub kl_estimator: KlEstimator,
    /// KL coefficient β (initial value when adaptive). The controller lowers β while the KL
    /// is under target, so too small a start lets the policy overshoot the target.
    pub beta: f64,
    /// Adapt β toward this mean KL per caption (nats); None keeps β fixed.
    pub target_kl: Option<f64>,
    pub kl_horizon: f64,
    /// Stop early when the mean KL per caption passes this.
    pub kl_limit: f64,
    /// Penalty per word that repeats an earlier one beyond what the picture's references
    /// repeat (`text_metrics::excess_repeats`: a word again within three words, or a content
    /// word used again, more times than the reference that uses it most), the measure of
    /// evaluation's excess repetition rate.
    pub repetition_penalty: f32,
    /// Penalty per word beyond `max_words`.
    pub length_penalty: f32,
    pub max_words: usize,
    /// Standardise rewards with running statistics before computing advantages.
    pub normalize_rewards: bool,
    pub reward_clip: f32,
    pub baseline_decay: f32,
    pub ppo_epochs: usize,
    pub ppo_clip: f32,
    pub ppo_minibatches: usize,
    /// Skip a batch whose importance ratio exceeds this (PPO).
    pub max_ratio: f32,
    /// Stop after this many skipped (non-finite) batches in a row.
    pub max_bad_batches: usize,
    /// Weight of a supervised anchor in the loss: teacher-forced cross-entropy on the plain
    /// captions of `ptx_images` training pictures per step (the "PPO-ptx" mix of Ouyang et
    /// al. 2022), so the shared decoder keeps reading pictures while the styles move. 0 turns
    /// it off.
    pub ptx_coef: f32,
    pub ptx_images: usize,
    /// Train the vision encoder too (default: only the decoder side).
    pub train_encoder: bool,
    /// Shards of the reference's scoring and of each update batch, run in parallel (each
    /// encodes only its rows' pictures); their gradients are summed, weighted by their share
    /// of the batch's tokens, which gives the whole batch's gradient.
    pub data_parallel: usize,
    /// Recompute memory-bound activations (element-wise ops, normalisation) in the update's
    /// backward pass instead of keeping them (burn's balanced checkpointing; the supervised
    /// step's option recomputes whole blocks instead).
    pub gradient_checkpointing: bool,
    /// Mixed precision (`model::autocast`) for sampling, scoring and the update: `f16` or
    /// `bf16` computes the matrix products in that type, with f32 weights, optimizer and
    /// everything else (f16 with loss scaling); `f32` is off.
    pub mixed_precision: Precision,
    /// Start each target style's prefix as this blend of its own prefix and the factual one
    /// (1 = its own). The base writes style text or factual captions; a blend starts from
    /// captions that already name the picture, which the style reward can then restyle.
    pub prefix_blend: f32,
    /// Train LoRA adapters of this rank on the decoder's attention and cross-attention
    /// projections instead of the decoder itself (0: full fine-tuning). The base stays frozen
    /// and is the KL reference, so the weights are held once; the run's `model/` is then an
    /// adapter folder over `base` (PEFT's layout).
    pub lora_rank: usize,
    /// LoRA's α (updates are scaled by α / rank); None: twice the rank.
    pub lora_alpha: Option<f64>,
    /// Adapt the decoder's MLPs too.
    pub lora_mlp: bool,
    pub optimizer: AdamWConfig,
    pub eval_every: usize,
    /// Steps between checkpoints (`--resume` continues from the last one).
    pub checkpoint_every: usize,
    /// Validation pictures (one sampled caption each), which pick the kept policy; enough that
    /// the validation reward's noise does not decide between steps.
    pub eval_images: usize,
    /// The built-in world's seed and training pictures, when `data` is None.
    pub world_seed: u64,
    pub world_train: usize,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            base: PathBuf::new(),
            critic: PathBuf::new(),
            data: None,
            val_data: None,
            split_seed: 0,
            content_reward: None,
            content_encoder: None,
            clip: None,
            cider_cap: 1.0,
            styles: Vec::new(),
            algo: Algo::Rloo,
            seed: 0,
            steps: 600,
            images_per_step: 8,
            samples: 4,
            lr: 1e-4,
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 40,
            w_style: 1.0,
            w_content: None,
            style_reward: StyleReward::Prob,
            kl_estimator: KlEstimator::K1,
            beta: 0.05,
            target_kl: Some(6.0),
            kl_horizon: 2000.0,
            kl_limit: 30.0,
            repetition_penalty: 0.1,
            length_penalty: 0.05,
            max_words: 30,
            normalize_rewards: false,
            reward_clip: 5.0,
            baseline_decay: 0.9,
            ppo_epochs: 2,
            ppo_clip: 0.2,
            ppo_minibatches: 2,
            max_ratio: 20.0,
            max_bad_batches: 5,
            ptx_coef: 1.0,
            ptx_images: 8,
            train_encoder: false,
            data_parallel: 2,
            gradient_checkpointing: false,
            mixed_precision: Precision::F32,
            prefix_blend: 1.0,
            lora_rank: 0,
            lora_alpha: None,
            lora_mlp: false,
            optimizer: AdamWConfig {
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
            eval_every: 50,
            checkpoint_every: 50,
            eval_images: 96,
            world_seed: 0,
            world_train: 20000,
        }
    }
}

impl AlignConfig {
    /// The weight of the content reward: `w_content`, else the reward's own (1 before the
    /// reward is chosen).
    pub fn content_weight(&self) -> f32 {
        self.w_content.unwrap_or_else(|| {
            self.content_reward
                .map_or(1.0, ContentRewardKind::default_weight)
        })
    }

    /// The adapters to train, if the run trains LoRA adapters.
    pub fn lora(&self) -> Option<LoraConfig> {
        (self.lora_rank > 0).then(|| LoraConfig {
            rank: self.lora_rank,
            alpha: self.lora_alpha.unwrap_or(2.0 * self.lora_rank as f64),
            mlp: self.lora_mlp,
        })
    }

    /// Checks every setting against its allowed range, naming the field of the first that
    /// is out of it.
    pub fn validate(&self) -> Result<()> {
        check::within("steps", self.steps, 1, 100_000_000)?;
        check::within("images_per_step", self.images_per_step, 1, 4096)?;
        check::within("samples", self.samples, 1, 256)?;
        check::within("data_parallel", self.data_parallel, 1, 256)?;
        ensure!(
            self.samples >= 2 || !matches!(self.algo, Algo::Rloo | Algo::Grpo | Algo::Ppo),
            "samples = {} is out of range: {} compares the captions of one picture, allowed 2 \
             or more",
            self.samples,
            self.algo.name()
        );
        check::within("lr", self.lr, 1e-9, 10.0)?;
        check_sampling(self.temperature, self.top_p, self.max_new_tokens)?;
        check::non_negative("w_style", self.w_style as f64)?;
        if let Some(w) = self.w_content {
            check::non_negative("w_content", w as f64)?;
        }
        check::positive("cider_cap", self.cider_cap as f64)?;
        check::non_negative("beta", self.beta)?;
        if let Some(t) = self.target_kl {
            check::positive("target_kl", t)?;
        }
        check::positive("kl_horizon", self.kl_horizon)?;
        check::positive("kl_limit", self.kl_limit)?;
        check::non_negative("repetition_penalty", self.repetition_penalty as f64)?;
        check::non_negative("length_penalty", self.length_penalty as f64)?;
        check::at_least("max_words", self.max_words, 1)?;
        check::positive("reward_clip", self.reward_clip as f64)?;
        check::within("baseline_decay", self.baseline_decay, 0.0, 1.0)?;
        check::within("ppo_epochs", self.ppo_epochs, 1, 100)?;
        check::within("ppo_clip", self.ppo_clip, 1e-3, 10.0)?;
        check::within("ppo_minibatches", self.ppo_minibatches, 1, 4096)?;
        check::within("max_ratio", self.max_ratio, 1.0, 1e6)?;
        check::at_least("max_bad_batches", self.max_bad_batches, 1)?;
        check::non_negative("ptx_coef", self.ptx_coef as f64)?;
        check::within("ptx_images", self.ptx_images, 0, 4096)?;
        check::within("prefix_blend", self.prefix_blend, 0.0, 1.0)?;
        check::within("lora_rank", self.lora_rank, 0, 4096)?;
        if let Some(alpha) = self.lora_alpha {
            check::positive("lora_alpha", alpha)?;
        }
        if self.lora_rank > 0 {
            ensure!(
                !self.train_encoder,
                "train_encoder = true with lora_rank = {}: LoRA keeps the encoder frozen",
                self.lora_rank
            );
            ensure!(
                self.prefix_blend == 1.0,
                "prefix_blend = {} with lora_rank = {}: LoRA keeps the base's style prefixes as \
                 they are (allowed: 1)",
                self.prefix_blend,
                self.lora_rank
            );
        }
        self.optimizer.validate("optimizer")?;
        check::at_least("eval_every", self.eval_every, 1)?;
        check::at_least("checkpoint_every", self.checkpoint_every, 1)?;
        check::within("eval_images", self.eval_images, 1, 1_000_000)?;
        check::within("world_train", self.world_train, 1, 100_000_000)?;
        ensure!(
            self.content_reward != Some(ContentRewardKind::Clip) || self.clip.is_some(),
            CLIP_NEEDS_FOLDER
        );
        Ok(())
    }
}
