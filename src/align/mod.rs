//! Style alignment by reinforcement learning: the loop (`trainer`), generating and scoring
//! (`rollout`, `reward`, `kl`), and the update (`update`, `advantage`, `loss`) for REINFORCE,
//! a moving baseline, SCST, RLOO, GRPO and PPO.

pub mod advantage;
pub mod config;
pub mod kl;
pub mod loss;
pub mod reward;
pub mod rollout;
pub mod trainer;
pub mod update;
