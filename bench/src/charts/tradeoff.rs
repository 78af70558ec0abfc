//! The memory/throughput trade-off chart of a benchmark: one marker per configuration at (peak
//! memory, throughput), coloured by schedule and shaped by recompute policy; the Pareto front
//! ringed, joined by a step line that bounds the shaded region it dominates; every point labelled
//! beside its marker, or — when the labels cannot all fit — numbered, with a key below the plot;
//! the best configuration's name carries a star, tied ones say so (the rule is
//! [`crate::ranking`]'s).
//!
//! Invariant: names on the plot never overlap each other, a marker, a leader or the front's line,
//! and never leave the plot (see [`labels::place`]); every point is named — by its label when all
//! labels fit, else by its number and the key below, and a point whose number finds no room is
//! still in the key with its marker, whose colour and shape pick it out.

use std::path::Path;

use pipesched_charts::page::{draw_axes, from_zero_when_near, padded, style, DrawResult, Frame, LEFT};
use pipesched_charts::palette::{INK, MUTED, PAPER, RULE};
use pipesched_charts::plotters::coord::Shift;
use pipesched_charts::plotters::prelude::*;
use pipesched_charts::plotters::style::text_anchor::{HPos, VPos};
use pipesched_charts::rect::Rect;
use pipesched_charts::units::{short, ByteUnit};
use pipesched_charts::{font, write, Result, Sheet};

use super::labels::{self, Mark, Placed};
use super::marks::{draw_marker, shape};
use super::no_points;
use super::points::{fit, pareto_front, text_size, ConfigPoint, Keys, Measured};
use crate::ranking::Standing;

/// Margin left of the title and the key.
const MARGIN: u32 = 16;
/// Height of the title band.
const TITLE: u32 = 40;
/// Height of the y axis' name above the plot.
const Y_NAME: u32 = 22;
/// Size of the plotting area (taller when the legend needs it).
const PLOT_W: u32 = 820;
const PLOT_H: u32 = 520;
/// Height of the tick labels under the plot, and of the x axis' name.
const TICKS: u32 = 24;
const AXIS_DESC: u32 = 30;
/// Width of the legend column right of the plot.
const LEGEND_W: u32 = 290;
/// Height of one legend or key line.
const LINE: i32 = 22;
/// Marker "radius" in pixels.
const MARKER: f64 = 6.0;
/// Fill of the region the front dominates.
const DOMINATED: RGBColor = RGBColor(240, 240, 240);

/// Draws peak memory (x) against throughput (y) for `points` under `title` to `path` (`.svg` or
/// `.png`), one marker per configuration, coloured by schedule and shaped by recompute policy,
/// each labelled (or numbered, with a key below, when the labels do not fit).
///
/// The Pareto front is ringed and joined by a step line: the configurations that no other one
/// dominates, where dominating means using no more memory and reaching no less throughput while
/// being strictly better in one of the two. Of two points with equal memory only the faster is on
/// the front; points equal in both are on it together or not at all.
///
/// Memory is written in the binary unit that suits the largest peak; both axes are padded so no
/// marker sits on the frame, and start at 0 when the data come close to it.
///
/// A point whose throughput is NaN, infinite or negative is not drawn; a note under the plot
/// names it.
///
/// # Errors
///
/// [`pipesched_charts::Error::Empty`] when `points` is empty, `Format` when the extension is not
/// `.svg` or `.png`, `Io` when the file cannot be written, `Draw` when drawing fails.
pub fn render_tradeoff(points: &[ConfigPoint], title: &str, path: &Path) -> Result<()> {
    if points.is_empty() {
        return Err(no_points(path));
    }
    // Layout measures text; a missing font is reported by `write`.
    let _ = font::ensure();
    write(&Scatter::new(points, title), path)
}

/// How the points are named on the plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// Each by its label, beside its marker.
    Labels,
    /// By number (1-based, in the order given) beside the marker where there is room, and in the
    /// key below.
    Numbers,
}

/// Rings of spots tried for labels (close, so a label stays next to its point) and for numbers.
const LABEL_RINGS: usize = 2;
const NUMBER_RINGS: usize = 6;

