//! Learning-rate schedule: linear warmup, then cosine decay to a floor.

/// The learning-rate multiplier at `step` (0-based) of `total`.
pub fn warmup_cosine(step: usize, total: usize, warmup: usize, min_ratio: f64) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::warmup_cosine;

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        assert!((warmup_cosine(0, 100, 10, 0.1) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(9, 100, 10, 0.1) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(10, 100, 10, 0.1) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(55, 100, 10, 0.1) - 0.55).abs() < 1e-12);
        assert!((warmup_cosine(100, 100, 10, 0.1) - 0.1).abs() < 1e-12);
        let mut last = 2.0;
        for s in 10..100 {
            let v = warmup_cosine(s, 100, 10, 0.1);
            assert!(v <= last);
            last = v;
        }
    }
}
