//! Real-data loaders on small fixtures made here: each reads good records, and each bad record
//! is an error naming its file and line (or field), or, with `skip_bad`, a listed skip.

mod common;

use std::path::{Path, PathBuf};

use common::{scratch, stylecap};
use stylecap::data::loaders::{coco, detect, folder, manifest, style_corpus, Format};
use stylecap::data::records::{LoadOptions, Problem};
use stylecap::data::stream::image_chunks;

const STRICT: LoadOptions = LoadOptions { skip_bad: false };
const SKIP: LoadOptions = LoadOptions { skip_bad: true };

fn png(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]))
        .save(path)
        .unwrap();
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn problem_text(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    let e = r.expect_err("expected a bad record to stop the load");
    let p = e
        .downcast_ref::<Problem>()
        .expect("a Problem naming the record");
    p.to_string()
}

#[test]
fn manifest_loads_and_names_bad_lines() {
    let dir = scratch("loaders", "manifest");
    png(&dir.join("img/a.png"), 8, 6);
    png(&dir.join("img/b.png"), 5, 5);
    let good = write(
        &dir.join("good.jsonl"),
        "{\"image\": \"img/a.png\", \"caption\": \"a dog\"}\n\
         {\"id\": 7, \"image\": \"img/b.png\", \"captions\": [\"a cat\", \"one cat\"]}\n",
    );
    assert_eq!(detect(&good).unwrap(), Format::Manifest);
    let loaded = manifest::load(&good, STRICT).unwrap();
    assert_eq!(loaded.records.len(), 2);
    assert_eq!(loaded.records[0].image, dir.join("img/a.png"));
    assert_eq!(loaded.records[1].id, "7");
    assert_eq!(loaded.records[1].captions, vec!["a cat", "one cat"]);

    let cases = [
        ("{\"image\": \"img/a.png\", \"caption\": \"a dog\"", "malformed JSON"),
        ("{\"image\": \"img/a.png\", \"caption\": \"  \"}", "empty caption"),
        ("{\"image\": \"img/missing.png\", \"caption\": \"x\"}", "image not found"),
        ("{\"caption\": \"x\"}", "missing field \"image\""),
        ("{\"id\": \"1\", \"image\": \"img/b.png\", \"caption\": \"x\"}\n{\"id\": \"1\", \"image\": \"img/a.png\", \"caption\": \"y\"}", "duplicate id"),
    ];
    for (i, (bad, expected)) in cases.iter().enumerate() {
        let path = write(
            &dir.join(format!("bad{i}.jsonl")),
            &format!("{{\"image\": \"img/a.png\", \"caption\": \"fine\"}}\n{bad}\n"),
        );
        let msg = problem_text(manifest::load(&path, STRICT));
        assert!(msg.contains(&format!("bad{i}.jsonl")), "{msg}");
        assert!(msg.contains(expected), "{msg} should say {expected}");
        let line = if expected == &"duplicate id" { 3 } else { 2 };
        assert!(msg.contains(&format!("line {line}")), "{msg}");
        let skipped = manifest::load(&path, SKIP).unwrap();
        assert_eq!(skipped.skipped.len(), 1, "{:?}", skipped.skipped);
        assert_eq!(skipped.records.len(), if line == 3 { 2 } else { 1 });
    }
}

#[test]
fn unreadable_images_are_reported_when_decoded() {
    let dir = scratch("loaders", "decode");
    png(&dir.join("ok.png"), 4, 4);
    // A PNG whose header is intact but whose data is cut off.
    let bytes = std::fs::read(dir.join("ok.png")).unwrap();
    std::fs::write(dir.join("cut.png"), &bytes[..bytes.len() - 20]).unwrap();
    let path = write(
        &dir.join("m.jsonl"),
        "{\"image\": \"ok.png\", \"caption\": \"a\"}\n{\"image\": \"cut.png\", \"caption\": \"b\"}\n",
    );
    let loaded = manifest::load(&path, STRICT).unwrap();
    let results: Vec<_> = image_chunks(&loaded.records, 1, |_, img| img.dimensions())
        .flatten()
        .collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].1.as_ref().unwrap(), &(4, 4));
    let err = results[1].1.as_ref().unwrap_err().to_string();
    assert!(
        err.contains("m.jsonl: line 2") && err.contains("cut.png"),
        "{err}"
    );

    // Not an image at all fails at load time, from the header.
    std::fs::write(dir.join("text.png"), "hello").unwrap();
    let path = write(
        &dir.join("n.jsonl"),
        "{\"image\": \"text.png\", \"caption\": \"c\"}\n",
    );
    let msg = problem_text(manifest::load(&path, STRICT));
    assert!(msg.contains("line 1") && msg.contains("text.png"), "{msg}");
}

