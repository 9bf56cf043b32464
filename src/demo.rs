//! `stylecap demo`: the whole chain, on the built-in world or on the user's data and style
//! corpus ([`DemoData`]): train the base captioner, the critic and the judge, align every
//! style, and evaluate base and aligned captioners with the judge on the test pictures. Each
//! stage is skipped when its run is complete, so an interrupted demo continues where it
//! stopped (the base captioner resumes from its checkpoint; the stages without resume start
//! again).
//!
//! Its settings are a preset file (`presets/demo.toml`, `presets/demo-quick.toml`, or the
//! user's own): one section per stage, each overriding that stage's defaults.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::prelude::Device;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::align::config::AlignConfig;
use crate::align::reward::ContentRewardKind;
use crate::align::trainer::Aligner;
use crate::critic::train::CorpusPart;
use crate::critic::train::{train_critic, CriticTrainConfig};
use crate::critic::Critic;
use crate::data::loaders::{detect, Format};
use crate::data::synth::STYLES_FILE;
use crate::eval::captioner::{evaluate_captioner, CaptionerEval, EvalConfig};
use crate::eval::report::{write_report, ReportOptions};
use crate::model::folder::LoadedCaptioner;
use crate::run::{self, RunFolder, RunOptions};
use crate::sft::{TrainConfig, Trainer};
use crate::util::{read_json, write_json};

/// The built-in presets, by name.
pub const PRESETS: [(&str, &str); 2] = [
    ("demo", include_str!("../presets/demo.toml")),
    ("demo-quick", include_str!("../presets/demo-quick.toml")),
];

/// The settings of every stage of the demo.
#[derive(Clone, Debug, Serialize)]
pub struct DemoPreset {
    pub train: TrainConfig,
    pub critic: CriticTrainConfig,
    pub judge: CriticTrainConfig,
    pub align: AlignConfig,
    pub eval: EvalConfig,
    pub report: ReportOptions,
}

impl DemoPreset {
    /// A built-in preset (`demo` or `demo-quick`).
    pub fn builtin(name: &str) -> Result<Self> {
        let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name) else {
            bail!("no built-in preset `{name}` (built in: demo, demo-quick)");
        };
        Self::parse(text, &format!("built-in preset {name}"))
    }

    /// Seeds the base captioner's training and the alignment with `seed`. The critic and the
    /// judge keep their own seeds, so runs with different seeds are judged alike.
    pub fn seed(&mut self, seed: u64) {
        self.train.seed = seed;
        self.align.seed = seed;
    }

    /// A preset file (TOML).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a preset; `name` says where it came from in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        let table: toml::Table =
            toml::from_str(text).with_context(|| format!("{name}: invalid TOML"))?;
        let mut sections: serde_json::Map<String, serde_json::Value> =
            serde_json::to_value(&table)?
                .as_object()
                .cloned()
                .unwrap_or_default();
        const SECTIONS: [&str; 6] = ["train", "critic", "judge", "align", "eval", "report"];
        if let Some(other) = sections.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            bail!(
                "{name}: unknown section [{other}] (sections: {})",
                SECTIONS.join(", ")
            );
        }
        let mut take = |key: &str| sections.remove(key);
        let preset = DemoPreset {
            train: section(name, "train", TrainConfig::default(), take("train"))?,
            critic: section(name, "critic", CriticTrainConfig::default(), take("critic"))?,
            judge: section(name, "judge", CriticTrainConfig::judge(), take("judge"))?,
            align: section(name, "align", AlignConfig::default(), take("align"))?,
            eval: section(name, "eval", EvalConfig::default(), take("eval"))?,
            report: section(name, "report", ReportOptions::default(), take("report"))?,
        };
        // Every stage checks its settings when it starts; checking them here as well fails a
        // bad preset before the stages ahead of the bad section have run.
        let in_section = |key: &str| format!("{name}: section [{key}]");
        preset
            .train
            .validate()
            .with_context(|| in_section("train"))?;
        preset
            .critic
            .validate()
            .with_context(|| in_section("critic"))?;
        preset
            .judge
            .validate()
            .with_context(|| in_section("judge"))?;
        preset
            .align
            .validate()
            .with_context(|| in_section("align"))?;
        preset.eval.validate().with_context(|| in_section("eval"))?;
        preset
            .report
            .validate()
            .with_context(|| in_section("report"))?;
        Ok(preset)
    }
}

