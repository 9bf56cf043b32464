//! Training: the teacher-forced captioning loss and one optimisation step.

pub mod grads;
pub mod loss;
pub mod step;
