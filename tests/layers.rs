//! The layering of `src/`, checked from the source: the folders are the pipeline, and every
//! `crate::` path in a module points to a module on a lower layer (so there is no import
//! cycle, and `model/` and `data/` use nothing of the stages above them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, lowest first. Modules on one layer may not use each other.
const LAYERS: &[&[&str]] = &[
    &["rng", "tensor", "util"],
    &["run", "alloc"],
    &["world"],
    &["data"],
    &["model"],
    &["optim"],
    &["sft", "critic"],
    &["align"],
    &["eval"],
    &["bench", "caption", "demo", "serve"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named by `crate::NAME` in code (not in comments).
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((i + 1, name));
            }
            rest = after;
        }
    }
    found
}

/// Every top-level module of the library, from `src/lib.rs`.
fn top_level_modules(src: &Path) -> Vec<String> {
    std::fs::read_to_string(src.join("lib.rs"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect()
}

#[test]
fn every_import_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    assert!(modules.len() >= 10, "found only {modules:?} in src/lib.rs");
    for m in &modules {
        assert!(
            layer_of(m).is_some(),
            "module `{m}` has no layer: place it in LAYERS (tests/layers.rs)"
        );
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let Some(from) = layer_of(&module) else {
            continue; // lib.rs, bin/
        };
        let source = std::fs::read_to_string(file).unwrap();
        for (line, target) in crate_paths(&source) {
            if target == module {
                continue;
            }
            let Some(to) = layer_of(&target) else {
                wrong.push(format!(
                    "{}:{line}: unknown module crate::{target}",
                    rel.display()
                ));
                continue;
            };
            edges
                .entry((module.clone(), target.clone()))
                .or_insert_with(|| format!("{}:{line}", rel.display()));
            if to >= from {
                wrong.push(format!(
                    "{}:{line}: `{module}` uses crate::{target}, which is not below it",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
    // The check must see the pipeline's main arrows, or it is reading nothing.
    for (a, b) in [
        ("cli", "demo"),
        ("align", "model"),
        ("sft", "data"),
        ("data", "world"),
    ] {
        assert!(
            edges.contains_key(&(a.to_string(), b.to_string())),
            "no import of crate::{b} found in {a}: the scan is broken"
        );
    }
}

#[test]
fn the_scan_sees_paths_in_code_only() {
    let found = crate_paths(
        "use crate::model::Captioner;\n// crate::cli in a comment\nlet x = crate::util::f(); // crate::serve\n",
    );
    assert_eq!(
        found,
        vec![(1, "model".to_string()), (3, "util".to_string())]
    );
}