/// `defaults` with the keys of `overrides` (a preset section) laid over them.
fn section<T: Serialize + DeserializeOwned>(
    name: &str,
    key: &str,
    defaults: T,
    overrides: Option<serde_json::Value>,
) -> Result<T> {
    let mut value = serde_json::to_value(&defaults)?;
    if let Some(o) = overrides {
        merge(&mut value, o);
    }
    serde_json::from_value(value).with_context(|| format!("{name}: section [{key}]"))
}

/// Lays `overrides` over `base`: objects key by key, anything else replaced.
fn merge(base: &mut serde_json::Value, overrides: serde_json::Value) {
    match (base, overrides) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The user's data and models in place of the preset's (by default the built-in world and
/// styles): `stylecap demo --data ... --styles ...`.
#[derive(Clone, Debug, Default)]
pub struct DemoData {
    /// Pictures with reference captions, in any format `train --data` reads.
    pub data: Option<PathBuf>,
    pub val_data: Option<PathBuf>,
    pub test_data: Option<PathBuf>,
    /// A style corpus; None: the `data synth` folder's own, else the built-in styles.
    pub styles: Option<PathBuf>,
    pub content_reward: Option<ContentRewardKind>,
    /// The sentence encoder of the `similarity` reward, also used by the evaluation.
    pub content_encoder: Option<PathBuf>,
    /// The CLIPModel folder of the `clip` reward, also used by the evaluation.
    pub clip: Option<PathBuf>,
    /// Pretrained vision encoder and GPT-2 (HF folders or ids).
    pub vision: Option<String>,
    pub decoder: Option<String>,
}

impl DemoData {
    /// Lays the user's data over every stage of `preset`. A user's style corpus is cut in
    /// two halves (`CorpusPart`): the critic learns from one and the judge from the other,
    /// so the judge never scores a caption by texts the reward critic learnt.
    pub fn apply(&self, preset: &mut DemoPreset) -> Result<()> {
        let synth_styles = match &self.data {
            Some(path) if detect(path)? == Format::World => Some(path.join(STYLES_FILE)),
            _ => None,
        };
        let styles = self.styles.clone().or(synth_styles);
        let t = &mut preset.train;
        set(&mut t.data, &self.data);
        set(&mut t.val_data, &self.val_data);
        set(&mut t.test_data, &self.test_data);
        set(&mut t.styles, &self.styles);
        set(&mut t.vision, &self.vision);
        set(&mut t.decoder, &self.decoder);
        if styles.is_some() {
            for (c, part) in [
                (&mut preset.critic, CorpusPart::Critic),
                (&mut preset.judge, CorpusPart::Judge),
            ] {
                set(&mut c.data, &styles);
                c.corpus_part = part;
                set(&mut c.factual_captions, &self.data);
                c.split_seed = preset.train.split_seed;
            }
        }
        let a = &mut preset.align;
        set(&mut a.data, &self.data);
        set(&mut a.val_data, &self.val_data);
        a.split_seed = preset.train.split_seed;
        set(&mut a.content_reward, &self.content_reward);
        set(&mut a.content_encoder, &self.content_encoder);
        set(&mut a.clip, &self.clip);
        set(&mut preset.eval.content_encoder, &self.content_encoder);
        set(&mut preset.eval.clip, &self.clip);
        Ok(())
    }
}

fn set<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        slot.clone_from(value);
    }
}

/// What the demo measured: each captioner's evaluation, the report, and sample captions.
pub struct DemoSummary {
    pub evals: Vec<(String, CaptionerEval)>,
    pub report: PathBuf,
    /// Aligned captions of the first test picture, one per style.
    pub examples: Vec<String>,
    pub seconds: f64,
}

/// Announces a stage with the demo's elapsed time, so a log shows what each stage took.
fn stage(name: &str, done: bool, start: Instant) -> bool {
    let at = start.elapsed().as_secs_f64();
    if done {
        eprintln!("== {name}: done already, skipped [{at:.0} s]");
    } else {
        eprintln!("== {name} [{at:.0} s]");
    }
    !done
}