/// The laid-out chart.
struct Scatter<'a> {
    points: &'a [ConfigPoint],
    measured: Vec<Option<Measured>>,
    front: Vec<usize>,
    keys: Keys,
    title: &'a str,
    unit: ByteUnit,
    /// Memory range (in `unit`) and throughput range of the axes.
    x: (f64, f64),
    y: (f64, f64),
    frame: Frame,
    /// Key below the plot: columns and the width of one.
    key_columns: usize,
    key_width: u32,
    /// How the points are named, and where each drawn point's name goes.
    naming: Naming,
    names: Vec<Option<Placed>>,
}

fn label_style() -> TextStyle<'static> {
    style(12.0, INK, false, HPos::Left, VPos::Top)
}

impl<'a> Scatter<'a> {
    fn new(points: &'a [ConfigPoint], title: &'a str) -> Scatter<'a> {
        let measured: Vec<Option<Measured>> = points.iter().map(Measured::of).collect();
        let front = pareto_front(&measured);
        let keys = Keys::of(points);
        let drawn = || measured.iter().flatten();
        let unit = ByteUnit::for_max(drawn().map(|m| m.bytes).max().unwrap_or(0));
        let range = |v: &dyn Fn(&Measured) -> f64, frac| {
            let lo = drawn().map(v).fold(f64::INFINITY, f64::min);
            let hi = drawn().map(v).fold(f64::NEG_INFINITY, f64::max);
            if lo.is_finite() {
                from_zero_when_near(padded(lo, hi, frac, frac))
            } else {
                (0.0, 1.0)
            }
        };
        let x = range(&|m| unit.value(m.bytes), 0.08);
        let y = range(&|m| m.throughput, 0.1);
        let legend_h = (LINE as u32) * (keys.schedules.len() + keys.policies.len() + 14) as u32;
        let frame = Frame { left: LEFT as i32, top: (10 + TITLE + Y_NAME) as i32, w: PLOT_W, h: PLOT_H.max(legend_h) };
        let key_width = points
            .iter()
            .map(|p| text_size(&marked(p.label.clone(), p.standing), &label_style()).0)
            .max()
            .unwrap_or(0)
            .min(300)
            + 64;
        let key_columns = ((frame.right() as u32 + LEGEND_W - 2 * MARGIN) / key_width).max(1) as usize;
        let mut chart = Scatter {
            points,
            measured,
            front,
            keys,
            title,
            unit,
            x,
            y,
            frame,
            key_columns,
            key_width,
            naming: Naming::Labels,
            names: Vec::new(),
        };
        (chart.naming, chart.names) = chart.place_names();
        chart
    }

    /// The pixel of the data point `(x, y)` (memory in `unit`, throughput). The layout uses this
    /// rather than plotters' mapping so it is known before any backend exists; the two agree to
    /// within a pixel, which only the grid lines could show.
    fn px(&self, (x, y): (f64, f64)) -> (i32, i32) {
        let f = self.frame;
        let along = |v: f64, (lo, hi): (f64, f64), len: u32| ((v - lo) / (hi - lo) * (len - 1) as f64).round() as i32;
        (f.left + along(x, self.x, f.w), f.top + f.h as i32 - 1 - along(y, self.y, f.h))
    }

    /// The front's step line in data coordinates: from each front point right to the next one's
    /// memory, then up to its throughput; from the last, right to the edge.
    fn staircase(&self) -> Vec<(f64, f64)> {
        let mut line: Vec<(f64, f64)> = Vec::new();
        for &i in &self.front {
            let Some(m) = self.measured[i] else { continue };
            let at = (self.unit.value(m.bytes), m.throughput);
            if let Some(&(_, held)) = line.last() {
                line.push((at.0, held));
            }
            line.push(at);
        }
        if let Some(&(_, held)) = line.last() {
            line.push((self.x.1, held));
        }
        line
    }

    /// How the points are named and where each name goes: labels if every one finds a spot close
    /// to its point, else numbers. Front points choose first.
    fn place_names(&self) -> (Naming, Vec<Option<Placed>>) {
        let drawn = |i: &usize| self.measured[*i].is_some();
        let order: Vec<usize> = self
            .front
            .iter()
            .copied()
            .chain((0..self.points.len()).filter(|i| !self.front.contains(i)))
            .filter(drawn)
            .collect();
        let line: Vec<(i32, i32)> = self.staircase().into_iter().map(|p| self.px(p)).collect();
        let f = self.frame;
        let bounds = Rect { x0: f.left + 2, y0: f.top + 2, x1: f.right() - 2, y1: f.top + f.h as i32 - 2 };
        let marks = |naming: Naming| -> Vec<Mark> {
            (0..self.points.len())
                .map(|i| {
                    let (w, h) = text_size(&self.name(naming, i), &self.name_style(i));
                    let radius = if self.front.contains(&i) { 10 } else { 8 };
                    Mark { at: self.px(self.at(i)), radius, size: (w + 4, h + 4) }
                })
                .collect()
        };
        let lines = std::slice::from_ref(&line);
        let names = labels::place(&marks(Naming::Labels), &order, lines, bounds, LABEL_RINGS);
        if order.iter().all(|&i| names[i].is_some()) {
            return (Naming::Labels, names);
        }
        (Naming::Numbers, labels::place(&marks(Naming::Numbers), &order, lines, bounds, NUMBER_RINGS))
    }

    /// The style of point `i`'s name: bold on the front.
    fn name_style(&self, i: usize) -> TextStyle<'static> {
        style(12.0, INK, self.front.contains(&i), HPos::Left, VPos::Top)
    }

    /// Point `i` in data coordinates (only for drawn points).
    fn at(&self, i: usize) -> (f64, f64) {
        self.measured[i].map_or((0.0, 0.0), |m| (self.unit.value(m.bytes), m.throughput))
    }

    /// The name of point `i` on the plot, with its standing's mark.
    fn name(&self, naming: Naming, i: usize) -> String {
        let name = match naming {
            Naming::Labels => self.points[i].label.clone(),
            Naming::Numbers => (i + 1).to_string(),
        };
        marked(name, self.points[i].standing)
    }

    /// The height of the key below the plot (drawn when the points are numbered).
    fn key_height(&self) -> u32 {
        let rows = self.points.len().div_ceil(self.key_columns);
        LINE as u32 * (rows as u32 + 1)
    }

    /// The note naming the points that are not drawn, if any.
    fn skipped_note(&self) -> Option<String> {
        let skipped: Vec<&str> = (0..self.points.len())
            .filter(|&i| self.measured[i].is_none())
            .map(|i| self.points[i].label.as_str())
            .collect();
        (!skipped.is_empty())
            .then(|| format!("not drawn (throughput NaN, infinite or negative): {}", skipped.join(", ")))
    }

    /// Draws the markers, front last so its rings sit on top.
    fn draw_markers<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let on_front = |i: &usize| self.front.contains(i);
        let rest = (0..self.points.len()).filter(|i| !on_front(i));
        for i in rest.chain(self.front.iter().copied()) {
            if self.measured[i].is_none() {
                continue;
            }
            let p = &self.points[i];
            let ring = on_front(&i).then_some(INK);
            let at = self.px(self.at(i));
            draw_marker(root, shape(self.keys.policy(&p.recompute)), at, MARKER, self.keys.colour(&p.schedule), ring)?;
        }
        Ok(())
    }

    /// The legend right of the plot: schedules, policies, and what the front and the shading are.
    fn draw_legend<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let x = self.frame.right() + 24;
        let mut y = self.frame.top + LINE / 2;
        let bold = |s: &str, y: i32| Text::new(s.to_string(), (x, y), style(14.0, INK, true, HPos::Left, VPos::Center));
        let entry =
            |s: &str, y: i32| Text::new(s.to_string(), (x + 36, y), style(14.0, INK, false, HPos::Left, VPos::Center));
        let note =
            |s: &str, y: i32| Text::new(s.to_string(), (x, y), style(13.0, MUTED, false, HPos::Left, VPos::Center));
        root.draw(&bold("schedule", y))?;
        for s in &self.keys.schedules {
            y += LINE;
            root.draw(&Rectangle::new([(x + 7, y - 7), (x + 21, y + 7)], self.keys.colour(s).filled()))?;
            root.draw(&entry(s, y))?;
        }
        y += LINE * 3 / 2;
        root.draw(&bold("recompute", y))?;
        for (k, p) in self.keys.policies.iter().enumerate() {
            y += LINE;
            draw_marker(root, shape(k), (x + 14, y), MARKER, MUTED, None)?;
            root.draw(&entry(p, y))?;
        }
        y += LINE * 3 / 2;
        root.draw(&bold("Pareto front", y))?;
        y += LINE;
        root.draw(&PathElement::new([(x, y), (x + 28, y)], INK.stroke_width(2)))?;
        draw_marker(root, shape(0), (x + 14, y), MARKER, MUTED, Some(INK))?;
        root.draw(&entry("on the front", y))?;
        y += LINE;
        root.draw(&Rectangle::new([(x, y - 7), (x + 28, y + 7)], DOMINATED.filled()))?;
        root.draw(&Rectangle::new([(x, y - 7), (x + 28, y + 7)], RULE.stroke_width(1)))?;
        root.draw(&entry("beaten by the front", y))?;
        y += LINE;
        root.draw(&note("On the front: no other configuration", y))?;
        y += LINE * 3 / 4;
        root.draw(&note("has less memory and more throughput.", y))?;
        y += LINE;
        root.draw(&note("Better is up and to the left.", y))?;
        let standing = |s: Standing| self.points.iter().any(|p| p.standing == s);
        if standing(Standing::Best) {
            y += LINE * 3 / 2;
            root.draw(&note("★ best: fastest, its spread clear", y))?;
            y += LINE * 3 / 4;
            root.draw(&note("of every other configuration's.", y))?;
        }
        if standing(Standing::Tied) {
            y += LINE * 3 / 2;
            root.draw(&note("tied: fastest, or its spread overlaps", y))?;
            y += LINE * 3 / 4;
            root.draw(&note("the fastest one's.", y))?;
        }
        Ok(())
    }

    /// The key below the plot: every point's number, marker and label, in columns.
    fn draw_key<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, top: i32) -> DrawResult<DB> {
        let unnumbered = (0..self.points.len()).any(|i| self.measured[i].is_some() && self.names[i].is_none());
        let what = if unnumbered {
            "too crowded to label: numbers beside the markers, a few only by marker"
        } else {
            "too crowded to label: the numbers beside the markers"
        };
        root.draw(&Text::new(
            what.to_string(),
            (MARGIN as i32, top),
            style(13.0, MUTED, false, HPos::Left, VPos::Center),
        ))?;
        let rows = self.points.len().div_ceil(self.key_columns);
        for (i, p) in self.points.iter().enumerate() {
            let (col, row) = (i / rows, i % rows);
            let x = MARGIN as i32 + (col as u32 * self.key_width) as i32;
            let y = top + LINE * (row as i32 + 1);
            let number = style(13.0, INK, true, HPos::Right, VPos::Center);
            root.draw(&Text::new((i + 1).to_string(), (x + 22, y), number))?;
            if self.measured[i].is_some() {
                let colour = self.keys.colour(&p.schedule);
                draw_marker(root, shape(self.keys.policy(&p.recompute)), (x + 38, y), MARKER, colour, None)?;
            }
            let label = fit(&marked(p.label.clone(), p.standing), &label_style(), self.key_width - 60);
            root.draw(&Text::new(label, (x + 52, y), style(13.0, INK, false, HPos::Left, VPos::Center)))?;
        }
        Ok(())
    }
}

