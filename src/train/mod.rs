//! Training: the supervised captioner (`sft`), its data, optimizer and schedule.

pub mod batches;
pub mod config;
pub mod data;
pub mod grads;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod sft;
pub mod shards;
pub mod step;
