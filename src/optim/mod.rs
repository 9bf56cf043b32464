//! Optimisation: the trainers' AdamW (with state saved in checkpoint layout), the learning-rate
//! schedule, and gradients read by parameter name.

pub mod adamw;
pub mod grads;
pub mod schedule;

pub use adamw::{Accumulated, AdamW, AdamWConfig};