#[test]
fn coco_loads_and_names_bad_entries() {
    let dir = scratch("loaders", "coco");
    png(&dir.join("images/1.png"), 6, 4);
    png(&dir.join("images/2.png"), 6, 4);
    let json = |images: &str, annotations: &str| {
        format!("{{\"info\": {{}}, \"images\": [{images}], \"annotations\": [{annotations}]}}")
    };
    let good = write(
        &dir.join("captions_train.json"),
        &json(
            r#"{"id": 1, "file_name": "1.png"}, {"id": 2, "file_name": "2.png"}"#,
            r#"{"image_id": 1, "id": 10, "caption": "a"}, {"image_id": 2, "id": 11, "caption": "b"},
               {"image_id": 1, "id": 12, "caption": "c "}"#,
        ),
    );
    assert_eq!(detect(&good).unwrap(), Format::Coco);
    let loaded = coco::load(&good, None, STRICT).unwrap();
    assert_eq!(loaded.records.len(), 2);
    assert_eq!(loaded.records[0].captions, vec!["a", "c"]);
    assert_eq!(loaded.records[1].image, dir.join("images/2.png"));

    let cases = [
        (
            json(
                r#"{"id": 1, "file_name": "1.png"}, {"id": 1, "file_name": "2.png"}"#,
                r#"{"image_id": 1, "caption": "a"}"#,
            ),
            "images[1]: duplicate image id 1",
        ),
        (
            json(
                r#"{"id": 1, "file_name": "1.png"}"#,
                r#"{"image_id": 1, "caption": ""}"#,
            ),
            "annotations[0]: empty caption",
        ),
        (
            json(
                r#"{"id": 1, "file_name": "1.png"}"#,
                r#"{"image_id": 1, "caption": "a"}, {"image_id": 9, "caption": "b"}"#,
            ),
            "annotations[1]: image_id 9 is not in images[]",
        ),
        (
            json(
                r#"{"id": 1, "file_name": "nope.png"}"#,
                r#"{"image_id": 1, "caption": "a"}"#,
            ),
            "images[0]: image not found",
        ),
        (
            json(r#"{"id": 1}"#, r#"{"image_id": 1, "caption": "a"}"#),
            "images[0]: missing field `file_name`",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write(&dir.join(format!("bad{i}.json")), text);
        let msg = problem_text(coco::load(&path, Some(&dir.join("images")), STRICT));
        assert!(
            msg.contains(&format!("bad{i}.json")) && msg.contains(expected),
            "{msg}"
        );
        let skipped = coco::load(&path, Some(&dir.join("images")), SKIP).unwrap();
        assert!(!skipped.skipped.is_empty());
    }
    let broken = write(&dir.join("broken.json"), "{\"images\": [");
    let msg = format!("{:#}", coco::load(&broken, None, STRICT).unwrap_err());
    assert!(
        msg.contains("broken.json") && msg.contains("malformed JSON"),
        "{msg}"
    );
}

#[test]
fn image_folder_pairs_images_with_captions() {
    let dir = scratch("loaders", "folder");
    png(&dir.join("a.png"), 3, 3);
    write(&dir.join("a.txt"), "first caption\nsecond caption\n");
    png(&dir.join("sub/b.jpg"), 3, 3);
    write(&dir.join("sub/b.txt"), "bee\n");
    assert_eq!(detect(&dir).unwrap(), Format::ImageFolder);
    let loaded = folder::load(&dir, STRICT).unwrap();
    assert_eq!(loaded.records.len(), 2);
    assert_eq!(
        loaded.records[0].captions,
        vec!["first caption", "second caption"]
    );
    assert_eq!(loaded.records[1].id, "sub/b");
    // A link back up the tree lists nothing twice.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("..", dir.join("sub/up")).unwrap();
        let looped = folder::load(&dir, STRICT).unwrap();
        let ids: Vec<&str> = looped.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "sub/b"]);
        std::fs::remove_file(dir.join("sub/up")).unwrap();
    }

    png(&dir.join("lonely.png"), 3, 3);
    let msg = problem_text(folder::load(&dir, STRICT));
    assert!(
        msg.contains("lonely.png") && msg.contains("without a caption"),
        "{msg}"
    );
    write(&dir.join("orphan.txt"), "no picture\n");
    write(&dir.join("sub/c.txt"), "ok\n\nbad\n");
    png(&dir.join("sub/c.png"), 3, 3);
    let skipped = folder::load(&dir, SKIP).unwrap();
    let msgs: Vec<String> = skipped.skipped.iter().map(|p| p.to_string()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs
        .iter()
        .any(|m| m.contains("orphan.txt") && m.contains("without an image")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("c.txt: line 2") && m.contains("empty caption")));
    assert_eq!(skipped.records.len(), 2);
}

