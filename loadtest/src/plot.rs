//! `--plot FILE.svg`: a run on one page. Top, latency by percentile on the usual log scale of
//! 1/(1-q), so the tail gets as much room as the median; bottom, completions and errors per
//! second over the run (from the timeline), where stalls and overload show.
//!
//! SVG only: the backend writes `<text>` elements and leaves fonts to the viewer, so plotters
//! needs no font files or system libraries (no `ttf` feature).

use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;

use crate::stats::Stats;

/// The percentiles labelled on the latency axis, the curve drawn up to the last.
const LABELLED: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 0.9999];

/// Where quantile `q` sits on the percentile axis: log10(1/(1-q)).
fn position(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// The percentile axis: positions from 0 (the minimum) to that of 99.99%, ticks at `LABELLED`.
struct PercentileAxis;

impl Ranged for PercentileAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let range = self.range();
        let share = (value - range.start) / (range.end - range.start);
        limit.0 + (share * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only the labelled ticks, drawn as the bold grid lines; no light lines in between.
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        LABELLED.iter().map(|q| position(*q)).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..position(LABELLED[LABELLED.len() - 1])
    }
}

impl ValueFormatter<f64> for PercentileAxis {
    fn format_ext(&self, value: &f64) -> String {
        percent_label(1.0 - 10f64.powf(-value))
    }
}

/// `50%`, `99.9%`: as many decimals as the quantile has.
fn percent_label(q: f64) -> String {
    let text = format!("{:.4}", q * 100.0);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

type PlotError = Box<dyn std::error::Error>;

/// Writes the run's plot to `path` (SVG), titled `title`.
pub fn write(path: &Path, title: &str, stats: &Stats) -> Result<(), PlotError> {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(370);
    latency_panel(&top, stats)?;
    throughput_panel(&bottom, stats)?;
    root.present()?;
    Ok(())
}

fn latency_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    stats: &Stats,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let histogram = stats.histogram();
    let end = PercentileAxis.range().end;
    let steps = 400;
    let curve: Vec<(f64, f64)> = (0..=steps)
        .map(|i| {
            let x = end * f64::from(i) / f64::from(steps);
            let q = 1.0 - 10f64.powf(-x);
            (x, histogram.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    let top = curve.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001) * 1.1;
    // Enough decimals to tell the ticks apart, no more.
    let decimals = match top {
        t if t >= 20.0 => 0,
        t if t >= 2.0 => 1,
        t if t >= 0.2 => 2,
        _ => 3,
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Latency by percentile ({} answers)", histogram.len()),
            ("sans-serif", 16),
        )
        .margin(12)
        .margin_right(36)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(PercentileAxis, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .y_label_formatter(&|ms| format!("{ms:.decimals$}"))
        .draw()?;
    chart.draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))?;
    Ok(())
}

fn throughput_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    stats: &Stats,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let timeline = stats.timeline();
    let seconds = timeline.len().max(1) as u64;
    let completions = steps(timeline.iter().map(|s| s.completions));
    let errors = steps(timeline.iter().map(|s| s.errors + s.dropped));
    // Room above the highest line for the legend.
    let top = completions
        .iter()
        .chain(&errors)
        .map(|p| p.1)
        .max()
        .unwrap_or(0)
        .max(1)
        * 13
        / 10
        + 1;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput per second", ("sans-serif", 16))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0..seconds, 0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("per second")
        .draw()?;
    chart
        .draw_series(LineSeries::new(completions, BLUE.stroke_width(2)))?
        .label("completed")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(errors, RED.stroke_width(2)))?
        .label("failed or dropped")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A count per second as a step line: flat across each second.
fn steps(counts: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    (0u64..)
        .zip(counts)
        .flat_map(|(i, n)| [(i, n), (i + 1, n)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn percentiles_sit_on_the_log_axis_with_their_labels() {
        let labels: Vec<String> = LABELLED.iter().map(|q| percent_label(*q)).collect();
        assert_eq!(labels, ["50%", "90%", "99%", "99.9%", "99.99%"]);
        assert!((position(0.99) - 2.0).abs() < 1e-9);
        assert!((position(0.9999) - 4.0).abs() < 1e-9);
        let ticks: Vec<String> = LABELLED
            .iter()
            .map(|q| PercentileAxis.format_ext(&position(*q)))
            .collect();
        assert_eq!(ticks, labels, "each tick is labelled with its percentile");
    }

    #[test]
    fn a_plot_of_known_stats_is_an_svg_with_its_title_and_labels() {
        let start = Instant::now();
        let mut stats = Stats::new(start);
        for i in 0..3_000u64 {
            let at = start + Duration::from_millis(i);
            let latency = Duration::from_micros(500 + (i % 100) * 20);
            stats.record(if i % 500 == 0 { 503 } else { 200 }, latency, at);
        }
        stats.record_error(start + Duration::from_millis(2_500));
        let path = std::env::temp_dir().join(format!("loadtest-plot-{}.svg", std::process::id()));
        write(&path, "score, open loop 1000/s", &stats).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            "score, open loop 1000/s",
            "Latency by percentile (3000 answers)",
            "Throughput per second",
            "99.9%",
            "99.99%",
            "latency (ms)",
            "completed",
        ] {
            assert!(svg.contains(text), "{text} is in the plot");
        }
        assert!(svg.contains("<polyline"), "the curves are drawn");
    }
}
