//! Style alignment by reinforcement learning: rollouts, rewards, KL to the frozen base,
//! advantages (REINFORCE, moving baseline, SCST, RLOO, GRPO, PPO) and the update loop.

pub mod advantage;
pub mod config;
pub mod kl;
pub mod loss;
pub mod reward;
pub mod trainer;
