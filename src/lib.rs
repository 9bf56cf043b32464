//! stylecap: train and serve image captioners that write in a requested style.
//!
//! The modules follow the pipeline: `data` → `model` → `train`.

pub mod align;
pub mod cli;
pub mod critic;
pub mod data;
pub mod eval;
pub mod model;
pub mod serve;
pub mod train;
pub mod util;
