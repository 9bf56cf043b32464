//! Classification metrics of a critic on labelled texts: accuracy, per-style precision and
//! recall, expected calibration error, confusion matrix.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct StyleMetrics {
    pub style: String,
    pub precision: f32,
    pub recall: f32,
    pub support: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CriticReport {
    pub texts: usize,
    pub accuracy: f32,
    /// Expected calibration error over 15 equal-width confidence bins.
    pub ece: f32,
    pub per_style: Vec<StyleMetrics>,
    pub styles: Vec<String>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

fn argmax(p: &[f32]) -> usize {
    (0..p.len()).fold(0, |best, i| if p[i] > p[best] { i } else { best })
}

/// Metrics of `probs` (one distribution per text) against `labels` (style indices).
pub fn evaluate(styles: &[String], probs: &[Vec<f32>], labels: &[usize]) -> CriticReport {
    let s = styles.len();
    let mut confusion = vec![vec![0usize; s]; s];
    const BINS: usize = 15;
    let mut bins = [(0f32, 0f32, 0usize); BINS];
    for (p, &y) in probs.iter().zip(labels) {
        let k = argmax(p);
        confusion[y][k] += 1;
        let conf = p[k];
        let b = ((conf * BINS as f32) as usize).min(BINS - 1);
        bins[b].0 += conf;
        bins[b].1 += (k == y) as u8 as f32;
        bins[b].2 += 1;
    }
    let n = labels.len().max(1) as f32;
    let correct: usize = (0..s).map(|i| confusion[i][i]).sum();
    let ece = bins
        .iter()
        .filter(|b| b.2 > 0)
        // (count / n) · |mean confidence − accuracy| of each bin.
        .map(|&(conf, acc, _)| (conf - acc).abs() / n)
        .sum::<f32>();
    let per_style = (0..s)
        .map(|i| {
            let predicted: usize = (0..s).map(|j| confusion[j][i]).sum();
            let support: usize = confusion[i].iter().sum();
            StyleMetrics {
                style: styles[i].clone(),
                precision: confusion[i][i] as f32 / predicted.max(1) as f32,
                recall: confusion[i][i] as f32 / support.max(1) as f32,
                support,
            }
        })
        .collect();
    CriticReport {
        texts: labels.len(),
        accuracy: correct as f32 / n,
        ece,
        per_style,
        styles: styles.to_vec(),
        confusion,
    }
}

/// The report as a table.
pub fn render(r: &CriticReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "accuracy {:.4} on {} texts, expected calibration error {:.4}",
        r.accuracy, r.texts, r.ece
    );
    let _ = writeln!(
        s,
        "  {:<16} {:>9} {:>7} {:>8}",
        "style", "precision", "recall", "texts"
    );
    for m in &r.per_style {
        let _ = writeln!(
            s,
            "  {:<16} {:>9.3} {:>7.3} {:>8}",
            m.style, m.precision, m.recall, m.support
        );
    }
    let _ = writeln!(s, "  confusion (rows: true style, columns: predicted)");
    let _ = write!(s, "  {:<16}", "");
    for st in &r.styles {
        let _ = write!(s, " {:>8.8}", st);
    }
    let _ = writeln!(s);
    for (st, row) in r.styles.iter().zip(&r.confusion) {
        let _ = write!(s, "  {:<16}", st);
        for c in row {
            let _ = write!(s, " {c:>8}");
        }
        let _ = writeln!(s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_confusion_precision_recall_and_calibration() {
        let styles = vec!["a".to_string(), "b".to_string()];
        let probs = vec![
            vec![0.9, 0.1],
            vec![0.8, 0.2],
            vec![0.3, 0.7],
            vec![0.6, 0.4],
        ];
        let labels = vec![0, 0, 1, 1];
        let r = evaluate(&styles, &probs, &labels);
        assert_eq!(r.confusion, vec![vec![2, 0], vec![1, 1]]);
        assert_eq!(r.accuracy, 0.75);
        assert!((r.per_style[0].precision - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(r.per_style[1].recall, 0.5);
        // Bins: 0.9 (right), 0.8 (right), 0.7 (right), 0.6 (wrong).
        let ece = ((0.9f32 - 1.0).abs() + (0.8f32 - 1.0).abs() + (0.7f32 - 1.0).abs() + 0.6) / 4.0;
        assert!((r.ece - ece).abs() < 1e-6, "{} vs {ece}", r.ece);
    }
}