/// `name` followed by the mark of `standing` (`★ best`, `tied`), if any.
fn marked(name: String, standing: Standing) -> String {
    match standing {
        Standing::Rest => name,
        marked => format!("{name}  {}", marked.mark()),
    }
}

impl Sheet for Scatter<'_> {
    fn size(&self) -> (u32, u32) {
        let below = self.frame.top as u32 + self.frame.h + TICKS + AXIS_DESC;
        let key = if self.naming == Naming::Labels { 0 } else { self.key_height() + 8 };
        let note = if self.skipped_note().is_some() { LINE as u32 } else { 0 };
        (self.frame.right() as u32 + LEGEND_W, below + key + note + 10)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&PAPER)?;
        let (width, _) = self.size();
        let title_style = style(20.0, INK, true, HPos::Left, VPos::Center);
        let title = fit(self.title, &title_style, width - 2 * MARGIN);
        root.draw(&Text::new(title, (MARGIN as i32, 10 + TITLE as i32 / 2), title_style))?;
        let f = self.frame;
        let y_name = (f.left, f.top - Y_NAME as i32 / 2 - 2);
        root.draw(&Text::new(
            "throughput (samples / s)".to_string(),
            y_name,
            style(14.0, MUTED, false, HPos::Center, VPos::Center),
        ))?;

        // The shaded region first, so the grid shows through above it.
        let stairs: Vec<(i32, i32)> = self.staircase().into_iter().map(|p| self.px(p)).collect();
        if let (Some(&first), Some(&last)) = (stairs.first(), stairs.last()) {
            let bottom = f.top + f.h as i32 - 1;
            let mut region = vec![(first.0, bottom)];
            region.extend(stairs.iter().copied());
            region.push((last.0, bottom));
            root.draw(&Polygon::new(region, DOMINATED.filled()))?;
        }
        let area = f.area(root);
        let mut chart = f.chart(&area, self.x.0..self.x.1, self.y.0..self.y.1)?;
        let unit = self.unit;
        let x_label = |x: &f64| if *x < 0.0 { String::new() } else { unit.axis_label(*x) };
        let y_label = |y: &f64| if *y < 0.0 { String::new() } else { short(*y) };
        draw_axes(&mut chart, 8, &x_label, Some((8, &y_label)))?;
        root.draw(&PathElement::new(stairs, INK.stroke_width(2)))?;
        self.draw_markers(root)?;

        let naming = self.naming;
        for (i, placed) in self.names.iter().enumerate() {
            let Some(Placed { rect, leader }) = *placed else { continue };
            if let Some(leader) = leader {
                root.draw(&PathElement::new(leader, MUTED.stroke_width(1)))?;
            }
            root.draw(&Rectangle::new([(rect.x0, rect.y0), (rect.x1, rect.y1)], PAPER.filled()))?;
            root.draw(&Text::new(self.name(naming, i), (rect.x0 + 2, rect.y0 + 2), self.name_style(i)))?;
        }

        let mut y = f.top + (f.h + TICKS) as i32 + 4;
        let x_name = "peak memory (max over ranks)".to_string();
        root.draw(&Text::new(
            x_name,
            (f.left + f.w as i32 / 2, y),
            style(14.0, MUTED, false, HPos::Center, VPos::Top),
        ))?;
        y += AXIS_DESC as i32;
        if naming != Naming::Labels {
            self.draw_key(root, y)?;
            y += self.key_height() as i32 + 8;
        }
        if let Some(note) = self.skipped_note() {
            root.draw(&Text::new(note, (MARGIN as i32, y), style(13.0, MUTED, false, HPos::Left, VPos::Center)))?;
        }
        self.draw_legend(root)
    }
}

