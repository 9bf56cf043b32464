//! `stylecap caption` over many pictures: folders and files, every style, batches that do not
//! change the captions, unreadable pictures named and skipped, and a killed `--out` run that
//! resumes to the same file an uninterrupted run writes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::prelude::Device;
use common::{fixture, scratch, stylecap, tiny_config};
use serde_json::Value;
use stylecap::model::Captioner;

/// A captioner with the styles `factual` and `noir` (random weights) and the fixture's
/// tokenizer.
fn styled_captioner(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    if !model.join("model.safetensors").exists() {
        let device = Device::flex();
        device.seed(7);
        Captioner::new(tiny_config("vit", &["factual", "noir"], 320), &device)
            .save(&model)
            .unwrap();
        std::fs::copy(
            fixture("vit_gpt2").join("tokenizer.json"),
            model.join("tokenizer.json"),
        )
        .unwrap();
    }
    model
}

/// Picture `k`: a PNG of its own colours.
fn picture(path: &Path, k: u32) {
    let img = image::RgbImage::from_fn(20, 20, |x, y| {
        image::Rgb([
            (x * 11 + k * 37) as u8,
            (y * 13 + k * 5) as u8,
            (k * 71) as u8,
        ])
    });
    img.save(path).unwrap();
}

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run(args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let o = stylecap(args);
    (
        o.status.code(),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn folders_are_captioned_in_every_style_and_batches_do_not_change_the_captions() {
    let dir = scratch("caption", "folders");
    let model = styled_captioner(&dir);
    let pics = dir.join("pictures");
    std::fs::create_dir_all(pics.join("sub")).unwrap();
    for k in 0..4 {
        picture(&pics.join(format!("p{k}.png")), k);
    }
    picture(&pics.join("sub").join("q.png"), 9);
    std::fs::write(pics.join("notes.txt"), "not a picture").unwrap();
    std::fs::write(pics.join("broken.png"), "not a PNG either").unwrap();
    let m = model.to_str().unwrap();
    let p = pics.to_str().unwrap();
    let sampled = |batch: &str, seed: &str| {
        let args = "--style all --temperature 1 --json --seed";
        let mut all = vec!["caption", "--model", m, "--image", p, "--batch-size", batch];
        all.extend(args.split(' '));
        all.push(seed);
        run(&all)
    };
    let (code, out, err) = sampled("2", "5");
    // The unreadable picture is named, the others captioned, and the exit status says so.
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("broken.png") && err.contains("1 of 6 pictures could not be read"),
        "{err}"
    );
    let rows = lines(&out);
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            let image = PathBuf::from(r["image"].as_str().unwrap());
            let name = image.strip_prefix(&pics).unwrap().display().to_string();
            (name, r["style"].as_str().unwrap().to_string())
        })
        .collect();
    let mut want = Vec::new();
    for name in ["p0.png", "p1.png", "p2.png", "p3.png", "sub/q.png"] {
        for style in ["factual", "noir"] {
            want.push((name.to_string(), style.to_string()));
        }
    }
    assert_eq!(
        got, want,
        "every readable picture in path order, each style in order"
    );
    for r in &rows {
        let n = r["token_ids"].as_array().unwrap().len();
        assert!(n > 0 && r["logprobs"].as_array().unwrap().len() == n, "{r}");
    }
    // Each row samples from its own stream: other batch cuts give the same captions (the
    // batch's rounding moves log-probabilities in their last digits only).
    let same = |a: &[Value], b: &[Value], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            for key in ["image", "style", "caption", "token_ids"] {
                assert_eq!(x[key], y[key], "{what}: {key}");
            }
            let (lx, ly) = (
                x["logprobs"].as_array().unwrap(),
                y["logprobs"].as_array().unwrap(),
            );
            for (p, q) in lx.iter().zip(ly) {
                let d = (p.as_f64().unwrap() - q.as_f64().unwrap()).abs();
                assert!(d < 1e-4, "{what}: log-probabilities {p} and {q}");
            }
        }
    };
    for batch in ["1", "5"] {
        let (_, again, err) = sampled(batch, "5");
        same(
            &lines(&again),
            &rows,
            &format!("--batch-size {batch}: {err}"),
        );
    }
    // And another seed other ones.
    let (_, other, _) = sampled("16", "6");
    assert_ne!(lines(&other), rows);

    // A picture's greedy caption in a batch is its caption alone; files and folders mix.
    let q = pics.join("sub").join("q.png");
    let (code, alone, err) = run(&[
        "caption",
        "--model",
        m,
        "--image",
        q.to_str().unwrap(),
        "--style",
        "noir",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let p2 = pics.join("p2.png");
    let (code, text, err) = run(&[
        "caption",
        "--model",
        m,
        "--image",
        p2.to_str().unwrap(),
        p,
        "--style",
        "noir",
        "--batch-size",
        "3",
    ]);
    assert_eq!(code, Some(1), "{err}");
    let text = String::from_utf8(text).unwrap();
    let table: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(table.len(), 6, "{text}");
    assert_eq!(table[0][0], p2.to_str().unwrap());
    let q_row = table.iter().find(|r| r[0] == q.to_str().unwrap()).unwrap();
    assert_eq!(q_row[1], "noir");
    assert_eq!(q_row[2], String::from_utf8(alone).unwrap().trim_end());
}

#[test]
fn bad_requests_name_the_flag_or_path() {
    let dir = scratch("caption", "refused");
    let model = styled_captioner(&dir);
    let m = model.to_str().unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let missing = dir.join("missing.png");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--image", empty.to_str().unwrap()],
            format!("{}: no PNG or JPEG files", empty.display()),
        ),
        (
            vec!["--image", missing.to_str().unwrap()],
            format!("{}: no such file or folder", missing.display()),
        ),
        (
            vec!["--image", missing.to_str().unwrap(), "--batch-size", "0"],
            "--batch-size".to_string(),
        ),
        (
            vec!["--image", missing.to_str().unwrap(), "--batch-size", "257"],
            "1..=256".to_string(),
        ),
        (
            vec![
                "--image",
                empty.to_str().unwrap(),
                "--out",
                dir.to_str().unwrap(),
            ],
            "no PNG or JPEG files".to_string(),
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["caption", "--model", m];
        all.extend(&args);
        let (code, _, err) = run(&all);
        assert_ne!(code, Some(0), "{args:?}");
        assert!(err.contains(&says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    picture(&dir.join("one.png"), 1);
    let (code, _, err) = run(&[
        "caption",
        "--model",
        m,
        "--image",
        dir.join("one.png").to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("a folder; name a file"), "{err}");
}

#[test]
fn a_killed_run_resumes_to_the_file_an_uninterrupted_run_writes() {
    let dir = scratch("caption", "resume");
    let _ = std::fs::remove_dir_all(&dir);
    let model = styled_captioner(&dir);
    let pics = dir.join("pictures");
    std::fs::create_dir_all(&pics).unwrap();
    for k in 0..12 {
        picture(&pics.join(format!("p{k:02}.png")), k);
    }
    let args = |out: &Path, seed: &str| -> Vec<String> {
        [
            "caption",
            "--model",
            model.to_str().unwrap(),
            "--image",
            pics.to_str().unwrap(),
            "--style",
            "all",
            "--temperature",
            "1",
            "--seed",
            seed,
            "--batch-size",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = dir.join("whole.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_stylecap"))
        .args(args(&whole, "3"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(lines(&std::fs::read(&whole).unwrap()).len(), 24);

    // Picture 7 (batch 3) is a pipe nobody writes to: the run blocks there, after batches
    // 0 to 2 are on disk, until it is killed.
    let blocked = pics.join("p07.png");
    std::fs::remove_file(&blocked).unwrap();
    let status = Command::new("mkfifo").arg(&blocked).status().unwrap();
    assert!(status.success());
    let cut = dir.join("cut.jsonl");
    let partial = dir.join("cut.jsonl.partial");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stylecap"))
        .args(args(&cut, "3"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let marks = || {
        std::fs::read_to_string(&partial)
            .map(|t| t.matches("batch_done").count())
            .unwrap_or(0)
    };
    while marks() < 3 {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(marks(), 3, "the run went past the pipe");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!cut.exists(), "a killed run leaves no output file");
    std::fs::remove_file(&blocked).unwrap();
    picture(&blocked, 7);

    // Another job is refused while the partial file waits for its own.
    let o = Command::new(env!("CARGO_BIN_EXE_stylecap"))
        .args(args(&cut, "4"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cut.jsonl.partial") && err.contains("decoding differ"),
        "{err}"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_stylecap"))
        .args(args(&cut, "3"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resumed after 3 batches"), "{err}");
    assert!(!partial.exists());
    assert_eq!(
        std::fs::read(&cut).unwrap(),
        std::fs::read(&whole).unwrap(),
        "the resumed run's file is the uninterrupted run's"
    );
}
