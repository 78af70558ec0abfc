//! The throughput chart of a benchmark: one horizontal bar per configuration, in the order given
//! (first on top), its length the median samples per second, coloured by schedule and filled by
//! recompute policy (solid, or a pale hatched tint), a whisker over the spread, the value at its
//! end, and the best configuration starred — or the tied ones marked, when spreads overlap (the
//! rule is [`crate::ranking`]'s); the legend of colours and fills right of the plot.
//!
//! Invariant: every configuration gets its row, drawable or not (a point whose throughput is NaN,
//! infinite or negative keeps its label and says `n/a` instead of a bar), and the x range always
//! leaves room for the value written after the longest bar, so no number runs off the plot.

use std::path::Path;

use pipesched_charts::page::{draw_axes, style, Chart, DrawResult, Frame, LEGEND};
use pipesched_charts::palette::{INK, MUTED, PAPER};
use pipesched_charts::plotters::coord::Shift;
use pipesched_charts::plotters::prelude::*;
use pipesched_charts::plotters::style::text_anchor::{HPos, VPos};
use pipesched_charts::units::short;
use pipesched_charts::{font, write, Result, Sheet};

use super::marks::draw_box;
use super::no_points;
use super::points::{fit, text_size, ConfigPoint, Keys, Measured};
use crate::ranking::Standing;

/// Margin left of the labels and of the title.
const MARGIN: u32 = 16;
/// Height of the title band.
const TITLE: u32 = 40;
/// Width of the plotting area.
const PLOT_W: u32 = 760;
/// Height of the tick labels under the plot.
const TICKS: u32 = 24;
/// Height of the axis description.
const AXIS_DESC: u32 = 26;
/// Height of one legend line.
const LINE: i32 = 22;
/// Widest label column; longer labels are shortened with an ellipsis.
const MAX_LABEL_W: u32 = 320;

/// Draws a bar chart of the throughput of `points` under `title` to `path` (`.svg` or `.png`):
/// one bar per configuration in the order given, coloured by schedule, hatched by recompute
/// policy, with a whisker from `throughput_lo` to `throughput_hi`, the value at its end, and the
/// point's standing after it: `★ best` or `tied`, outlined.
///
/// A point whose throughput is NaN, infinite or negative is not drawn: its row says `n/a`. A spread
/// that is not finite, or that does not contain the throughput, is clamped to it.
///
/// # Errors
///
/// [`pipesched_charts::Error::Empty`] when `points` is empty, `Format` when the extension is not
/// `.svg` or `.png`, `Io` when the file cannot be written, `Draw` when drawing fails.
pub fn render_throughput(points: &[ConfigPoint], title: &str, path: &Path) -> Result<()> {
    if points.is_empty() {
        return Err(no_points(path));
    }
    // Layout measures text; a missing font is reported by `write`.
    let _ = font::ensure();
    write(&Bars::new(points, title), path)
}

/// The laid-out chart.
struct Bars<'a> {
    points: &'a [ConfigPoint],
    measured: Vec<Option<Measured>>,
    keys: Keys,
    title: &'a str,
    /// The plotting area.
    frame: Frame,
    /// Labels, shortened to fit the label column.
    labels: Vec<String>,
    /// Samples per second at the right edge of the plot.
    x_max: f64,
}

fn label_style() -> TextStyle<'static> {
    style(14.0, INK, false, HPos::Right, VPos::Center)
}

fn value_style(standing: Standing) -> TextStyle<'static> {
    style(13.0, INK, standing != Standing::Rest, HPos::Left, VPos::Center)
}

/// The legend's height for `keys`.
fn legend_height(keys: &Keys) -> u32 {
    (LINE as u32) * (keys.schedules.len() + keys.policies.len() + 8) as u32
}

impl<'a> Bars<'a> {
    fn new(points: &'a [ConfigPoint], title: &'a str) -> Bars<'a> {
        let measured: Vec<Option<Measured>> = points.iter().map(Measured::of).collect();
        let keys = Keys::of(points);
        let n = points.len();

