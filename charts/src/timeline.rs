//! The timeline panel: one row per rank (rank 0 on top), one box per action from its start to its
//! end, coloured by op (a lighter tint for later chunks), micro-batch numbers where they fit (see
//! [`numbers`](crate::numbers)), and a legend of the ops present right of the plot.
//!
//! With data parallelism, each rank's gradient sums over the replicas are a dark strip along the
//! bottom of its row, under the boxes, from each sum's start to its end.
//!
//! Large traces are downsampled, never dropped: a span narrower than `MIN_BOX` pixels is drawn as
//! part of its pixel column (a bar as tall as the column is busy, in the colour of the op that
//! spent most time there; see [`raster`](crate::raster)), and past `MAX_ROWS` ranks a row holds
//! several ranks, all drawn that way. So a timeline costs at most about two shapes per pixel
//! column of each row, whether the trace has a hundred spans or twenty-five million, and the
//! legend says which of these was done.
//!
//! Invariant: every span's time shows — as its own box, or in its columns' bars — and only
//! boxes of their own carry numbers or borders.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::FontTransform;

use pipesched_schedules::{Op, Trace};

use crate::numbers::{number, Boxed, Numbering, Way};
use crate::page::{draw_axes, number_label, style, DrawResult, Frame};
use crate::palette::{border_colour, box_colour, chunk_of, op_name, INK, MUTED, PAPER, RULE, SHADES, SUM};
use crate::raster::{Key, Raster, Run};
use crate::units::ordinal;

/// Fraction of a row left empty above and below its boxes.
const ROW_PAD: f64 = 0.12;
/// Height of one legend line of an op.
const LEGEND_LINE: u32 = 22;
/// Height of one line of the legend's notes.
const NOTE_LINE: u32 = 18;
/// Side of a legend swatch.
const SWATCH: i32 = 14;
/// Spans narrower than this many pixels are drawn in their columns' bars.
const MIN_BOX: f64 = 2.0;
/// At most this many rows; more ranks share rows.
const MAX_ROWS: usize = 128;
/// Smallest size, in pixels, numbers are written at.
const MIN_NUMBER_SIZE: f64 = 9.0;

/// The size of numbers written upright, for numbers written across at `size`: a little smaller,
/// as they go in narrower boxes, but never below the legible minimum.
fn upright_size(size: f64) -> f64 {
    (0.8 * size).max(MIN_NUMBER_SIZE)
}

/// Pixel height of one row when there are `rows`: roomy for a few, thinner as they grow.
fn row_height(rows: usize) -> u32 {
    match rows {
        0..=2 => 40,
        3..=4 => 34,
        5..=8 => 30,
        9..=16 => 24,
        17..=32 => 16,
        _ => (640 / rows.max(1) as u32).max(6),
    }
}

/// One action drawn as its own box.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Exact {
    row: usize,
    start: f64,
    end: f64,
    fill: RGBColor,
    /// Its micro-batch.
    mb: usize,
    /// Wide enough for a border.
    bordered: bool,
}

/// What a timeline will draw, decided once from the trace and the plot's width.
pub(crate) struct Timeline {
    /// Rows, and ranks per row.
    rows: usize,
    per_row: usize,
    /// Ranks in the trace.
    ranks: usize,
    /// Chunks per rank, for the shades.
    v: usize,
    /// Ops present, in legend order.
    ops: Vec<Op>,
    exact: Vec<Exact>,
    /// Bars of downsampled columns, per row; heights out of `levels` pixels.
    runs: Vec<(usize, Run)>,
    levels: u32,
    /// Numbers and the size they are written at.
    numbering: Numbering,
    number_size: f64,
    empty: bool,
    /// Gradient sums over replicas: (row, start, end).
    sums: Vec<(usize, f64, f64)>,
}

