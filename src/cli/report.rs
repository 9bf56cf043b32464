//! `stylecap report`: the HTML report of a demo folder or a training run.

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::Device;
use clap::Args;

use crate::eval::report::{write_report, ReportOptions};

#[derive(Args)]
pub struct ReportArgs {
    /// A demo folder (base/, align/, judge/, eval.json) or a training run (model/).
    pub run: PathBuf,
    /// Output file (default: RUN/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Test pictures in the gallery (1 to 200).
    #[arg(long, default_value_t = ReportOptions::default().images)]
    pub images: usize,
    /// Sampling seed for the gallery captions.
    #[arg(long, default_value_t = ReportOptions::default().seed)]
    pub seed: u64,
}

pub fn run(a: ReportArgs, device: Device) -> Result<()> {
    let o = ReportOptions {
        images: a.images,
        seed: a.seed,
    };
    let (path, _) = write_report(&a.run, a.out.as_deref(), &o, &device)?;
    println!("report: {}", path.display());
    Ok(())
}