/// A stage that cannot resume starts again from an empty folder.
fn start_afresh(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot remove the incomplete run {}", dir.display()))?;
    }
    Ok(())
}

/// The file in a demo folder that records the settings the demo started with.
const SETTINGS_FILE: &str = "demo.json";

/// Records `preset` in a new demo folder, or refuses it when the folder's demo started with
/// other settings: its complete stages would be skipped, and the rest would mix the two.
fn check_settings(out: &Path, preset: &DemoPreset) -> Result<()> {
    let path = out.join(SETTINGS_FILE);
    let now = serde_json::to_value(preset)?;
    if !path.exists() {
        return write_json(&path, &now);
    }
    let then: serde_json::Value = read_json(&path)?;
    // A key the file lacks was added to stylecap after the demo started: its default is
    // what the demo ran with.
    let defaults = serde_json::to_value(DemoPreset {
        train: TrainConfig::default(),
        critic: CriticTrainConfig::default(),
        judge: CriticTrainConfig::default(),
        align: AlignConfig::default(),
        eval: EvalConfig::default(),
        report: ReportOptions::default(),
    })?;
    let mut changed = Vec::new();
    differences(&then, &now, &defaults, "", &mut changed);
    if !changed.is_empty() {
        bail!(
            "{} holds a demo started with other settings ({}, as recorded in its \
             {SETTINGS_FILE}): rerun it with its own settings to continue it, or choose \
             another --out",
            out.display(),
            changed.join("; ")
        );
    }
    Ok(())
}

/// Appends "key: A there, B now" to `out` for every key (a dotted path) whose value differs
/// between `there` and `now`; a key missing `there` stands for its value in `defaults`.
fn differences(
    there: &serde_json::Value,
    now: &serde_json::Value,
    defaults: &serde_json::Value,
    at: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (there, now) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let key = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let default = defaults.get(k).unwrap_or(&Value::Null);
                differences(
                    x.get(k).unwrap_or(default),
                    y.get(k).unwrap_or(&Value::Null),
                    default,
                    &key,
                    out,
                );
            }
        }
        _ if there == now => {}
        _ => out.push(format!("{at}: {there} there, {now} now")),
    }
}