#[test]
fn style_corpora_load_and_name_bad_lines() {
    let dir = scratch("loaders", "styles");
    let path = write(
        &dir.join("s.jsonl"),
        "{\"text\": \"great spot !\", \"style\": \"positive\"}\n{\"text\": \"meh\", \"style\": \"negative\"}\n",
    );
    assert_eq!(detect(&path).unwrap(), Format::StyleJsonl);
    let loaded = style_corpus::load_jsonl(&path, None, STRICT).unwrap();
    assert_eq!(loaded.records.len(), 2);
    assert_eq!(loaded.records[1].style, "negative");

    let known = vec!["positive".to_string()];
    let msg = problem_text(style_corpus::load_jsonl(&path, Some(&known), STRICT));
    assert!(
        msg.contains("s.jsonl: line 2") && msg.contains("unknown style \"negative\""),
        "{msg}"
    );
    for (i, (bad, expected)) in [
        ("{\"text\": \"x\"}", "missing field \"style\""),
        ("{\"text\": \"\", \"style\": \"a\"}", "empty text"),
        ("not json", "malformed JSON"),
        (
            "{\"text\": \"x\", \"style\": \"has space\"}",
            "invalid style name",
        ),
    ]
    .iter()
    .enumerate()
    {
        let path = write(
            &dir.join(format!("bad{i}.jsonl")),
            &format!("{{\"text\": \"ok\", \"style\": \"a\"}}\n{bad}\n"),
        );
        let msg = problem_text(style_corpus::load_jsonl(&path, None, STRICT));
        assert!(msg.contains("line 2") && msg.contains(expected), "{msg}");
        let skipped = style_corpus::load_jsonl(&path, None, SKIP).unwrap();
        assert_eq!((skipped.records.len(), skipped.skipped.len()), (1, 1));
    }

    let folder = dir.join("by_style");
    write(&folder.join("noir.txt"), "The rain lied.\nSmoke.\n");
    write(&folder.join("gothic.txt"), "The crypt sighed.\n");
    assert_eq!(detect(&folder).unwrap(), Format::StyleFolder);
    let loaded = style_corpus::load_dir(&folder, None, STRICT).unwrap();
    assert_eq!(loaded.records.len(), 3);
    assert_eq!(loaded.records[0].style, "gothic");
    let msg = problem_text(style_corpus::load_dir(
        &folder,
        Some(&["noir".to_string()]),
        STRICT,
    ));
    assert!(
        msg.contains("gothic.txt") && msg.contains("unknown style"),
        "{msg}"
    );
}

#[test]
fn cli_synth_then_inspect() {
    let dir = scratch("loaders", "cli");
    let out = dir.join("world");
    let o = stylecap(&[
        "data",
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--n",
        "50",
        "--style-texts",
        "200",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("contact_sheet.png").is_file());
    let sheet = image::open(out.join("contact_sheet.png")).unwrap();
    assert!(sheet.width() >= 4 * 192);
    let o = stylecap(&["data", "inspect", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sets = report["caption_sets"].as_array().unwrap();
    assert_eq!(sets.len(), 4);
    assert_eq!(sets[0]["images"], 50);
    assert_eq!(sets[0]["images_decoded"], 50);
    assert_eq!(sets[0]["captions"], 250);
    assert_eq!(report["styles"]["texts"], 200 * 6);
    assert!(report["problems"].as_array().unwrap().is_empty());

    // A damaged manifest shows up as a problem with its line, and inspect still reports.
    let train = out.join("train.jsonl");
    let mut text = std::fs::read_to_string(&train).unwrap();
    text.push_str("{broken\n");
    std::fs::write(&train, text).unwrap();
    let o = stylecap(&["data", "inspect", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("problems: 1") && stdout.contains("train.jsonl: line 51"),
        "{stdout}"
    );
}

#[test]
fn a_truncated_jpeg_is_refused_by_every_loader_naming_the_file() {
    let dir = scratch("loaders", "truncated");
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 90])
    });
    img.save(dir.join("whole.jpg")).unwrap();
    let bytes = std::fs::read(dir.join("whole.jpg")).unwrap();
    // Cut inside the scan: the JPEG decoder would fill the rest with grey.
    let cut = dir.join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let manifest_path = write(
        &dir.join("m.jsonl"),
        "{\"image\": \"whole.jpg\", \"caption\": \"a\"}\n{\"image\": \"cut.jpg\", \"caption\": \"b\"}\n",
    );
    let names = |text: &str| text.contains("cut.jpg") && text.contains("truncated");

    // Loading (what train --data does first) stops at it, with its line.
    let msg = problem_text(manifest::load(&manifest_path, STRICT));
    assert!(names(&msg) && msg.contains("line 2"), "{msg}");
    // The image loader refuses it too.
    let err = format!("{:#}", stylecap::data::image::open_rgb(&cut).unwrap_err());
    assert!(names(&err), "{err}");
    assert!(stylecap::data::image::open_rgb(&dir.join("whole.jpg")).is_ok());

    let o = stylecap(&["data", "inspect", manifest_path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(names(&stdout) && stdout.contains("problems: 1"), "{stdout}");

    let run = dir.join("run");
    let o = stylecap(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--data",
        manifest_path.to_str().unwrap(),
        "--steps",
        "1",
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && names(&err) && !err.contains("panicked"),
        "{err}"
    );

    let model = common::fixture("vit_gpt2");
    let o = stylecap(&[
        "caption",
        "--model",
        model.to_str().unwrap(),
        "--image",
        cut.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(names(&err) && !err.contains("panicked"), "{err}");
}
