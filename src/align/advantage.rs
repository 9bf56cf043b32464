//! Advantages of the policy-gradient algorithms, as plain functions over the rewards of a
//! rollout: `rewards[g * k + j]` is sample j of group g (one image and style, K samples).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Algo {
    /// The seed system's REINFORCE: advantage = reward, no baseline.
    Reinforce,
    /// REINFORCE with a moving-average baseline.
    ReinforceBaseline,
    /// Self-critical sequence training: the greedy caption's reward is the baseline.
    Scst,
    /// REINFORCE leave-one-out: the mean reward of the other K−1 samples is the baseline.
    Rloo,
    /// Group-normalised advantages; the KL to the reference is a loss term, not a reward term.
    Grpo,
    /// Clipped importance ratios, several epochs over each rollout; RLOO advantages.
    Ppo,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Reinforce => "reinforce",
            Algo::ReinforceBaseline => "reinforce-baseline",
            Algo::Scst => "scst",
            Algo::Rloo => "rloo",
            Algo::Grpo => "grpo",
            Algo::Ppo => "ppo",
        }
    }

    /// Whether the KL penalty is subtracted from the reward (else it is a loss term).
    pub fn kl_in_reward(self) -> bool {
        self != Algo::Grpo
    }
}

/// RLOO: each sample's reward minus the mean of the other samples of its group.
pub fn leave_one_out(rewards: &[f32], k: usize) -> Vec<f32> {
    assert!(
        k >= 2 && rewards.len().is_multiple_of(k),
        "RLOO needs groups of at least 2 samples"
    );
    rewards
        .chunks(k)
        .flat_map(|g| {
            let sum: f32 = g.iter().sum();
            g.iter().map(move |&r| r - (sum - r) / (k - 1) as f32)
        })
        .collect()
}

/// GRPO: rewards standardised within each group.
pub fn group_normalised(rewards: &[f32], k: usize) -> Vec<f32> {
    rewards
        .chunks(k)
        .flat_map(|g| {
            let mean = g.iter().sum::<f32>() / g.len() as f32;
            let var = g.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / g.len() as f32;
            let std = var.sqrt();
            g.iter().map(move |&r| (r - mean) / (std + 1e-4))
        })
        .collect()
}

/// SCST: each sample's reward minus the greedy caption's reward of its group.
pub fn self_critical(rewards: &[f32], greedy: &[f32], k: usize) -> Vec<f32> {
    rewards
        .chunks(k)
        .zip(greedy)
        .flat_map(|(g, &b)| g.iter().map(move |&r| r - b))
        .collect()
}

/// A moving-average baseline (exponential, updated after use).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MovingBaseline {
    pub value: Option<f32>,
}

impl MovingBaseline {
    pub fn advantages(&mut self, rewards: &[f32], decay: f32) -> Vec<f32> {
        let mean = rewards.iter().sum::<f32>() / rewards.len().max(1) as f32;
        let b = self.value.unwrap_or(mean);
        self.value = Some(decay * b + (1.0 - decay) * mean);
        rewards.iter().map(|r| r - b).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rloo_baseline_is_the_leave_one_out_mean() {
        let r = [1.0, 2.0, 6.0, 0.0, 0.0, 3.0];
        let a = leave_one_out(&r, 3);
        // Sample 0 of group 0: 1 − (2 + 6)/2.
        assert_eq!(a[0], 1.0 - 4.0);
        assert_eq!(a[2], 6.0 - 1.5);
        assert_eq!(a[5], 3.0 - 0.0);
        // Advantages of a group sum to zero times k/(k−1): RLOO is unbiased and centred.
        assert!((a[..3].iter().sum::<f32>()).abs() < 1e-6);
    }

    #[test]
    fn grpo_standardises_groups_and_scst_subtracts_greedy() {
        let a = group_normalised(&[1.0, 3.0, 5.0, 5.0], 2);
        assert!((a[0] + 1.0).abs() < 1e-3 && (a[1] - 1.0).abs() < 1e-3);
        assert_eq!(&a[2..], &[0.0, 0.0]);
        assert_eq!(
            self_critical(&[1.0, 2.0, 3.0, 4.0], &[1.5, 0.0], 2),
            vec![-0.5, 0.5, 3.0, 4.0]
        );
        let mut b = MovingBaseline::default();
        assert_eq!(b.advantages(&[1.0, 3.0], 0.9), vec![-1.0, 1.0]);
        assert_eq!(b.value, Some(2.0));
        let a = b.advantages(&[4.0, 4.0], 0.5);
        assert_eq!(a, vec![2.0, 2.0]);
        assert_eq!(b.value, Some(3.0));
    }
}
