//! KL between the policy and the frozen reference, estimated from the sampled tokens, and the
//! adaptive KL coefficient of Ziegler et al. (2019).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// log π(x) − log π_ref(x): unbiased, can be negative for a single sample.
    K1,
    /// (r − 1) − log r with r = π_ref(x)/π(x): unbiased, never negative, lower variance.
    K3,
}

/// The per-token estimate from the two log-probabilities of a sampled token.
pub fn kl_token(estimator: KlEstimator, logp: f32, logp_ref: f32) -> f32 {
    match estimator {
        KlEstimator::K1 => logp - logp_ref,
        KlEstimator::K3 => {
            let log_r = logp_ref - logp;
            log_r.exp() - 1.0 - log_r
        }
    }
}

/// β moves proportionally toward the KL target (error clipped to ±20%), with a horizon that
/// sets how fast.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdaptiveKl {
    pub beta: f64,
    pub target: f64,
    pub horizon: f64,
}

impl AdaptiveKl {
    /// Updates β after a batch of `n` samples whose mean KL was `kl`.
    pub fn update(&mut self, kl: f64, n: usize) {
        let error = ((kl - self.target) / self.target).clamp(-0.2, 0.2);
        self.beta *= 1.0 + error * n as f64 / self.horizon;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3_is_never_negative_and_both_estimators_are_unbiased() {
        // Policy p and reference q over three tokens; the true KL(p‖q) = Σ p log(p/q).
        let p = [0.5f64, 0.3, 0.2];
        let q = [0.2f64, 0.5, 0.3];
        let kl: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
        let mut e1 = 0.0;
        let mut e3 = 0.0;
        for (a, b) in p.iter().zip(&q) {
            let (lp, lq) = (a.ln() as f32, b.ln() as f32);
            let k3 = kl_token(KlEstimator::K3, lp, lq);
            assert!(k3 >= 0.0);
            e1 += a * kl_token(KlEstimator::K1, lp, lq) as f64;
            e3 += a * k3 as f64;
        }
        assert!((e1 - kl).abs() < 1e-6, "{e1} vs {kl}");
        assert!((e3 - kl).abs() < 1e-6, "{e3} vs {kl}");
        assert!(kl_token(KlEstimator::K1, -2.0, -1.0) < 0.0);
    }

    #[test]
    fn controller_moves_beta_toward_the_target() {
        let mut c = AdaptiveKl {
            beta: 0.1,
            target: 2.0,
            horizon: 100.0,
        };
        c.update(4.0, 10);
        assert!(c.beta > 0.1, "KL above target raises β");
        let high = c.beta;
        c.update(1.0, 10);
        assert!(c.beta < high, "KL below target lowers β");
        c.update(2.0, 10);
        assert!((c.beta - high * 0.98).abs() < 1e-9 || c.beta < high);
    }
}
