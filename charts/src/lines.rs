//! Line charts: several labelled series of (x, y) points — a training loss per step, say — each
//! drawn as a line through its points with markers on them, in its own colour and marker shape;
//! a legend right of the plot, the y axis' name above it and the x axis' name below.
//!
//! Every series gets its marker on each point while it has at most [`MARKERS`] points; a longer
//! one gets one on every k-th point and on its last, so markers never hide the line.
//!
//! Invariant: a chart is drawn only from finite points whose ranges an `f64` can span, each
//! series with as many x values as y values and at least one of them; anything else is refused
//! with an [`Error`] naming the series and what was wrong, before any file is touched — drawing
//! never sees a NaN and never panics.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use crate::error::{Error, Result};
use crate::file::{write, Sheet};
use crate::page::{draw_axes, padded, style, DrawResult, Frame, LEFT, TICKS};
use crate::palette::{rank_colour, INK, MUTED, PAPER};

/// The most markers drawn on one series; past this, every k-th point gets one.
pub const MARKERS: usize = 60;

/// Margin left of the title.
const MARGIN: u32 = 16;
/// Height of the title band.
const TITLE: u32 = 40;
/// Height of the y axis' name above the plot.
const Y_NAME: u32 = 22;
/// Size of the plotting area.
const PLOT_W: u32 = 820;
const PLOT_H: u32 = 460;
/// Height of the x axis' name below the tick labels.
const AXIS_DESC: u32 = 30;
/// Height of one legend line.
const LINE: i32 = 24;
/// Marker "radius" in pixels.
const MARKER: i32 = 4;
/// Widest legend label, in pixels; the legend column is as wide as its longest label.
const MAX_LABEL_W: u32 = 420;

/// One labelled series: `y[i]` at `x[i]`, joined in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// What the legend calls it.
    pub label: String,
    /// The x values.
    pub x: Vec<f64>,
    /// The y values, one per x value.
    pub y: Vec<f64>,
}

impl Series {
    /// A series of `y` at x = 1, 2, 3, … (steps counted from 1).
    pub fn per_step(label: impl Into<String>, y: &[f64]) -> Series {
        Series { label: label.into(), x: (1..=y.len()).map(|k| k as f64).collect(), y: y.to_vec() }
    }
}

/// What a line chart shows: a title, the axes' names and the series, drawn in the order given
/// (the first underneath) and listed in the legend in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// The line above the plot.
    pub title: String,
    /// The x axis' name, under the plot.
    pub x_name: String,
    /// The y axis' name, above the plot.
    pub y_name: String,
    /// The series.
    pub series: Vec<Series>,
}

/// Draws `chart` to `path` (`.svg` or `.png`, by its extension), atomically.
///
/// # Errors
///
/// [`Error::Empty`] when `chart` has no series, [`Error::Series`] when a series has no points,
/// x and y values of different counts, a value that is NaN or infinite, or values too far apart
/// for their range to be an `f64`; then, as [`write()`]: `Format`, `Io` or `Draw`.
pub fn render_lines(chart: &LineChart, path: &Path) -> Result<()> {
    check(chart, path)?;
    // Layout measures text; a missing font is reported by `write`.
    let _ = crate::font::ensure();
    write(&Lines::new(chart), path)
}

/// The first thing wrong with `chart`'s series, as an error about `path`.
fn check(chart: &LineChart, path: &Path) -> Result<()> {
    if chart.series.is_empty() {
        return Err(Error::Empty { path: path.to_path_buf(), what: "series" });
    }
    let bad = |s: &Series, reason: String| Error::Series { path: path.to_path_buf(), label: s.label.clone(), reason };
    for s in &chart.series {
        if s.x.len() != s.y.len() {
            return Err(bad(s, format!("{} x values but {} y values; give one y per x", s.x.len(), s.y.len())));
        }
        if s.x.is_empty() {
            return Err(bad(s, "no points; give at least one".into()));
        }
        for (axis, values) in [("x", &s.x), ("y", &s.y)] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(bad(s, format!("{axis}[{i}] is {}; give finite values only", values[i])));
            }
        }
    }
    for (axis, values) in [("x", all(chart, |s| &s.x)), ("y", all(chart, |s| &s.y))] {
        let (lo, hi) = bounds(&values);
        if !(hi - lo).is_finite() {
            let s = &chart.series[0];
            return Err(bad(s, format!("{axis} values span {lo} to {hi}, more than an f64 holds; rescale them")));
        }
    }
    Ok(())
}

/// Every value of one axis, over all series.
fn all(chart: &LineChart, axis: impl Fn(&Series) -> &Vec<f64>) -> Vec<f64> {
    chart.series.iter().flat_map(|s| axis(s).iter().copied()).collect()
}

