//! The timeline panel: one row per rank (rank 0 on top), one box per action from its start to its
//! end, coloured by op (a lighter tint for later chunks), the micro-batch number inside boxes wide
//! enough to hold it, and a legend of the ops present in the column right of the plot.
//!
//! Invariant: a box is drawn for every span, however small (so nothing is silently dropped); only
//! its border and label are left out when the box is too small for them to be legible.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use pipesched_schedules::{Op, Span, Trace};

use super::figure::draw_axes;
use super::figure::{style, time_label, DrawResult, Frame};
use super::palette::{border_colour, box_colour, chunk_of, op_name, text_on, INK, MUTED, PAPER, RULE};

/// Fraction of a row left empty above and below its boxes.
const ROW_PAD: f64 = 0.12;
/// Height of one legend line.
const LEGEND_LINE: u32 = 22;
/// Side of a legend swatch.
const SWATCH: i32 = 14;

/// The number of rows of `trace`: one per rank, at least one.
fn rows(trace: &Trace) -> usize {
    trace.ranks.len().max(trace.p).max(1)
}

/// Pixel height of one rank's row: roomy for a few ranks, thinner as `p` grows.
fn row_height(rows: usize) -> u32 {
    match rows {
        0..=2 => 40,
        3..=4 => 34,
        5..=8 => 30,
        9..=16 => 24,
        17..=32 => 16,
        _ => (640 / rows as u32).max(6),
    }
}

/// Ops present in the trace, in legend order.
fn ops_present(trace: &Trace) -> Vec<Op> {
    Op::ALL.into_iter().filter(|&op| trace.ranks.iter().any(|r| r.spans().any(|s| s.action.op == op))).collect()
}

/// Pixel height of the legend.
fn legend_height(trace: &Trace) -> u32 {
    let notes = if trace.v > 1 { 2 } else { 1 };
    (ops_present(trace).len() as u32 + 1 + notes) * LEGEND_LINE
}

/// Pixel height of the plotting area for `trace`: its rows, or the legend if that is taller.
pub(crate) fn height(trace: &Trace) -> u32 {
    let n = rows(trace) as u32;
    (n * row_height(n as usize)).max(legend_height(trace))
}

/// Draws the timeline of `trace` in `frame`, time running from 0 to `x_max`.
pub(crate) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: Frame,
    trace: &Trace,
    x_max: f64,
) -> DrawResult<DB> {
    let n = rows(trace);
    let area = frame.area(root);
    let mut chart = frame.chart(&area, 0.0..x_max, 0.0..n as f64)?;
    draw_axes(&mut chart, 12, &time_label, None)?;

    // Rank rows: a separator between rows, a name left of each (thinned out when rows are thin).
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
            let at = (frame.left - 8, y);
            root.draw(&Text::new(format!("rank {r}"), at, style(size, INK, false, HPos::Right, VPos::Center)))?;
        }
    }

    let p = trace.p.max(1);
    let v = trace.v.max(1);
    let px_per_unit = frame.w as f64 / x_max;
    let finite = |s: &Span| s.start.is_finite() && s.end.is_finite();
    let boxes = trace.ranks.iter().enumerate().flat_map(|(r, rank)| {
        let y_top = (n - r) as f64 - ROW_PAD;
        let y_bottom = (n - r - 1) as f64 + ROW_PAD;
        rank.spans().filter(finite).map(move |s| (s, y_top, y_bottom))
    });
    // Fills first, then borders only where a box is at least 3 px wide (thinner ones would be
    // all border).
    chart.draw_series(boxes.clone().map(|(s, y0, y1)| {
        let fill = box_colour(s.action.op, chunk_of(s.action.stage(), p, trace.placement), v);
        Rectangle::new([(s.start, y0), (s.end, y1)], fill.filled())
    }))?;
    chart.draw_series(boxes.clone().filter(|(s, _, _)| s.duration() * px_per_unit >= 3.0).map(|(s, y0, y1)| {
        let fill = box_colour(s.action.op, chunk_of(s.action.stage(), p, trace.placement), v);
        Rectangle::new([(s.start, y0), (s.end, y1)], border_colour(fill).stroke_width(1))
    }))?;

    // Micro-batch numbers, where the box holds them with some margin and the row is tall enough.
    // The test uses the widest number of the trace, so boxes of one length are all labelled or none.
    let size = (row_px * (1.0 - 2.0 * ROW_PAD) * 0.62).min(13.0);
    let widest = trace.ranks.iter().flat_map(|r| r.spans().map(|s| s.action.mb())).max().unwrap_or(0);
    let need = label_width(root, size, digits(widest)) as f64 + 4.0;
    let fits = |(s, _, _): &(Span, f64, f64)| s.duration() * px_per_unit >= need;
    let labelled = size >= 9.0 && boxes.clone().any(|b| fits(&b));
    if labelled {
        chart.draw_series(boxes.filter(fits).map(|(s, y0, y1)| {
            let fill = box_colour(s.action.op, chunk_of(s.action.stage(), p, trace.placement), v);
            let centre = ((s.start + s.end) / 2.0, (y0 + y1) / 2.0);
            Text::new(s.action.mb().to_string(), centre, style(size, text_on(fill), false, HPos::Center, VPos::Center))
        }))?;
    }

    if trace.ranks.iter().all(|r| r.is_empty()) {
        let at = (frame.left + frame.w as i32 / 2, frame.top + frame.h as i32 / 2);
        root.draw(&Text::new("no actions", at, style(14.0, MUTED, false, HPos::Center, VPos::Center)))?;
    }
    draw_legend(root, frame, trace, labelled)
}

/// The legend right of the plot: one line per op present (with one swatch per chunk), idle, and
/// what the numbers in the boxes are when there are any.
fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: Frame,
    trace: &Trace,
    labelled: bool,
) -> DrawResult<DB> {
    let v = trace.v.max(1);
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
    for op in ops_present(trace) {
        let fills: Vec<RGBColor> = (0..v.min(4)).map(|c| box_colour(op, c, v)).collect();
        line(y, &fills, format!("{op}  {}", op_name(op)))?;
        y += LEGEND_LINE as i32;
    }
    line(y, &[PAPER], "idle".to_string())?;
    let muted = style(13.0, MUTED, false, HPos::Left, VPos::Center);
    if v > 1 {
        y += LEGEND_LINE as i32;
        let note =
            if v > 4 { format!("shades: chunk 0, 1, 2, 3+ of {v}") } else { format!("shades: chunk 0 … {}", v - 1) };
        root.draw(&Text::new(note, (x, y), muted.clone()))?;
    }
    if labelled {
        y += LEGEND_LINE as i32;
        root.draw(&Text::new("numbers: micro-batch", (x, y), muted))?;
    }
    Ok(())
}

/// Decimal digits of `n`.
fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Pixel width of `n` digits at `size` (an estimate of 0.64 em per digit when the font cannot
/// measure).
fn label_width<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, size: f64, n: usize) -> u32 {
    let sample = "0".repeat(n);
    root.estimate_text_size(&sample, &style(size, INK, false, HPos::Left, VPos::Top))
        .map_or((0.64 * size * n as f64) as u32, |(w, _)| w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_thin_out_with_p_but_stay_visible() {
        assert_eq!(row_height(1), 40);
        assert!(row_height(16) * 16 <= 400);
        assert!(row_height(64) >= 6);
        assert!(row_height(1000) >= 6);
        assert_eq!(digits(0), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(1023), 4);
    }
}