        let label_w = points.iter().map(|p| text_size(&p.label, &label_style()).0).max().unwrap_or(0);
        let label_w = label_w.clamp(48, MAX_LABEL_W);
        let labels = points.iter().map(|p| fit(&p.label, &label_style(), label_w)).collect();
        let row = match n {
            0..=12 => 32,
            13..=24 => 26,
            _ => 20,
        };
        let h = (n as u32 * row).max(legend_height(&keys));
        let frame = Frame { left: (MARGIN + label_w + 12) as i32, top: (10 + TITLE) as i32, w: PLOT_W, h };

        // The value after each bar needs its pixels: the plot spans x_max samples/s such that
        // every bar end plus its text fits, with a little air.
        let mut x_max: f64 = 0.0;
        for (m, p) in measured.iter().zip(points) {
            let Some(m) = m else { continue };
            let text = value_text(m.throughput, p.standing);
            let room = PLOT_W as f64 - 14.0 - text_size(&text, &value_style(p.standing)).0 as f64;
            x_max = x_max.max(m.hi * 1.02).max(m.hi * PLOT_W as f64 / room.max(PLOT_W as f64 / 4.0));
        }
        let x_max = if x_max > 0.0 && x_max.is_finite() {
            x_max
        } else if x_max > 0.0 {
            f64::MAX
        } else {
            1.0
        };
        Bars { points, measured, keys, title, frame, labels, x_max }
    }

    /// Draws row `i`: its label, bar, whisker and value.
    fn draw_row<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        chart: &Chart<'_, DB>,
        i: usize,
    ) -> DrawResult<DB> {
        let n = self.points.len();
        let point = &self.points[i];
        let centre = (n - i) as f64 - 0.5;
        let (_, y) = chart.backend_coord(&(0.0, centre));
        root.draw(&Text::new(self.labels[i].clone(), (self.frame.left - 10, y), label_style()))?;
        let x_at = |x: f64| chart.backend_coord(&(x, centre)).0;
        let x0 = x_at(0.0);
        let Some(m) = self.measured[i] else {
            let why = match point.throughput {
                t if t.is_nan() => "NaN",
                t if t.is_infinite() => "infinite",
                _ => "negative",
            };
            let text = format!("n/a (throughput {why})");
            return root.draw(&Text::new(text, (x0 + 8, y), style(13.0, MUTED, false, HPos::Left, VPos::Center)));
        };
        let row_px = self.frame.h as f64 / n as f64;
        let half = (row_px * 0.31).min(11.0).round() as i32;
        let colour = self.keys.colour(&point.schedule);
        let (y0, y1) = (y - half, y + half);
        let x1 = x_at(m.throughput);
        if x1 > x0 {
            draw_box(root, (x0, y0), (x1, y1), colour, self.keys.policy(&point.recompute))?;
        }
        let standing = point.standing;
        if standing != Standing::Rest {
            root.draw(&Rectangle::new([(x0, y0 - 1), (x1.max(x0 + 1), y1 + 1)], INK.stroke_width(2)))?;
        }
        // The whisker, when the spread is wider than a pixel: a line with end caps, on a white
        // underlay so it reads over any fill.
        let (lo, hi) = (x_at(m.lo), x_at(m.hi));
        if hi - lo >= 2 {
            let cap = (half * 2 / 3).max(3);
            root.draw(&PathElement::new([(lo, y), (hi, y)], PAPER.stroke_width(4)))?;
            root.draw(&PathElement::new([(lo, y), (hi, y)], INK.stroke_width(2)))?;
            for x in [lo, hi] {
                root.draw(&PathElement::new([(x, y - cap), (x, y + cap)], INK.stroke_width(2)))?;
            }
        }
        let text = value_text(m.throughput, standing);
        root.draw(&Text::new(text, (x1.max(hi) + 6, y), value_style(standing)))
    }

    /// The legend right of the plot: schedules, recompute policies, the whisker and the star.
    fn draw_legend<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let x = self.frame.right() + 24;
        let mut y = self.frame.top + LINE / 2;
        let header = |s: &str| Text::new(s.to_string(), (x, y), style(14.0, INK, true, HPos::Left, VPos::Center));
        let entry =
            |s: &str, y: i32| Text::new(s.to_string(), (x + 36, y), style(14.0, INK, false, HPos::Left, VPos::Center));
        root.draw(&header("schedule"))?;
        for s in &self.keys.schedules {
            y += LINE;
            draw_box(root, (x, y - 7), (x + 28, y + 7), self.keys.colour(s), 0)?;
            root.draw(&entry(s, y))?;
        }
        y += LINE * 3 / 2;
        root.draw(&Text::new("recompute".to_string(), (x, y), style(14.0, INK, true, HPos::Left, VPos::Center)))?;
        for (k, p) in self.keys.policies.iter().enumerate() {
            y += LINE;
            draw_box(root, (x, y - 7), (x + 28, y + 7), MUTED, k)?;
            root.draw(&entry(p, y))?;
        }
        y += LINE * 3 / 2;
        root.draw(&PathElement::new([(x + 2, y), (x + 26, y)], INK.stroke_width(2)))?;
        for cx in [x + 2, x + 26] {
            root.draw(&PathElement::new([(cx, y - 5), (cx, y + 5)], INK.stroke_width(2)))?;
        }
        root.draw(&entry("spread over steps", y))?;
        let marked = |s: Standing| self.points.iter().any(|p| p.standing == s);
        if marked(Standing::Best) {
            y += LINE;
            root.draw(&Text::new("★".to_string(), (x + 14, y), style(14.0, INK, true, HPos::Center, VPos::Center)))?;
            root.draw(&entry("best: spread clear of", y))?;
            y += LINE * 3 / 4;
            root.draw(&entry("every other", y))?;
        }
        if marked(Standing::Tied) {
            y += LINE;
            root.draw(&Text::new("tied".to_string(), (x + 14, y), style(12.0, INK, true, HPos::Center, VPos::Center)))?;
            root.draw(&entry("spread overlaps the", y))?;
            y += LINE * 3 / 4;
            root.draw(&entry("fastest one's", y))?;
        }
        Ok(())
    }
}

