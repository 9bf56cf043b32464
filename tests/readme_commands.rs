//! Every `stylecap` command shown in the README and in `docs/*.md` runs as written: each
//! subcommand it names exists, and each `--flag` it uses appears in that subcommand's `--help`
//! (or the top-level one, for the global options).
//!
//! Commands are taken from fenced code blocks marked `sh`, `bash`, `console`, `shell` or
//! nothing, with `\` continuations joined: lines whose first word is `stylecap`,
//! `./target/release/stylecap` or `target/release/stylecap`, and `cargo run ... -- ARGS` (not
//! `--example`). Comments are skipped, a leading `$ ` is dropped, and the command ends at the
//! first unquoted `|`, `;`, `&` or `>`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Global options that take a value and may come before the subcommand.
const GLOBAL_WITH_VALUE: [&str; 2] = ["--threads", "--device"];
const SHELL_LANGS: [&str; 5] = ["", "sh", "bash", "console", "shell"];

struct Found {
    file: String,
    line: usize,
    text: String,
    args: Vec<String>,
}

fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// (first line number, joined text) of every line in the shell code blocks of `text`.
fn shell_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let (mut inside, mut shell) = (false, false);
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            if inside {
                out.extend(pending.take());
            } else {
                let lang = info.trim().to_ascii_lowercase();
                shell = SHELL_LANGS.contains(&lang.as_str());
            }
            inside = !inside;
            continue;
        }
        if !inside || !shell {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        let line = line.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            joined.push_str(head);
            joined.push(' ');
            pending = Some((start, joined));
        } else {
            joined.push_str(line);
            out.push((start, joined));
        }
    }
    out.extend(pending);
    out
}

/// Shell-like words, quotes removed, up to the first unquoted `|`, `;`, `&` or `>`.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut started = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                started = true;
            }
            '|' | ';' | '&' | '>' => {
                // `2>file`: the descriptor number is not an argument.
                if c == '>' && !cur.is_empty() && cur.chars().all(|d| d.is_ascii_digit()) {
                    cur.clear();
                    started = false;
                }
                break;
            }
            c if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

fn is_env_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// The arguments a line gives to stylecap, or None when it does not run stylecap.
fn stylecap_args(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("$ ").unwrap_or(line);
    let w = words(line);
    let w: Vec<String> = w.into_iter().skip_while(|x| is_env_assignment(x)).collect();
    let first = w.first()?;
    if [
        "stylecap",
        "./target/release/stylecap",
        "target/release/stylecap",
    ]
    .contains(&first.as_str())
    {
        return Some(w[1..].to_vec());
    }
    if first == "cargo" && w.get(1).map(String::as_str) == Some("run") {
        let dashes = w.iter().position(|x| x == "--")?;
        let cargo = &w[2..dashes];
        if cargo
            .iter()
            .any(|x| x == "--example" || x.starts_with("--example="))
        {
            return None;
        }
        if let Some(i) = cargo.iter().position(|x| x == "--bin") {
            if cargo.get(i + 1).map(String::as_str) != Some("stylecap") {
                return None;
            }
        }
        return Some(w[dashes + 1..].to_vec());
    }
    None
}

/// `--help` of a subcommand path, cached: (exit code, stdout + stderr).
struct Helps {
    binary: PathBuf,
    cache: HashMap<Vec<String>, (i32, String)>,
}