impl Timeline {
    /// Plans the timeline of `trace` on a plot `w` pixels wide spanning the times 0 to `x_max`.
    pub fn new(trace: &Trace, x_max: f64, w: u32) -> Timeline {
        let ranks = trace.ranks.len().max(trace.p).max(1);
        let per_row = ranks.div_ceil(MAX_ROWS);
        let rows = ranks.div_ceil(per_row);
        let row_px = row_height(rows) as f64;
        let levels = (row_px * (1.0 - 2.0 * ROW_PAD)).round().max(1.0) as u32;
        let px_per_unit = if x_max > 0.0 { w as f64 / x_max } else { 0.0 };
        let (p, v) = (trace.p.max(1), trace.v.max(1));
        let mut present = [false; Op::ALL.len()];
        let mut exact = Vec::new();
        let mut runs = Vec::new();
        let mut raster: Option<Raster> = None;
        for row in 0..rows {
            let members = trace.ranks.iter().skip(row * per_row).take(per_row);
            // Boxes of their own, at most one per pixel column of a row (overlapping spans of a
            // malformed trace could otherwise be unbounded).
            let mut own = 0;
            let mut binned = false;
            for rank in members {
                for s in rank.spans() {
                    present[Op::ALL.iter().position(|&o| o == s.action.op).unwrap_or(0)] = true;
                    if !(s.start.is_finite() && s.end.is_finite()) {
                        continue;
                    }
                    let chunk = chunk_of(s.action.stage(), p, trace.placement);
                    let px = s.duration() * px_per_unit;
                    if per_row == 1 && px >= MIN_BOX && own < w as usize {
                        own += 1;
                        let fill = box_colour(s.action.op, chunk, v);
                        let mb = s.action.mb();
                        exact.push(Exact { row, start: s.start, end: s.end, fill, mb, bordered: px >= 3.0 });
                    } else {
                        let raster = raster.get_or_insert_with(|| Raster::new(w, x_max));
                        raster.add(s.start, s.end, Key { op: s.action.op, shade: chunk.min(SHADES - 1) });
                        binned = true;
                    }
                }
            }
            if let (true, Some(r)) = (binned, raster.as_mut()) {
                runs.extend(r.runs(per_row, levels).into_iter().map(|run| (row, run)));
                r.clear();
            }
        }
        // Numbers in the size the row allows, if it is legible at all.
        let number_size = (row_px * (1.0 - 2.0 * ROW_PAD) * 0.62).min(13.0);
        let numbering = if number_size >= MIN_NUMBER_SIZE && !exact.is_empty() {
            let measure = |size: f64| {
                let font = style(size, INK, false, HPos::Left, VPos::Top).font;
                move |t: &str| {
                    font.box_size(t).map_or((0.64 * size * t.len() as f64, size), |(w, h)| (w as f64, h as f64))
                }
            };
            let boxes: Vec<Boxed> = exact
                .iter()
                .map(|e| Boxed {
                    row: e.row,
                    x0: e.start * px_per_unit,
                    x1: e.end * px_per_unit,
                    mb: e.mb,
                    fill: e.fill,
                })
                .collect();
            number(&boxes, levels as f64, &measure(number_size), &measure(upright_size(number_size)))
        } else {
            Numbering::default()
        };
        let ops = Op::ALL.into_iter().zip(present).filter(|&(_, here)| here).map(|(op, _)| op).collect();
        let empty = trace.ranks.iter().all(|r| r.is_empty());
        let sums = trace
            .sums
            .iter()
            .enumerate()
            .flat_map(|(r, sums)| sums.iter().map(move |s| (r / per_row, s.start, s.end)))
            .filter(|(_, a, b)| a.is_finite() && b.is_finite())
            .collect();
        Timeline { rows, per_row, ranks, v, ops, exact, runs, levels, numbering, number_size, empty, sums }
    }