/// The number written after a bar, and its standing's mark.
fn value_text(throughput: f64, standing: Standing) -> String {
    match standing {
        Standing::Rest => short(throughput),
        marked => format!("{}  {}", short(throughput), marked.mark()),
    }
}

impl Sheet for Bars<'_> {
    fn size(&self) -> (u32, u32) {
        let w = self.frame.right() as u32 + LEGEND;
        let h = self.frame.top as u32 + self.frame.h + TICKS + AXIS_DESC + 8;
        (w, h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&PAPER)?;
        let title = fit(self.title, &style(20.0, INK, true, HPos::Left, VPos::Center), self.size().0 - 2 * MARGIN);
        root.draw(&Text::new(
            title,
            (MARGIN as i32, 10 + TITLE as i32 / 2),
            style(20.0, INK, true, HPos::Left, VPos::Center),
        ))?;

        let f = self.frame;
        let area = root.clone().shrink((f.left, f.top), (f.w, f.h + TICKS));
        let mut chart = ChartBuilder::on(&area)
            .x_label_area_size(TICKS)
            .build_cartesian_2d(0.0..self.x_max, 0.0..self.points.len() as f64)?;
        let x_label = |x: &f64| short(*x);
        draw_axes(&mut chart, 10, &x_label, None)?;
        for i in 0..self.points.len() {
            self.draw_row(root, &chart, i)?;
        }
        let at = (f.left + f.w as i32 / 2, f.top + (f.h + TICKS) as i32 + 4);
        root.draw(&Text::new("samples / s".to_string(), at, style(14.0, MUTED, false, HPos::Center, VPos::Top)))?;
        self.draw_legend(root)
    }
}

#[cfg(test)]
mod tests {
    use super::super::points::fixtures::{config, ranked, realistic, scratch, svg_texts, PNG_SIGNATURE};
    use super::*;
    use pipesched_charts::palette::border_colour;
    use pipesched_charts::Error;

