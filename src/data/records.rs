//! What every loader produces: caption records and style texts, each remembering where it came
//! from, and the problems found on the way.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::world::Scene;

/// Where a record or a problem is: a file and, when the file has them, a line (JSONL, text) or
/// a field path (`annotations[12]` in COCO JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    pub file: PathBuf,
    pub location: Option<String>,
}

impl Source {
    pub fn file(file: &Path) -> Self {
        Source {
            file: file.to_path_buf(),
            location: None,
        }
    }

    pub fn line(file: &Path, line: usize) -> Self {
        Source {
            file: file.to_path_buf(),
            location: Some(format!("line {line}")),
        }
    }

    pub fn at(file: &Path, location: impl Into<String>) -> Self {
        Source {
            file: file.to_path_buf(),
            location: Some(location.into()),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{}: {l}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// A bad record: where it is and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{at}: {message}")]
pub struct Problem {
    pub at: Source,
    pub message: String,
}

impl Problem {
    pub fn new(at: Source, message: impl Into<String>) -> Self {
        Problem {
            at,
            message: message.into(),
        }
    }
}

/// An image with its factual captions.
#[derive(Clone, Debug, Serialize)]
pub struct CaptionRecord {
    pub id: String,
    pub image: PathBuf,
    pub captions: Vec<String>,
    /// The scene graph, for pictures of the built-in world.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene: Option<Scene>,
    #[serde(skip)]
    pub source: Source,
}

/// A text labelled with a style (unpaired with any image).
#[derive(Clone, Debug, Serialize)]
pub struct StyleText {
    pub text: String,
    pub style: String,
    #[serde(skip)]
    pub source: Source,
}

/// How loaders treat bad records.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Skip bad records (and list them) instead of stopping at the first.
    pub skip_bad: bool,
}

/// Records that loaded, and the bad ones skipped (only with `skip_bad`).
#[derive(Debug)]
pub struct Loaded<T> {
    pub records: Vec<T>,
    pub skipped: Vec<Problem>,
}

impl<T> Loaded<T> {
    pub fn new() -> Self {
        Loaded {
            records: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Records a bad record: an error without `skip_bad`, a listed skip with it.
    pub fn bad(&mut self, options: LoadOptions, problem: Problem) -> Result<(), Problem> {
        if options.skip_bad {
            self.skipped.push(problem);
            Ok(())
        } else {
            Err(problem)
        }
    }
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Self::new()
    }
}
