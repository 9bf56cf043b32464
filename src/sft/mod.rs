//! The supervised base captioner (`stylecap train`): its configuration, the rows of each step,
//! the sharded forward/backward step, the frozen encoder's features, and the training loop.

pub mod batches;
pub mod config;
pub mod features;
pub mod recompute;
pub mod shards;
pub mod step;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::Trainer;
