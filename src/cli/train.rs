//! `stylecap train`: the supervised captioner.

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::Device;
use clap::Args;

use crate::run::RunOptions;
use crate::sft::config::TrainConfig;
use crate::sft::trainer::Trainer;
use crate::util::Precision;

/// The base captioner's data and pretrained parts, shared by `train` and `demo`.
#[derive(Args)]
pub struct BaseDataArgs {
    /// Image–caption data: a `data synth` folder, COCO captions JSON, JSONL manifest, image
    /// folder or `data fetch` output (default: the built-in world, made in memory).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation pictures (default: a fixed held-out 5% of --data, or the `data synth`
    /// folder's val split).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Test pictures (default: another fixed held-out 5% of --data, or the `data synth`
    /// folder's test splits); the demo evaluates and shows these.
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Style corpus: JSONL {"text","style"} or a folder of STYLE.txt (default: the built-in
    /// styles, or the data folder's styles.jsonl).
    #[arg(long)]
    pub styles: Option<PathBuf>,
    /// Pretrained vision encoder: HF folder (ViT or CLIP) or Hub id.
    #[arg(long)]
    pub vision: Option<String>,
    /// Pretrained GPT-2: HF folder or Hub id.
    #[arg(long)]
    pub decoder: Option<String>,
}

impl BaseDataArgs {
    pub fn apply(&self, c: &mut TrainConfig) {
        for (slot, value) in [
            (&mut c.data, &self.data),
            (&mut c.val_data, &self.val_data),
            (&mut c.test_data, &self.test_data),
            (&mut c.styles, &self.styles),
        ] {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        for (slot, value) in [
            (&mut c.vision, &self.vision),
            (&mut c.decoder, &self.decoder),
        ] {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// Run folder (config.json, metrics.jsonl, checkpoint/, model/, eval.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Settings file (JSON, or TOML by extension); flags given here override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (with its saved configuration).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub data: BaseDataArgs,
    /// Optimisation steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Image–caption examples per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Style-text examples per micro-batch, beside the captioned images.
    #[arg(long)]
    pub style_batch_size: Option<usize>,
    /// Micro-batches accumulated into each optimisation step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Peak learning rate of the decoder and style prefixes; the encoder and cross-attention
    /// have their own, `lr_encoder` and `lr_cross`, set with --config.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Vision layers to train from the top (0 freezes the encoder; default all).
    #[arg(long)]
    pub train_vision_layers: Option<usize>,
    /// Keep only each transformer block's input and recompute the block in the backward
    /// pass, as transformers' gradient checkpointing (much less memory, about 30% more
    /// time per step, the same gradients).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Mixed precision: compute the matrix products in f16 or bf16, keeping f32 weights and
    /// optimizer (f16 with dynamic loss scaling). Pays on a GPU; on the CPU it is slower.
    #[arg(long, value_enum)]
    pub mixed_precision: Option<Precision>,
    /// Seed for initialisation and data order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate on the validation images every this many steps, and at the end.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Save a checkpoint every this many steps, and at the end.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Skip bad data records (each is listed) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The configuration: defaults, then the file, then the flags.
pub fn resolve_config(a: &TrainArgs) -> Result<TrainConfig> {
    let mut c = match &a.config {
        Some(path) => TrainConfig::from_file(path)?,
        None => TrainConfig::default(),
    };
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = a.$field.clone() { c.$field = v; })* };
    }
    set!(
        steps,
        batch_size,
        style_batch_size,
        grad_accum,
        lr,
        seed,
        eval_every,
        checkpoint_every
    );
    a.data.apply(&mut c);
    if a.train_vision_layers.is_some() {
        c.train_vision_layers = a.train_vision_layers;
    }
    c.skip_bad |= a.skip_bad;
    c.gradient_checkpointing |= a.gradient_checkpointing;
    if let Some(p) = a.mixed_precision {
        c.mixed_precision = p;
    }
    Ok(c)
}

pub fn run(args: TrainArgs, device: Device) -> Result<()> {
    let config = resolve_config(&args)?;
    let mut trainer = Trainer::new(config, &args.out, args.resume, &device)?;
    if args.resume {
        eprintln!("resuming {} at step {}", args.out.display(), trainer.step);
    }
    let summary = trainer.run(&RunOptions {
        show_progress: !args.quiet,
        stop_after: None,
    })?;
    println!(
        "trained {} steps in {:.0} s; final loss {:.3}",
        summary.steps, summary.seconds, summary.final_loss
    );
    for e in summary.evals.iter().filter(|e| e.split != "val") {
        println!(
            "  {:<14} content fidelity {}  BLEU-4 {:.3}  CIDEr-D {:.3}  loss {:.3}",
            e.split,
            e.content_fidelity.map_or("-".into(), |f| format!("{f:.3}")),
            e.bleu4,
            e.cider_d,
            e.loss
        );
    }
    println!("captioner: {}", args.out.join("model").display());
    Ok(())
}