#[cfg(test)]
mod tests {
    use super::super::points::fixtures::{config, crowded, ranked, realistic, scratch, svg_texts, PNG_SIGNATURE};
    use super::*;
    use pipesched_charts::Error;

    fn hex(c: RGBColor) -> String {
        format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2)
    }

    /// Markers drawn in each schedule's colour: one polygon per point (legend swatches are
    /// rectangles, legend shapes grey).
    fn markers_per_schedule(svg: &str, points: &[ConfigPoint]) -> Vec<(String, usize, usize)> {
        let keys = Keys::of(points);
        let polygons: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polygon")).collect();
        keys.schedules
            .iter()
            .map(|s| {
                let drawn = polygons.iter().filter(|l| l.contains(&hex(keys.colour(s)))).count();
                let expected = points.iter().filter(|p| &p.schedule == s && Measured::of(p).is_some()).count();
                (s.clone(), drawn, expected)
            })
            .collect()
    }

    #[test]
    fn realistic_points_are_labelled_and_the_front_is_bold() {
        let dir = scratch("tradeoff");
        let points = realistic();
        let svg = dir.join("t.svg");
        render_tradeoff(&points, "memory vs throughput · p=4", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let texts = svg_texts(&text);
        assert!(texts.contains(&"memory vs throughput · p=4"));
        assert!(texts.contains(&"throughput (samples / s)") && texts.contains(&"peak memory (max over ranks)"));
        for (s, drawn, expected) in markers_per_schedule(&text, &points) {
            assert_eq!(drawn, expected, "{s}: one marker per point");
        }
        // Every point by its label; the front's in bold, and only those (besides title and headers).
        let lines: Vec<&str> = text.lines().collect();
        let bold: Vec<&str> =
            lines.windows(2).filter(|w| w[0].starts_with("<text") && w[0].contains("bold")).map(|w| w[1]).collect();
        for p in &points {
            assert!(texts.contains(&p.label.as_str()), "{}", p.label);
        }
        let front = ["1f1b / full", "zb-h1 / full", "zb-h2 / full", "zb-h1 / none", "zb-h2 / none"];
        let headers = ["memory vs throughput · p=4", "schedule", "recompute", "Pareto front"];
        let mut expected: Vec<&str> = front.iter().chain(&headers).copied().collect();
        let mut bold = bold;
        expected.sort();
        bold.sort();
        assert_eq!(bold, expected);
        // MiB chosen from the data.
        assert!(texts.contains(&"10 MiB"), "{texts:?}");

        let png = dir.join("t.png");
        render_tradeoff(&points, "t", &png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.len() > 1000 && bytes.starts_with(&PNG_SIGNATURE));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_best_or_tied_points_are_marked_in_their_names() {
        let dir = scratch("tradeoff-marks");
        let svg = dir.join("t.svg");
        // As measured: zb-h2 / none and zb-h1 / none overlap.
        render_tradeoff(&ranked(realistic()), "t", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let texts = svg_texts(&text);
        assert!(texts.contains(&"zb-h2 / none  tied") && texts.contains(&"zb-h1 / none  tied"), "{texts:?}");
        assert!(texts.contains(&"tied: fastest, or its spread overlaps") && !texts.iter().any(|t| t.contains('★')));
        // With zb-h2 / none's spread tightened it is best, alone.
        let mut points = realistic();
        (points[8].throughput_lo, points[8].throughput_hi) = (79.0, 81.0);
        render_tradeoff(&ranked(points), "t", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let texts = svg_texts(&text);
        assert!(texts.contains(&"zb-h2 / none  ★ best") && texts.contains(&"zb-h1 / none"), "{texts:?}");
        assert!(!texts.iter().any(|t| t.contains("tied")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn crowded_points_are_numbered_with_a_key() {
        let points = crowded();
        let _ = font::ensure();
        let chart = Scatter::new(&points, "t");
        assert_eq!(chart.naming, Naming::Numbers);
        assert!(chart.names.iter().all(Option::is_some), "every point numbered on the plot");
        let rects: Vec<Rect> = chart.names.iter().flatten().map(|p| p.rect).collect();
        for (k, a) in rects.iter().enumerate() {
            assert!(rects[k + 1..].iter().all(|b| a.x1 <= b.x0 || b.x1 <= a.x0 || a.y1 <= b.y0 || b.y1 <= a.y0));
        }
        let dir = scratch("crowded");
        let svg = dir.join("c.svg");
        render_tradeoff(&points, "t", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        // Each point: a marker on the plot and one in the key.
        for (s, drawn, expected) in markers_per_schedule(&text, &points) {
            assert_eq!(drawn, 2 * expected, "{s}");
        }
        let texts = svg_texts(&text);
        for (i, p) in points.iter().enumerate() {
            assert!(texts.contains(&p.label.as_str()), "{}", p.label);
            assert_eq!(texts.iter().filter(|t| **t == (i + 1).to_string()).count(), 2, "number {}", i + 1);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn degenerate_inputs_render() {
        let dir = scratch("degenerate");
        let one = vec![config("zb-h2", "none", 80.0, 0.05, 12.0)];
        let same = vec![config("1f1b", "none", 50.0, 0.0, 8.0); 3];
        let zero: Vec<ConfigPoint> =
            realistic().into_iter().map(|p| ConfigPoint { throughput: 0.0, peak_bytes: 0, ..p }).collect();
        let mut odd = realistic();
        odd[0].throughput = f64::NAN;
        odd[1].throughput = f64::INFINITY;
        odd[2].throughput = -5.0;
        odd[3].throughput_lo = f64::NEG_INFINITY;
        odd[4].throughput_hi = f64::NAN;
        let none_drawable: Vec<ConfigPoint> =
            realistic().into_iter().map(|p| ConfigPoint { throughput: f64::NAN, ..p }).collect();
        let huge = vec![
            ConfigPoint { peak_bytes: u64::MAX, throughput: f64::MAX, throughput_hi: f64::MAX, ..one[0].clone() },
            config("gpipe", "full", 1e-300, 0.0, 0.0),
        ];
        let strange = vec![
            ConfigPoint {
                label: "a very long label that will not fit in any column at all, surely".into(),
                ..one[0].clone()
            },
            config("mine", "every:3", 10.0, 0.5, 3.0),
            config("yours", "odd", 20.0, 0.5, 6.0),
        ];
        let many: Vec<ConfigPoint> = crowded().into_iter().chain(realistic()).collect();
        let cases = [one, same, zero, odd, none_drawable, huge, strange, many];
        for (k, points) in cases.iter().enumerate() {
            for ext in ["svg", "png"] {
                render_tradeoff(points, "t", &dir.join(format!("{k}-t.{ext}"))).unwrap();
                super::super::render_throughput(points, "t", &dir.join(format!("{k}-b.{ext}"))).unwrap();
            }
        }
        let odd = std::fs::read_to_string(dir.join("3-t.svg")).unwrap();
        let note = "not drawn (throughput NaN, infinite or negative): gpipe / none, gpipe / full, 1f1b / none";
        assert!(svg_texts(&odd).contains(&note), "{:?}", svg_texts(&odd));
        for (s, drawn, expected) in markers_per_schedule(&odd, &cases[3]) {
            assert_eq!(drawn, expected, "{s}");
        }
        let leftovers =
            std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.'));
        assert_eq!(leftovers.count(), 0, "temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_bad_extension_and_unwritable_directory_are_errors() {
        let points = realistic();
        let e = render_tradeoff(&[], "t", Path::new("a.svg")).unwrap_err();
        assert!(matches!(e, Error::Empty { .. }) && e.to_string().contains("no configurations"), "{e}");
        for name in ["a.jpg", "a", "a.svg.txt"] {
            let e = render_tradeoff(&points, "t", Path::new(name)).unwrap_err();
            assert!(matches!(e, Error::Format { .. }) && e.to_string().contains(".svg or .png"), "{e}");
        }
        for name in ["a.svg", "a.png"] {
            let path = std::env::temp_dir().join("pipesched-no-such-dir").join("deeper").join(name);
            let e = render_tradeoff(&points, "t", &path).unwrap_err();
            assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("cannot write"), "{name}: {e}");
        }
    }

    #[test]
    fn the_staircase_steps_right_then_up_to_the_edge() {
        let points = vec![
            config("a", "none", 10.0, 0.0, 1.0),
            config("b", "none", 20.0, 0.0, 2.0),
            config("c", "none", 5.0, 0.0, 3.0),
        ];
        let _ = font::ensure();
        let chart = Scatter::new(&points, "t");
        assert_eq!(chart.front, [0, 1]);
        let right = chart.x.1;
        assert_eq!(chart.staircase(), [(1.0, 10.0), (2.0, 10.0), (2.0, 20.0), (right, 20.0)]);
    }
}