/// Smallest and largest of `values`.
fn bounds(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// An axis range around `values`: padded, and not below 0 when no value is.
fn axis_range(values: &[f64], pad: f64) -> (f64, f64) {
    let (lo, hi) = bounds(values);
    let (start, end) = padded(lo, hi, pad, pad);
    let start = if lo >= 0.0 && start < 0.0 { 0.0 } else { start };
    if end > start {
        (start, end)
    } else {
        (start, start + 1.0)
    }
}

/// Tick labels for an axis spanning `span` with at most `ticks` ticks: one decimal more than the
/// tick spacing's first digit needs (so spacings of 2.5·10^k still read), trailing zeros dropped.
fn tick_label(span: f64, ticks: usize) -> impl Fn(&f64) -> String {
    let step = span / ticks.max(1) as f64;
    let decimals = if step > 0.0 { (1.0 - step.log10().floor()).clamp(0.0, 15.0) as usize } else { 1 };
    move |v: &f64| {
        let s = format!("{v:.decimals$}");
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
        // No "-0".
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    }
}

/// The marker shapes, one per series in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

const SHAPES: [Shape; 4] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond];

/// Draws a `shape` marker of `colour` at `(x, y)`, on a white halo so crossing lines stay apart.
fn draw_marker<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    shape: Shape,
    (x, y): (i32, i32),
    colour: RGBColor,
) -> DrawResult<DB> {
    let outline = |r: i32| -> Vec<(i32, i32)> {
        match shape {
            Shape::Circle | Shape::Square => vec![(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)],
            Shape::Triangle => vec![(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)],
            Shape::Diamond => vec![(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)],
        }
    };
    if shape == Shape::Circle {
        root.draw(&Circle::new((x, y), MARKER + 1, PAPER.filled()))?;
        return root.draw(&Circle::new((x, y), MARKER, colour.filled()));
    }
    root.draw(&Polygon::new(outline(MARKER + 1), PAPER.filled()))?;
    root.draw(&Polygon::new(outline(MARKER), colour.filled()))
}

/// The indices of a series of `n` points that get a marker.
fn marked(n: usize) -> impl Iterator<Item = usize> {
    let every = n.div_ceil(MARKERS).max(1);
    (0..n).filter(move |&i| i % every == 0 || i + 1 == n)
}

/// The laid-out chart.
struct Lines<'a> {
    chart: &'a LineChart,
    x: (f64, f64),
    y: (f64, f64),
    frame: Frame,
    legend_w: u32,
}

fn legend_style() -> TextStyle<'static> {
    style(14.0, INK, false, HPos::Left, VPos::Center)
}

impl<'a> Lines<'a> {
    fn new(chart: &'a LineChart) -> Lines<'a> {
        let x = axis_range(&all(chart, |s| &s.x), 0.02);
        let y = axis_range(&all(chart, |s| &s.y), 0.06);
        let legend_h = LINE as u32 * (chart.series.len() as u32 + 1);
        let frame = Frame { left: LEFT as i32, top: (10 + TITLE + Y_NAME) as i32, w: PLOT_W, h: PLOT_H.max(legend_h) };
        let widest = chart
            .series
            .iter()
            .map(|s| legend_style().font.box_size(&s.label).map_or(8 * s.label.chars().count() as u32, |b| b.0))
            .max()
            .unwrap_or(0);
        Lines { chart, x, y, frame, legend_w: widest.min(MAX_LABEL_W) + 80 }
    }

    /// The legend right of the plot: each series' line, marker and label.
    fn draw_legend<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let x = self.frame.right() + 24;
        let n = self.chart.series.len();
        for (i, s) in self.chart.series.iter().enumerate() {
            let y = self.frame.top + LINE / 2 + LINE * i as i32;
            let colour = rank_colour(i, n);
            root.draw(&PathElement::new([(x, y), (x + 32, y)], colour.stroke_width(2)))?;
            draw_marker(root, SHAPES[i % SHAPES.len()], (x + 16, y), colour)?;
            root.draw(&Text::new(s.label.clone(), (x + 42, y), legend_style()))?;
        }
        Ok(())
    }
}

