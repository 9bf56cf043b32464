//! `stylecap align`: style alignment of a trained captioner by reinforcement learning.

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::Device;
use clap::Args;

use crate::align::advantage::Algo;
use crate::align::config::{AlignConfig, StyleReward};
use crate::align::kl::KlEstimator;
use crate::align::reward::ContentRewardKind;
use crate::align::trainer::Aligner;
use crate::run::RunOptions;

#[derive(Args)]
pub struct AlignArgs {
    /// The base captioner: a `stylecap train` run folder or a captioner folder.
    #[arg(long)]
    pub base: PathBuf,
    /// The reward critic folder (`stylecap critic train`).
    #[arg(long)]
    pub critic: PathBuf,
    /// Output run folder (config.json, metrics.jsonl, checkpoint/, model/, eval.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint (with its saved configuration;
    /// other settings are ignored).
    #[arg(long)]
    pub resume: bool,
    /// Pictures with reference captions to align on: a `data synth` folder, COCO captions
    /// JSON, JSONL manifest, image folder or `data fetch` output (default: the built-in world).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation pictures (default: a fixed held-out slice of --data).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    #[command(flatten)]
    pub content: ContentRewardArgs,
    /// Settings file (JSON or TOML); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Comma-separated target styles, or `all` (every style but factual).
    #[arg(long, default_value = "all")]
    pub styles: String,
    /// Policy-gradient algorithm.
    #[arg(long, value_enum)]
    pub algo: Option<Algo>,
    /// Alignment steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Learning rate, constant through the run.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Captions sampled per image (K).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Images per step; each gets one target style (cycling) and --samples captions.
    #[arg(long)]
    pub images_per_step: Option<usize>,
    /// KL coefficient (initial value when adaptive).
    #[arg(long)]
    pub beta: Option<f64>,
    /// Target mean KL per caption for the adaptive β; `0` keeps β fixed.
    #[arg(long)]
    pub target_kl: Option<f64>,
    /// KL estimator in the reward; GRPO's KL loss term always uses k3.
    #[arg(long, value_enum)]
    pub kl_estimator: Option<KlEstimator>,
    /// How the critic's probability of the target style becomes the style reward.
    #[arg(long, value_enum)]
    pub style_reward: Option<StyleReward>,
    /// Weight of the style reward.
    #[arg(long)]
    pub w_style: Option<f32>,
    /// Weight of the content reward, the caption's content fidelity to the picture
    /// (default: 2 for `concepts`, 1 for the others).
    #[arg(long)]
    pub w_content: Option<f32>,
    /// Weight of the supervised anchor (cross-entropy on plain captions of training pictures
    /// each step, keeping the decoder's reading of pictures); 0 turns it off.
    #[arg(long)]
    pub ptx_coef: Option<f32>,
    /// Train LoRA adapters of this rank on the decoder's attention projections instead of the
    /// decoder (0: full fine-tuning). The run's model/ is then an adapter folder over --base,
    /// in PEFT's layout; `stylecap export --merge-lora` folds it into a plain captioner.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA's α: updates are scaled by α / rank (default: twice the rank).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// Adapt the decoder's MLPs too (with --lora-rank).
    #[arg(long)]
    pub lora_mlp: bool,
    /// Mixed precision: compute the matrix products in f16 or bf16, keeping f32 weights and
    /// optimizer (f16 with dynamic loss scaling). Pays on a GPU; on the CPU it is slower.
    #[arg(long, value_enum)]
    pub mixed_precision: Option<crate::util::Precision>,
    /// Seed for sampling and image order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The content reward and the models it reads, shared by `align` and `demo`.
#[derive(Args)]
pub struct ContentRewardArgs {
    /// Content reward: `scene` (scene graphs: the built-in world, `data synth` folders),
    /// `concepts` (concept F1 against the references: what the caption names, its style's
    /// words free), `cider` (CIDEr-D against the references), `similarity` (sentence
    /// embeddings by --content-encoder) or `clip` (RefCLIP-S, or CLIP-S without references,
    /// by --clip). Default: scene where the data has scene graphs, else concepts.
    #[arg(long, value_enum)]
    pub content_reward: Option<ContentRewardKind>,
    /// Sentence encoder of the `similarity` reward: a sentence-transformers folder (such as
    /// all-MiniLM-L6-v2).
    #[arg(long)]
    pub content_encoder: Option<PathBuf>,
    /// CLIP model of the `clip` reward: a CLIPModel folder (such as
    /// openai/clip-vit-base-patch32).
    #[arg(long)]
    pub clip: Option<PathBuf>,
}

impl ContentRewardArgs {
    pub fn apply(&self, c: &mut AlignConfig) {
        if self.content_reward.is_some() {
            c.content_reward = self.content_reward;
        }
        if self.content_encoder.is_some() {
            c.content_encoder.clone_from(&self.content_encoder);
        }
        if self.clip.is_some() {
            c.clip.clone_from(&self.clip);
        }
    }
}

pub fn run(a: AlignArgs, device: Device) -> Result<()> {
    let mut c: AlignConfig = match &a.config {
        Some(p) => crate::util::read_config_file(p)?,
        None => AlignConfig::default(),
    };
    c.base = a.base.clone();
    c.critic = a.critic.clone();
    c.styles = if a.styles == "all" {
        Vec::new()
    } else {
        a.styles.split(',').map(|s| s.trim().to_string()).collect()
    };
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = a.$f.clone() { c.$f = v; })* };
    }
    if a.w_content.is_some() {
        c.w_content = a.w_content;
    }
    set!(
        algo,
        steps,
        lr,
        samples,
        images_per_step,
        beta,
        kl_estimator,
        style_reward,
        w_style,
        ptx_coef,
        lora_rank,
        mixed_precision,
        seed
    );
    if a.lora_alpha.is_some() {
        c.lora_alpha = a.lora_alpha;
    }
    if a.lora_mlp {
        c.lora_mlp = true;
    }
    if a.data.is_some() {
        c.data = a.data.clone();
    }
    if a.val_data.is_some() {
        c.val_data = a.val_data.clone();
    }
    a.content.apply(&mut c);
    if let Some(t) = a.target_kl {
        c.target_kl = (t > 0.0).then_some(t);
    }
    let mut aligner = Aligner::new(c, &a.out, a.resume, &device)?;
    if a.resume {
        eprintln!("resuming {} at step {}", a.out.display(), aligner.step);
    }
    let vals = aligner.run(&RunOptions {
        show_progress: !a.quiet,
        stop_after: None,
    })?;
    if let (Some(first), Some(last)) = (vals.first(), vals.last()) {
        println!(
            "validation reward {:.3} → {:.3} (style {:.3} → {:.3}, content {:.3} → {:.3})",
            first.reward,
            last.reward,
            first.style_prob,
            last.style_prob,
            first.content,
            last.content
        );
    }
    println!(
        "aligned captioner (best validation reward): {}",
        a.out.join("model").display()
    );
    Ok(())
}
