//! Optimisation: the trainers' AdamW (with state saved in checkpoint layout), the learning-rate
//! schedule, f16's loss scaling, and gradients read by parameter name.

pub mod adamw;
pub mod grads;
pub mod loss_scale;
pub mod schedule;

pub use adamw::{Accumulated, AdamW, AdamWConfig};
pub use loss_scale::LossScale;
