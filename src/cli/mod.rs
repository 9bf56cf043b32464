//! The `stylecap` command line.

mod align;
mod bench;
mod caption;
mod critic;
mod data;
mod demo;
mod eval;
mod export;
mod report;
mod serve;
mod train;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::util::Precision;

#[derive(Parser)]
#[command(
    name = "stylecap",
    version,
    about = "Train and serve image captioners that write in a requested style"
)]
pub struct Cli {
    /// Worker threads for CPU tensor ops (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Compute device: cpu, wgpu (build with --features wgpu), vulkan (--features vulkan) or
    /// cuda (--features cuda).
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    /// Float type of weights and activations: f32, or f16 / bf16 (half the memory; faster on
    /// GPUs) for caption, serve, eval and `bench --only generate`. Training keeps f32.
    #[arg(long, global = true, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The whole chain on the built-in world: base captioner, critic, judge, alignment,
    /// evaluation; stages already complete are skipped.
    Demo(demo::DemoArgs),
    /// Caption pictures (files or folders) in one or more styles with a captioner directory
    /// (transformers VisionEncoderDecoder layout); printed, or written resumably with --out.
    Caption(caption::CaptionArgs),
    /// Train a captioner (supervised): factual captions of images, and the styles from
    /// unpaired style texts.
    Train(train::TrainArgs),
    /// Train, score with or evaluate a style critic (the reward) or the judge (evaluation).
    Critic(critic::CriticArgs),
    /// Align a trained captioner to the styles by reinforcement learning (critic reward,
    /// content reward, KL to the frozen base).
    Align(align::AlignArgs),
    /// Evaluate a captioner: captions in each style, judged by the judge, with content
    /// fidelity, BLEU-4, CIDEr-D, concept F1, repetition and diversity.
    Eval(eval::EvalArgs),
    /// Write a captioner as one plain captioner folder; `--merge-lora` folds LoRA adapters
    /// into the weights.
    Export(export::ExportArgs),
    /// Write a self-contained HTML report of a demo folder or training run: metrics table,
    /// training and alignment curves, and a gallery of captions per style, base vs aligned.
    Report(report::ReportArgs),
    /// Serve captions over HTTP: a JSON/multipart API with dynamic batching, metrics, and a
    /// web page.
    Serve(serve::ServeArgs),
    /// Make the built-in scene world, fetch a dataset from URL lists, or inspect a dataset.
    Data(data::DataArgs),
    /// Time the product's supervised step, alignment step and greedy generation on the
    /// reference benchmark model (tools/bench_torch.py times the same in PyTorch).
    Bench(bench::BenchArgs),
}

/// Appends its default to the help of each flag of the subcommand at `path` that sets a key
/// of `defaults` (the stage's default configuration, serialized): defaults are written once,
/// in the configuration structs, and `--help` reads them from there.
fn show_defaults(cmd: clap::Command, path: &[&str], defaults: &serde_json::Value) -> clap::Command {
    let Some((first, rest)) = path.split_first() else {
        let ids: Vec<String> = cmd
            .get_arguments()
            .filter(|a| {
                a.get_action().takes_values()
                    && a.get_default_values().is_empty()
                    && !a.is_required_set()
            })
            .map(|a| a.get_id().to_string())
            .collect();
        return ids.into_iter().fold(cmd, |cmd, id| {
            let Some(value) = defaults.get(&id).filter(|v| !v.is_null() && *v != "") else {
                return cmd;
            };
            let shown = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            cmd.mut_arg(&id, |a| {
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                a.help(format!("{help} [default: {shown}]"))
            })
        });
    };
    cmd.mut_subcommand(*first, |sub| show_defaults(sub, rest, defaults))
}

/// The command line, with each stage's defaults in its `--help`.
pub fn command() -> clap::Command {
    let json = |v: serde_json::Result<serde_json::Value>| v.expect("configs serialize");
    let cmd = Cli::command();
    let cmd = show_defaults(
        cmd,
        &["train"],
        &json(serde_json::to_value(crate::sft::TrainConfig::default())),
    );
    let cmd = show_defaults(
        cmd,
        &["critic", "train"],
        &json(serde_json::to_value(
            crate::critic::train::CriticTrainConfig::default(),
        )),
    );
    show_defaults(
        cmd,
        &["align"],
        &json(serde_json::to_value(
            crate::align::config::AlignConfig::default(),
        )),
    )
}

pub fn run() -> Result<()> {
    let cli = Cli::from_arg_matches(&command().get_matches())?;
    crate::util::keep_freed_memory();
    crate::util::tune_matmul(true);
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    if cli.dtype != Precision::F32 {
        check_inference_only(&cli.command, cli.dtype)?;
    }
    let device = || crate::util::device(&cli.device, cli.dtype);
    match cli.command {
        Command::Caption(args) => caption::run(args, device()?),
        Command::Data(args) => data::run(args),
        Command::Demo(args) => demo::run(args, device()?),
        Command::Align(args) => align::run(args, device()?),
        Command::Eval(args) => eval::run(args, device()?),
        Command::Critic(args) => critic::run(args, device()?),
        Command::Train(args) => train::run(args, device()?),
        Command::Export(args) => export::run(args, device()?),
        Command::Report(args) => report::run(args, device()?),
        Command::Serve(args) => serve::run(args, device()?),
        Command::Bench(args) => bench::run(args, device()?),
    }
}

/// Half precision is for the commands that only run the models forward: a training step in
/// f16 or bf16 would update half-precision weights in place, losing small updates to rounding.
fn check_inference_only(command: &Command, dtype: Precision) -> Result<()> {
    let forward_only = match command {
        Command::Caption(_) | Command::Serve(_) | Command::Eval(_) => true,
        Command::Bench(b) => {
            !b.only.is_empty() && b.only.iter().all(|p| *p == crate::bench::Part::Generate)
        }
        _ => false,
    };
    anyhow::ensure!(
        forward_only,
        "--dtype {dtype} applies to caption, serve, eval and `bench --only generate`; training \
         and the commands that train keep f32 weights (drop --dtype; `train`, `align` and \
         `critic train` take --mixed-precision f16|bf16)"
    );
    Ok(())
}