impl Sheet for Lines<'_> {
    fn size(&self) -> (u32, u32) {
        (self.frame.right() as u32 + self.legend_w, self.frame.bottom() as u32 + TICKS + AXIS_DESC + 10)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&PAPER)?;
        let f = self.frame;
        let title = style(20.0, INK, true, HPos::Left, VPos::Center);
        root.draw(&Text::new(self.chart.title.clone(), (MARGIN as i32, 10 + TITLE as i32 / 2), title))?;
        let name = |h| style(14.0, MUTED, false, h, VPos::Center);
        root.draw(&Text::new(
            self.chart.y_name.clone(),
            (MARGIN as i32, f.top - Y_NAME as i32 / 2 - 2),
            name(HPos::Left),
        ))?;
        let x_name_at = (f.left + f.w as i32 / 2, f.bottom() + TICKS as i32 + AXIS_DESC as i32 / 2);
        root.draw(&Text::new(self.chart.x_name.clone(), x_name_at, name(HPos::Center)))?;

        let area = f.area(root);
        let mut chart = f.chart(&area, self.x.0..self.x.1, self.y.0..self.y.1)?;
        let x_label = tick_label(self.x.1 - self.x.0, 10);
        let y_label = tick_label(self.y.1 - self.y.0, 8);
        draw_axes(&mut chart, 10, &x_label, Some((8, &y_label)))?;
        let n = self.chart.series.len();
        for (i, s) in self.chart.series.iter().enumerate() {
            let colour = rank_colour(i, n);
            let points = s.x.iter().copied().zip(s.y.iter().copied());
            chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?;
        }
        for (i, s) in self.chart.series.iter().enumerate() {
            let colour = rank_colour(i, n);
            for k in marked(s.x.len()) {
                draw_marker(root, SHAPES[i % SHAPES.len()], chart.backend_coord(&(s.x[k], s.y[k])), colour)?;
            }
        }
        self.draw_legend(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pipesched-lines-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn chart(series: Vec<Series>) -> LineChart {
        LineChart { title: "loss".into(), x_name: "step".into(), y_name: "mean loss".into(), series }
    }

    fn falling(label: &str, rate: f64) -> Series {
        let y: Vec<f64> = (0..20).map(|k| 2.0 * (-rate * k as f64).exp()).collect();
        Series::per_step(label, &y)
    }

    #[test]
    fn curves_render_as_svg_and_png() {
        let dir = scratch("render");
        let c = chart(vec![falling("synchronous", 0.2), falling("stale", 0.15), falling("two versions", 0.1)]);
        for ext in ["svg", "png"] {
            let path = dir.join(format!("loss.{ext}"));
            render_lines(&c, &path).unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() > 0, "{ext}: empty");
        }
        let svg = std::fs::read_to_string(dir.join("loss.svg")).unwrap();
        for text in ["synchronous", "stale", "two versions", "step", "mean loss"] {
            assert!(svg.contains(text), "{text} missing");
        }
        // One line of twenty points per series, every point marked.
        let lines = svg.lines().filter(|l| l.starts_with("<polyline") && l.matches(',').count() == 20);
        assert_eq!(lines.count(), 3);
        assert!(svg.matches("<circle").count() >= 2 * 20);
        // No temporary file left beside the charts.
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_series_are_clear_errors() {
        let dir = scratch("bad");
        let path = dir.join("bad.svg");
        let e = render_lines(&chart(vec![]), &path).unwrap_err();
        assert!(matches!(e, Error::Empty { .. }) && e.to_string().contains("no series"), "{e}");
        let nan = Series::per_step("b", &[1.0, f64::NAN]);
        let e = render_lines(&chart(vec![falling("a", 0.1), nan]), &path).unwrap_err();
        assert!(e.to_string().contains("series \"b\": y[1] is NaN"), "{e}");
        let uneven = Series { label: "c".into(), x: vec![1.0, 2.0], y: vec![1.0] };
        let e = render_lines(&chart(vec![uneven]), &path).unwrap_err();
        assert!(e.to_string().contains("2 x values but 1 y values"), "{e}");
        let e = render_lines(&chart(vec![Series::per_step("d", &[])]), &path).unwrap_err();
        assert!(e.to_string().contains("no points"), "{e}");
        let wide = Series { label: "e".into(), x: vec![-f64::MAX, f64::MAX], y: vec![0.0, 1.0] };
        let e = render_lines(&chart(vec![wide]), &path).unwrap_err();
        assert!(e.to_string().contains("more than an f64 holds"), "{e}");
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn degenerate_series_render() {
        let dir = scratch("degenerate");
        let cases = [
            vec![Series::per_step("one point", &[3.0])],
            vec![Series::per_step("flat", &[0.0; 5])],
            vec![Series::per_step("negative", &[-1.0, -2.0, -1.5])],
            vec![Series::per_step("huge", &[f64::MAX, f64::MAX / 2.0])],
            (0..9).map(|k| falling(&format!("series {k}"), 0.02 * k as f64)).collect(),
            vec![Series::per_step("long", &(0..10_000).map(|k| (k as f64).sin()).collect::<Vec<_>>())],
        ];
        for (i, series) in cases.into_iter().enumerate() {
            for ext in ["svg", "png"] {
                render_lines(&chart(series.clone()), &dir.join(format!("{i}.{ext}"))).unwrap();
            }
        }
        // A long series is marked on every k-th point and its last: at most MARKERS + 1.
        let svg = std::fs::read_to_string(dir.join("5.svg")).unwrap();
        assert!(svg.matches("<circle").count() <= 2 * (MARKERS + 1) + 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ticks_tell_neighbours_apart() {
        let l = tick_label(0.01, 8);
        let labels: Vec<String> = [0.0125, 0.012, 0.0, 1.0].iter().map(l).collect();
        assert_eq!(labels, ["0.0125", "0.012", "0", "1"]);
        assert_eq!(tick_label(50.0, 10)(&20.0), "20");
        assert_eq!(tick_label(1.0, 8)(&-0.0), "0");
        assert_eq!(tick_label(7.0, 8)(&2.5), "2.5");
        assert_eq!(marked(3).collect::<Vec<_>>(), [0, 1, 2]);
        for n in [MARKERS + 1, 2 * MARKERS + 1, 10_000] {
            let marks: Vec<usize> = marked(n).collect();
            assert!(marks.len() <= MARKERS + 1 && marks.last() == Some(&(n - 1)), "{n}: {}", marks.len());
        }
    }
}