/// Runs (or continues) the demo in `out`.
pub fn run(preset: DemoPreset, out: &Path, show: bool, device: &Device) -> Result<DemoSummary> {
    let start = Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    check_settings(out, &preset)?;
    let (base_dir, critic_dir, judge_dir, align_dir) = (
        out.join("base"),
        out.join("critic"),
        out.join("judge"),
        out.join("align"),
    );
    if stage(
        "base captioner (stylecap train)",
        RunFolder::is_complete(&base_dir),
        start,
    ) {
        let resume = RunFolder::has_checkpoint(&base_dir);
        if !resume {
            start_afresh(&base_dir)?;
        }
        let mut t = Trainer::new(preset.train.clone(), &base_dir, resume, device)?;
        t.run(&RunOptions {
            show_progress: show,
            stop_after: None,
        })?;
    }
    for (name, dir, config) in [
        ("critic", &critic_dir, &preset.critic),
        ("judge", &judge_dir, &preset.judge),
    ] {
        if stage(
            &format!("{name} (stylecap critic train)"),
            RunFolder::is_complete(dir),
            start,
        ) {
            start_afresh(dir)?;
            let r = train_critic(config, dir, show, device)?;
            eprintln!("   held-out accuracy {:.4}", r.accuracy);
        }
    }
    if stage(
        "alignment (stylecap align)",
        RunFolder::is_complete(&align_dir),
        start,
    ) {
        let resume = RunFolder::has_checkpoint(&align_dir);
        if !resume {
            start_afresh(&align_dir)?;
        }
        let align = AlignConfig {
            base: base_dir.clone(),
            critic: critic_dir.clone(),
            ..preset.align.clone()
        };
        Aligner::new(align, &align_dir, resume, device)?.run(&RunOptions {
            show_progress: show,
            stop_after: None,
        })?;
    }
    stage("evaluation (stylecap eval)", false, start);
    let judge = Critic::load(&judge_dir, device)?;
    let images = preset.eval.images;
    let mut evals = Vec::new();
    let mut results = serde_json::Map::new();
    let base = LoadedCaptioner::load(&base_dir.join(run::MODEL), device)?;
    // Alignment keeps the base's encoder, so both see the same pictures, read once.
    let size = base.model.config.encoder.image_size();
    let source = preset.train.test_pictures(size, images)?;
    for (name, dir) in [("base", &base_dir), ("aligned", &align_dir)] {
        let captioner = LoadedCaptioner::load(&dir.join(run::MODEL), device)?;
        let e = evaluate_captioner(
            &captioner,
            Some(&base),
            &judge,
            &source,
            &preset.eval,
            device,
        )?;
        results.insert(name.into(), serde_json::to_value(&e)?);
        evals.push((name.to_string(), e));
    }
    write_json(&out.join(run::EVAL), &results)?;
    stage("report (stylecap report)", false, start);
    let (report, examples) = write_report(out, None, &preset.report, device)?;
    Ok(DemoSummary {
        evals,
        report,
        examples,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_lay_their_keys_over_each_stages_defaults() {
        let full = DemoPreset::builtin("demo").unwrap();
        assert_eq!(full.train, TrainConfig::default());
        assert_eq!(full.judge, CriticTrainConfig::judge());
        assert_eq!((full.eval.images, full.report.images), (200, 8));
        let quick = DemoPreset::builtin("demo-quick").unwrap();
        assert_eq!((quick.train.steps, quick.train.model.image_size), (700, 32));
        assert_eq!(quick.train.optimizer.beta2, 0.999);
        // Keys a section leaves out keep that stage's own defaults.
        assert_eq!(
            quick.train.model.shape_channel,
            TrainConfig::default().model.shape_channel
        );
        assert_eq!(quick.judge.seed, CriticTrainConfig::judge().seed);
        assert_eq!((quick.align.steps, quick.align.beta), (150, 0.02));
    }

    #[test]
    fn a_bad_preset_is_refused_naming_its_section() {
        let e = DemoPreset::parse("[train]\nstepz = 3\n", "my.toml").unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("my.toml") && e.contains("[train]") && e.contains("stepz"),
            "{e}"
        );
        let e = DemoPreset::parse("[trian]\n", "my.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown section [trian]"), "{e}");
        assert!(DemoPreset::parse("[align\n", "my.toml").is_err());
    }

    #[test]
    fn a_seed_moves_the_base_and_the_alignment_only() {
        let default = DemoPreset::builtin("demo").unwrap();
        let mut seeded = default.clone();
        seeded.seed(3);
        assert_eq!((seeded.train.seed, seeded.align.seed), (3, 3));
        assert_ne!(default.train.seed, 3);
        assert_eq!(seeded.critic, default.critic);
        assert_eq!(seeded.judge, default.judge);
    }

    #[test]
    fn a_demo_folder_refuses_settings_other_than_its_own() {
        let dir =
            std::env::temp_dir().join(format!("stylecap-demo-settings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let preset = DemoPreset::builtin("demo").unwrap();
        check_settings(&dir, &preset).unwrap();
        assert!(dir.join(SETTINGS_FILE).is_file());
        // The same settings continue the demo.
        check_settings(&dir, &preset).unwrap();
        let mut other = preset.clone();
        other.seed(1);
        let e = check_settings(&dir, &other).unwrap_err().to_string();
        assert!(
            e.contains("train.seed: 0 there, 1 now") && e.contains("--out"),
            "{e}"
        );
        let mut other = preset.clone();
        other.eval.images = 50;
        let e = check_settings(&dir, &other).unwrap_err().to_string();
        assert!(e.contains("eval.images: 200 there, 50 now"), "{e}");
        // A folder recorded before a key existed continues with that key at its default,
        // and is refused with it set otherwise.
        let path = dir.join(SETTINGS_FILE);
        let mut recorded: serde_json::Value = read_json(&path).unwrap();
        recorded["eval"]
            .as_object_mut()
            .unwrap()
            .remove("repetition_penalty");
        write_json(&path, &recorded).unwrap();
        check_settings(&dir, &preset).unwrap();
        let mut other = preset.clone();
        other.eval.repetition_penalty = 1.5;
        let e = check_settings(&dir, &other).unwrap_err().to_string();
        assert!(
            e.contains("eval.repetition_penalty: 1.0 there, 1.5 now"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