impl Helps {
    fn get(&mut self, path: &[String]) -> (i32, String) {
        if let Some(h) = self.cache.get(path) {
            return h.clone();
        }
        let out = Command::new(&self.binary)
            .args(path)
            .arg("--help")
            .output()
            .expect("run the stylecap binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let h = (out.status.code().unwrap_or(-1), text);
        self.cache.insert(path.to_vec(), h.clone());
        h
    }
}

/// The names listed under "Commands:" in a help text.
fn subcommands(help: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut inside = false;
    for line in help.lines() {
        if line.trim() == "Commands:" {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if line.trim().is_empty() || !line.starts_with(' ') {
            break;
        }
        // Entries are indented by two spaces; wrapped descriptions by more.
        if let Some(rest) = line.strip_prefix("  ") {
            if !rest.starts_with(' ') {
                if let Some(name) = rest.split_whitespace().next() {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

/// Whether `help` mentions `flag` as a whole word (`--top` does not match `--top-p`).
fn mentions_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        let next = help[i + flag.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// The subcommand path of `args` and the problems found with it.
fn check(args: &[String], helps: &mut Helps) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let (_, top) = helps.get(&[]);
    let mut path: Vec<String> = Vec::new();
    let mut current = top.clone();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if GLOBAL_WITH_VALUE.contains(&a.as_str()) {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            break;
        }
        let subs = subcommands(&current);
        if subs.is_empty() {
            break;
        }
        if !subs.contains(a) {
            problems.push(format!(
                "`{a}` is not a subcommand of `stylecap{}` (it has: {})",
                path.iter().map(|p| format!(" {p}")).collect::<String>(),
                subs.into_iter().collect::<Vec<_>>().join(", ")
            ));
            return (path, problems);
        }
        path.push(a.clone());
        let (code, help) = helps.get(&path);
        if code != 0 {
            problems.push(format!(
                "`stylecap {} --help` exits with {code}",
                path.join(" ")
            ));
            return (path, problems);
        }
        current = help;
        i += 1;
    }
    for a in args {
        if !a.starts_with("--") || a == "--" {
            continue;
        }
        let flag = a.split('=').next().unwrap();
        if !mentions_flag(&current, flag) && !mentions_flag(&top, flag) {
            problems.push(format!(
                "flag `{flag}` is not in `stylecap {}--help`",
                path.iter().map(|p| format!("{p} ")).collect::<String>()
            ));
        }
    }
    (path, problems)
}

#[test]
fn every_documented_command_names_existing_subcommands_and_flags() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root).unwrap().display().to_string();
        for (line, joined) in shell_lines(&text) {
            if let Some(args) = stylecap_args(&joined) {
                found.push(Found {
                    file: name.clone(),
                    line,
                    text: joined.split_whitespace().collect::<Vec<_>>().join(" "),
                    args,
                });
            }
        }
    }
    let mut helps = Helps {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_stylecap")),
        cache: HashMap::new(),
    };
    let (code, top) = helps.get(&[]);
    assert_eq!(code, 0, "stylecap --help failed:\n{top}");
    assert!(
        subcommands(&top).len() >= 5,
        "no subcommands read from `stylecap --help`:\n{top}"
    );
    let mut failures = Vec::new();
    let mut with_subcommand = 0;
    for f in &found {
        let (path, problems) = check(&f.args, &mut helps);
        if !path.is_empty() {
            with_subcommand += 1;
        }
        for p in problems {
            failures.push(format!("{}:{}: {p}\n    {}", f.file, f.line, f.text));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) in documented commands:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        found.len() >= 10 && with_subcommand >= 10,
        "only {} stylecap commands ({} with a subcommand) found in README.md and docs/*.md; \
         is the code-block parser broken?",
        found.len(),
        with_subcommand
    );
}

#[test]
fn the_parser_reads_the_forms_the_docs_use() {
    let lines = shell_lines(
        "text\n```sh\n# comment\nstylecap train --out runs/base \\\n    --steps 10\n```\n\
         ```toml\nstylecap = 1\n```\n```\n$ cargo run --release -- demo --quick | tail\n```\n",
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1].0, 4);
    let args: Vec<Option<Vec<String>>> = lines.iter().map(|(_, l)| stylecap_args(l)).collect();
    let s = |v: &[&str]| Some(v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
    assert_eq!(args[0], None);
    assert_eq!(
        args[1],
        s(&["train", "--out", "runs/base", "--steps", "10"])
    );
    assert_eq!(args[2], s(&["demo", "--quick"]));
    assert_eq!(
        stylecap_args("STYLECAP_API_KEY=k stylecap critic score --critic c \"a | b\" 2>/dev/null"),
        s(&["critic", "score", "--critic", "c", "a | b"])
    );
    assert_eq!(
        stylecap_args("cargo run --release --example content_errors -- m 200"),
        None
    );
    assert_eq!(stylecap_args("cargo test --release"), None);
    assert_eq!(
        stylecap_args("target/release/stylecap --threads 2 bench --runs 3 && echo done"),
        s(&["--threads", "2", "bench", "--runs", "3"])
    );
    assert!(mentions_flag("  --top-p <TOP_P>", "--top-p"));
    assert!(!mentions_flag("  --top-p <TOP_P>", "--top"));
    let help = "Usage: x\n\nCommands:\n  train  Train\n         more text\n  help   Print\n\nOptions:\n  -h\n";
    assert_eq!(
        subcommands(help).into_iter().collect::<Vec<_>>(),
        vec!["help".to_string(), "train".to_string()]
    );
}
