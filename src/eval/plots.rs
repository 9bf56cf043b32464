//! Line charts as inline SVG (plotters), for the HTML report.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    /// Drawn thin and light (raw values under a smoothed line).
    pub faint: bool,
}

/// Exponential moving average, for noisy per-step curves.
pub fn smooth(points: &[(f64, f64)], alpha: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut avg = None;
    for &(x, y) in points {
        let a = avg.map_or(y, |m: f64| m + alpha * (y - m));
        avg = Some(a);
        out.push((x, a));
    }
    out
}

pub const BLUE_: RGBColor = RGBColor(49, 99, 204);
pub const ORANGE: RGBColor = RGBColor(230, 126, 34);
pub const GREEN_: RGBColor = RGBColor(39, 160, 90);
pub const PURPLE: RGBColor = RGBColor(142, 68, 173);
pub const GREY: RGBColor = RGBColor(60, 60, 60);

/// One chart; empty series are left out, and a chart with none says so.
pub fn line_chart(
    title: &str,
    x_label: &str,
    series: &[Series],
    size: (u32, u32),
) -> Result<String> {
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let mut svg = String::new();
    {
        let e = |e: &dyn std::fmt::Display| anyhow!("drawing {title}: {e}");
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        if all.is_empty() {
            root.draw(&Text::new(
                format!("{title}: no data"),
                (10, 20),
                ("sans-serif", 14),
            ))
            .map_err(|x| e(&x))?;
        } else {
            let (x0, x1) = bounds(all.iter().map(|p| p.0));
            let (y0, y1) = bounds(all.iter().map(|p| p.1));
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(48)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|x| e(&x))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .x_labels(6)
                .y_labels(6)
                .light_line_style(RGBColor(238, 238, 238))
                .draw()
                .map_err(|x| e(&x))?;
            for s in series.iter().filter(|s| !s.points.is_empty()) {
                let style = if s.faint {
                    s.color.mix(0.25).stroke_width(1)
                } else {
                    s.color.stroke_width(2)
                };
                let drawn = chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), style))
                    .map_err(|x| e(&x))?;
                if !s.faint {
                    let c = s.color;
                    drawn.label(s.name).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                    });
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .draw()
                .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_its_lines_and_labels() {
        let pts: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64, (i as f64 / 5.0).sin()))
            .collect();
        let svg = line_chart(
            "reward",
            "step",
            &[Series {
                name: "mean reward",
                points: pts,
                color: BLUE_,
                faint: false,
            }],
            (400, 260),
        )
        .unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<polyline"), "a line");
        assert!(svg.contains("mean reward") && svg.contains("step"));
        let empty = line_chart("kl", "step", &[], (400, 260)).unwrap();
        assert!(empty.contains("no data"));
    }
}