    #[test]
    fn renders_svg_and_png_with_one_bar_per_point() {
        let dir = scratch("bars");
        // zb-h2 / none (80, spread 74.4–85.6) is fastest, and clear of zb-h1 / none (67.7–76.3)
        // once its spread is 79–81.
        let mut points = realistic();
        (points[8].throughput_lo, points[8].throughput_hi) = (79.0, 81.0);
        let points = ranked(points);
        let svg = dir.join("bars.svg");
        render_throughput(&points, "throughput · p=4 m=8", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let texts = svg_texts(&text);
        assert!(texts.contains(&"throughput · p=4 m=8") && texts.contains(&"samples / s"));
        for p in &points {
            assert!(texts.contains(&p.label.as_str()), "{}: label missing", p.label);
            if p.throughput != 80.0 {
                assert!(texts.contains(&short(p.throughput).as_str()), "{}: value missing", p.label);
            }
        }
        // zb-h2 / none is the only star; nothing is tied.
        assert_eq!(texts.iter().filter(|t| t.contains('★')).count(), 2, "the star and its legend");
        assert!(texts.contains(&"80  ★ best"));
        assert!(!texts.iter().any(|t| t.contains("tied")));
        // Each bar has a border in its schedule's darkened colour; the legend swatch adds one.
        let keys = Keys::of(&points);
        for s in &keys.schedules {
            let c = border_colour(keys.colour(s));
            let stroke = format!("stroke=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
            let borders = text.lines().filter(|l| l.starts_with("<rect") && l.contains(&stroke)).count();
            assert_eq!(borders, 2 + 1, "{s}");
        }

        let png = dir.join("bars.png");
        render_throughput(&points, "throughput", &png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.len() > 1000 && bytes.starts_with(&PNG_SIGNATURE));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlapping_spreads_are_tied_not_best() {
        let dir = scratch("bars-tied");
        // As measured: zb-h2 / none's spread overlaps zb-h1 / none's.
        let points = ranked(realistic());
        let svg = dir.join("tied.svg");
        render_throughput(&points, "t", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let texts = svg_texts(&text);
        assert!(texts.contains(&"80  tied") && texts.contains(&"72  tied"), "{texts:?}");
        assert!(!texts.iter().any(|t| t.contains('★')), "no star when tied");
        assert!(texts.contains(&"spread overlaps the"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rows_that_cannot_be_drawn_say_why_and_equal_ones_are_tied() {
        let dir = scratch("bars-odd");
        let mut points = vec![config("1f1b", "none", 50.0, 0.1, 8.0), config("zb-h1", "none", 50.0, 0.1, 8.0)];
        points.push(ConfigPoint { throughput: f64::NAN, ..config("gpipe", "full", 1.0, 0.0, 1.0) });
        points.push(ConfigPoint { throughput: -1.0, ..config("gpipe", "none", 1.0, 0.0, 1.0) });
        let points = ranked(points);
        let svg = dir.join("odd.svg");
        render_throughput(&points, "t", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let texts = svg_texts(&text);
        assert!(texts.contains(&"n/a (throughput NaN)") && texts.contains(&"n/a (throughput negative)"));
        assert_eq!(texts.iter().filter(|t| **t == "50  tied").count(), 2);
        // A single configuration is not "best" of anything.
        render_throughput(&ranked(points[..1].to_vec()), "t", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(!text.contains("★ best") && !text.contains("tied"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn empty_bad_extension_and_unwritable_directory_are_errors() {
        let points = realistic();
        let e = render_throughput(&[], "t", Path::new("a.svg")).unwrap_err();
        assert!(matches!(e, Error::Empty { .. }) && e.to_string().contains("no configurations"), "{e}");
        let e = render_throughput(&points, "t", Path::new("a.jpg")).unwrap_err();
        assert!(matches!(e, Error::Format { .. }) && e.to_string().contains(".svg or .png"), "{e}");
        for name in ["a.svg", "a.png"] {
            let path = std::env::temp_dir().join("pipesched-no-such-dir").join("deeper").join(name);
            let e = render_throughput(&points, "t", &path).unwrap_err();
            assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("cannot write"), "{name}: {e}");
        }
    }
}