    /// The notes under the legend's ops.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let v = self.v;
        if v > 1 {
            notes.push(if v > SHADES {
                format!("shades: chunk 0, 1, 2, 3+ of {v}")
            } else {
                format!("shades: chunk 0 … {}", v - 1)
            });
        }
        let n = &self.numbering;
        if !n.numbers.is_empty() {
            notes.push("numbers: micro-batch".into());
        }
        if n.turned {
            notes.push("upright in narrow boxes".into());
        }
        if let Some(k) = n.every {
            notes.push(format!("every {} over thin boxes", ordinal(k)));
        }
        if n.blank {
            notes.push("thinnest boxes: unnumbered".into());
        }
        if !self.runs.is_empty() {
            notes.push("thin spans: one bar per pixel,".into());
            notes.push("as high as busy, in the main op".into());
        }
        if self.per_row > 1 {
            notes.push(format!("{} ranks per row", self.per_row));
        }
        notes
    }

    /// Pixel height of the plotting area: its rows, or the legend if that is taller.
    pub fn height(&self) -> u32 {
        let lines = self.ops.len() + 1 + usize::from(!self.sums.is_empty());
        let legend = lines as u32 * LEGEND_LINE + self.notes().len() as u32 * NOTE_LINE + 6;
        (self.rows as u32 * row_height(self.rows)).max(legend)
    }

    /// Draws the timeline in `frame`, time running from 0 to `x_max`.
    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, frame: Frame, x_max: f64) -> DrawResult<DB> {
        let n = self.rows;
        let area = frame.area(root);
        let mut chart = frame.chart(&area, 0.0..x_max, 0.0..n as f64)?;
        draw_axes(&mut chart, 12, &number_label, None)?;

        // Rows: a separator between rows, a name left of each (thinned out when rows are thin).
        let row_px = frame.h as f64 / n as f64;
        let every = (14.0 / row_px).ceil().max(1.0) as usize;
        for r in 0..n {
            let y_top = (n - r) as f64;
            if r > 0 {
                chart.draw_series(std::iter::once(PathElement::new([(0.0, y_top), (x_max, y_top)], RULE)))?;
            }
            if r % every == 0 {
                let (_, y) = chart.backend_coord(&(0.0, y_top - 0.5));
                let size = (row_px * 0.6).clamp(10.0, 14.0);
                let first = r * self.per_row;
                let last = ((r + 1) * self.per_row).min(self.ranks) - 1;
                let name = if first == last { format!("rank {first}") } else { format!("ranks {first}–{last}") };
                root.draw(&Text::new(name, (frame.left - 8, y), style(size, INK, false, HPos::Right, VPos::Center)))?;
            }
        }

        // Boxes of their own: fills, then borders.
        let corners = |e: &Exact| [(e.start, (n - e.row) as f64 - ROW_PAD), (e.end, (n - e.row - 1) as f64 + ROW_PAD)];
        chart.draw_series(self.exact.iter().map(|e| Rectangle::new(corners(e), e.fill.filled())))?;
        chart.draw_series(
            self.exact
                .iter()
                .filter(|e| e.bordered)
                .map(|e| Rectangle::new(corners(e), border_colour(e.fill).stroke_width(1))),
        )?;

        // Downsampled columns: bars standing on the bottom of their row's boxes.
        let box_h = row_px * (1.0 - 2.0 * ROW_PAD);
        for &(row, run) in &self.runs {
            let bottom = frame.top as f64 + (row + 1) as f64 * row_px - row_px * ROW_PAD;
            let h = (run.height as f64 / self.levels as f64 * box_h).max(1.0);
            let fill = box_colour(run.key.op, run.key.shade, self.v);
            let x0 = frame.left + run.c0 as i32;
            let x1 = frame.left + run.c1 as i32;
            root.draw(&Rectangle::new(
                [(x0, (bottom - h).round() as i32), (x1, bottom.round() as i32)],
                fill.filled(),
            ))?;
        }

        // Gradient sums: a strip in the bottom padding of their row.
        chart.draw_series(self.sums.iter().map(|&(row, start, end)| {
            let bottom = (n - row - 1) as f64;
            Rectangle::new([(start, bottom + 0.2 * ROW_PAD), (end, bottom + 0.9 * ROW_PAD)], SUM.filled())
        }))?;

        // Numbers.
        let size = self.number_size;
        for num in &self.numbering.numbers {
            let centre =
                (frame.left + num.x.round() as i32, (frame.top as f64 + (num.row as f64 + 0.5) * row_px) as i32);
            let mut text_style = style(size, num.colour, false, HPos::Center, VPos::Center);
            if num.way == Way::Turned {
                text_style = style(upright_size(size), num.colour, false, HPos::Center, VPos::Center)
                    .transform(FontTransform::Rotate270);
            }
            root.draw(&Text::new(num.mb.to_string(), centre, text_style))?;
        }

        if self.empty {
            let at = (frame.left + frame.w as i32 / 2, frame.top + frame.h as i32 / 2);
            root.draw(&Text::new("no actions", at, style(14.0, MUTED, false, HPos::Center, VPos::Center)))?;
        }
        self.draw_legend(root, frame)
    }

    /// The legend right of the plot: one line per op present (with one swatch per shade), idle,
    /// and the notes.
    fn draw_legend<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, frame: Frame) -> DrawResult<DB> {
        let x = frame.right() + 18;
        let mut y = frame.top + LEGEND_LINE as i32 / 2;
        let line = |y: i32, fills: &[RGBColor], text: String| -> DrawResult<DB> {
            for (k, &fill) in fills.iter().enumerate() {
                let x0 = x + k as i32 * (SWATCH + 3);
                let corners = [(x0, y - SWATCH / 2), (x0 + SWATCH, y + SWATCH / 2)];
                root.draw(&Rectangle::new(corners, fill.filled()))?;
                root.draw(&Rectangle::new(corners, border_colour(fill).stroke_width(1)))?;
            }
            let tx = x + fills.len() as i32 * (SWATCH + 3) + 6;
            root.draw(&Text::new(text, (tx, y), style(14.0, INK, false, HPos::Left, VPos::Center)))
        };
        for &op in &self.ops {
            let fills: Vec<RGBColor> = (0..self.v.min(SHADES)).map(|c| box_colour(op, c, self.v)).collect();
            line(y, &fills, format!("{op}  {}", op_name(op)))?;
            y += LEGEND_LINE as i32;
        }
        if !self.sums.is_empty() {
            line(y, &[SUM], "Σ  gradient sum over replicas".to_string())?;
            y += LEGEND_LINE as i32;
        }
        line(y, &[PAPER], "idle".to_string())?;
        y += (LEGEND_LINE as i32 + NOTE_LINE as i32) / 2;
        for note in self.notes() {
            root.draw(&Text::new(note, (x, y), style(13.0, MUTED, false, HPos::Left, VPos::Center)))?;
            y += NOTE_LINE as i32;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_schedules::{simulate, CostModel, Kind, Stats};

    fn plan(p: usize, m: usize) -> (Timeline, usize) {
        let t = simulate(&Kind::OneFOneB.generate(p, 1, m).unwrap(), &CostModel::per_rank(1.0, 2.0, 0.0)).unwrap();
        (Timeline::new(&t, Stats::of(&t).makespan, 1100), t.num_spans())
    }

    #[test]
    fn rows_thin_out_with_p_but_stay_visible() {
        assert_eq!(row_height(1), 40);
        assert!(row_height(16) * 16 <= 400);
        assert!(row_height(64) >= 6);
        assert!(row_height(1000) >= 6);
    }

    #[test]
    fn wide_spans_are_boxes_narrow_ones_bars_and_many_ranks_share_rows() {
        // p = 4, m = 8: every span is its own box, numbered.
        let (small, spans) = plan(4, 8);
        assert_eq!((small.exact.len(), small.runs.len(), small.per_row), (spans, 0, 1));
        assert_eq!(small.numbering.numbers.len(), spans);
        // m = 4096: 24 spans of 3 units per pixel; all bars, at most one per column per row.
        let (long, spans) = plan(4, 4096);
        assert!(long.exact.is_empty() && !long.runs.is_empty(), "{} boxes of {spans}", long.exact.len());
        assert!(long.runs.len() <= 4 * 1100);
        assert!(long.runs.iter().all(|(row, run)| *row < 4 && run.c1 <= 1100 && run.height <= long.levels));
        assert!(long.notes().contains(&"thin spans: one bar per pixel,".to_string()));
        // p = 300: three ranks per row, all bars.
        let (wide, _) = plan(300, 300);
        assert_eq!((wide.rows, wide.per_row), (100, 3));
        assert!(wide.exact.is_empty());
        assert!(wide.notes().contains(&"3 ranks per row".to_string()));
    }
}
