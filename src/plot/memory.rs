//! The memory panel: live bytes of every rank as a step line over the shared time axis, one
//! colour per rank, each rank's peak marked with a dot, and a table right of the plot that names
//! the colours and gives every peak (a colour ramp and the extremes when there are too many ranks
//! to list). The peak values are also written beside their dots when they all fit without
//! overlapping.
//!
//! Invariant: a line follows the trace's step function — from each time on it holds the last
//! sample of that time, and it reaches the highest sample of every time — so the dot of the peak
//! (`RankTrace::peak_bytes` at `peak_time`) always sits on the line.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use pipesched_schedules::{MemSample, Trace};

use super::figure::draw_axes;
use super::figure::{style, time_label, DrawResult, Frame, LEGEND};
use super::palette::{rank_colour, INK, MUTED, PAPER};
use super::peaks::{self, Rect};
use super::units::ByteUnit;

/// Ranks listed one by one in the table; more are summarised.
const LISTED: usize = 16;
/// Height of one table line.
const LINE: u32 = 18;

/// Pixel height of the plotting area for `trace`: tall enough for its table.
pub(crate) fn height(trace: &Trace) -> u32 {
    let n = trace.ranks.len();
    let table = if n <= LISTED { (n as u32 + 1) * LINE + 8 } else { 6 * LINE };
    table.max(220)
}

/// The step line of one rank, in (time, bytes in `unit`), extended to `end`.
///
/// Samples sharing a time (to within 1/1000 of `end`: about a pixel and a half at the widest
/// chart, which absorbs both the rounding of sums of durations and the microsecond gaps between
/// one action's end and the next one's start in measured traces) are one vertical move from the value before them to the last of them,
/// reaching up to the highest of them on the way if that is higher still (a transient peak is
/// memory really held); a transient dip below both ends is not drawn, as it holds nothing.
fn steps(samples: &[MemSample], end: f64, unit: ByteUnit) -> Vec<(f64, f64)> {
    let samples: Vec<&MemSample> = samples.iter().filter(|s| s.time.is_finite()).collect();
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(2 * samples.len() + 1);
    let eps = end.abs() * 1e-3;
    for group in samples.chunk_by(|a, b| (b.time - a.time).abs() <= eps) {
        let time = group[0].time;
        let last = group[group.len() - 1].bytes;
        let high = group.iter().map(|s| s.bytes).max().unwrap_or(last);
        let (high, last) = (unit.value(high), unit.value(last));
        match points.last() {
            Some(&(_, held)) if high > held.max(last) => points.extend([(time, held), (time, high), (time, last)]),
            Some(&(_, held)) if held != last => points.extend([(time, held), (time, last)]),
            Some(_) => {}
            None if high > last => points.extend([(time, high), (time, last)]),
            None => points.push((time, last)),
        }
    }
    if let Some(&(t, held)) = points.last() {
        if t < end {
            points.push((end, held));
        }
    }
    points
}

/// Draws the memory of `trace` in `frame`: time 0 to `x_max`, bytes 0 to a little over `y_max`.
pub(crate) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: Frame,
    trace: &Trace,
    x_max: f64,
    y_max: u64,
    unit: ByteUnit,
) -> DrawResult<DB> {
    let y_top = if y_max > 0 { unit.value(y_max) * 1.15 } else { 1.0 };
    let area = frame.area(root);
    let mut chart = frame.chart(&area, 0.0..x_max, 0.0..y_top)?;
    let y_label = |y: &f64| unit.axis_label(*y);
    draw_axes(&mut chart, 12, &time_label, Some(((frame.h / 30).max(2) as usize, &y_label)))?;

    let p = trace.ranks.len();
    let width = if p <= 8 { 2 } else { 1 };
    let lines: Vec<Vec<(f64, f64)>> = trace.ranks.iter().map(|rank| steps(&rank.memory, x_max, unit)).collect();
    for (r, line) in lines.iter().enumerate() {
        chart.draw_series(std::iter::once(PathElement::new(line.clone(), rank_colour(r, p).stroke_width(width))))?;
    }

    // Peaks: a dot on each line, ringed in white (when there are few) so it stands out where lines cross.
    let peaks: Vec<(f64, f64)> = trace
        .ranks
        .iter()
        .filter(|r| !r.memory.is_empty())
        .map(|r| (r.peak_time(), unit.value(r.peak_bytes())))
        .collect();
    let ranks_with_memory: Vec<usize> = (0..p).filter(|&r| !trace.ranks[r].memory.is_empty()).collect();
    let radius = if p <= LISTED { 4 } else { 3 };
    let ring = if p <= LISTED { 2 } else { 0 };
    for (&(t, b), &r) in peaks.iter().zip(&ranks_with_memory) {
        chart.draw_series([
            Circle::new((t, b), radius + ring, PAPER.filled()),
            Circle::new((t, b), radius, rank_colour(r, p).filled()),
        ])?;
    }

    // Peak values beside the dots, when every one fits.
    if p <= LISTED {
        let label_style = style(12.0, INK, false, HPos::Left, VPos::Top);
        let texts: Vec<String> = ranks_with_memory.iter().map(|&r| unit.format(trace.ranks[r].peak_bytes())).collect();
        let sizes: Vec<(u32, u32)> = texts
            .iter()
            .map(|t| root.estimate_text_size(t, &label_style).unwrap_or((8 * t.len() as u32, 12)))
            .collect();
        // Each label sits on a pale patch, 2 px wider on each side, so lines under it stay out of the way.
        let padded: Vec<(u32, u32)> = sizes.iter().map(|&(w, h)| (w + 4, h + 4)).collect();
        let dots: Vec<(i32, i32)> = peaks.iter().map(|pt| chart.backend_coord(pt)).collect();
        let pixel_lines: Vec<Vec<(i32, i32)>> =
            lines.iter().map(|line| line.iter().map(|pt| chart.backend_coord(pt)).collect()).collect();
        let bounds =
            Rect { x0: frame.left + 2, y0: frame.top + 2, x1: frame.right() - 2, y1: frame.top + frame.h as i32 - 2 };
        if let Some(corners) = peaks::place(&dots, &padded, &pixel_lines, bounds) {
            for (((text, (x, y)), &r), &(w, h)) in texts.into_iter().zip(corners).zip(&ranks_with_memory).zip(&padded) {
                let colour = rank_colour(r, p);
                root.draw(&Rectangle::new([(x, y), (x + w as i32, y + h as i32)], PAPER.filled()))?;
                root.draw(&Text::new(text, (x + 2, y + 2), style(12.0, colour, false, HPos::Left, VPos::Top)))?;
            }
        }
    }
    draw_table(root, frame, trace, unit)
}

/// The table right of the plot: colour, rank and peak of every rank (or a summary past `LISTED`).
fn draw_table<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: Frame,
    trace: &Trace,
    unit: ByteUnit,
) -> DrawResult<DB> {
    let p = trace.ranks.len();
    let x = frame.right() + 18;
    let x_end = frame.right() + LEGEND as i32 - 16;
    let mut y = frame.top + LINE as i32 / 2;
    let text = |s: String, at: (i32, i32), h: HPos, colour: RGBColor| {
        Text::new(s, at, style(13.0, colour, false, h, VPos::Center))
    };
    root.draw(&Text::new("peak", (x, y), style(13.0, INK, true, HPos::Left, VPos::Center)))?;
    if p <= LISTED {
        for (r, rank) in trace.ranks.iter().enumerate() {
            y += LINE as i32;
            let colour = rank_colour(r, p);
            root.draw(&PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(3)))?;
            root.draw(&Circle::new((x + 12, y), 4, colour.filled()))?;
            root.draw(&text(format!("rank {r}"), (x + 32, y), HPos::Left, INK))?;
            root.draw(&text(unit.format(rank.peak_bytes()), (x_end, y), HPos::Right, INK))?;
        }
        return Ok(());
    }
    // Too many ranks to list: the colour ramp, then the highest and lowest peaks.
    y += LINE as i32;
    let bar = (x_end - x).max(1) as f64;
    for r in 0..p {
        let x0 = x + (bar * r as f64 / p as f64) as i32;
        let x1 = x + (bar * (r + 1) as f64 / p as f64).ceil() as i32;
        root.draw(&Rectangle::new([(x0, y - 6), (x1, y + 6)], rank_colour(r, p).filled()))?;
    }
    y += LINE as i32;
    root.draw(&text("rank 0".into(), (x, y), HPos::Left, MUTED))?;
    root.draw(&text(format!("rank {}", p - 1), (x_end, y), HPos::Right, MUTED))?;
    let peaks: Vec<u64> = trace.ranks.iter().map(|r| r.peak_bytes()).collect();
    let extremes = [
        ("highest", peaks.iter().enumerate().max_by_key(|(_, &b)| b)),
        ("lowest", peaks.iter().enumerate().min_by_key(|(_, &b)| b)),
    ];
    for (what, found) in extremes {
        if let Some((r, &b)) = found {
            y += LINE as i32;
            root.draw(&text(format!("{what}: rank {r}"), (x, y), HPos::Left, INK))?;
            root.draw(&text(unit.format(b), (x_end, y), HPos::Right, INK))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_hold_each_value_until_the_next_sample() {
        let unit = ByteUnit { name: "B", bytes: 1 };
        let samples =
            [MemSample::new(0.0, 10), MemSample::new(1.0, 30), MemSample::new(1.0, 20), MemSample::new(2.0, 10)];
        let line = steps(&samples, 5.0, unit);
        assert_eq!(line, [(0.0, 10.0), (1.0, 10.0), (1.0, 30.0), (1.0, 20.0), (2.0, 20.0), (2.0, 10.0), (5.0, 10.0)]);
        // A dip at one instant is not drawn; a spike is.
        let dip = [MemSample::new(0.0, 10), MemSample::new(1.0, 5), MemSample::new(1.0, 10)];
        assert_eq!(steps(&dip, 1.0, unit), [(0.0, 10.0), (1.0, 10.0)]);
        // Times that differ only by rounding are one time.
        let noisy = [MemSample::new(0.0, 10), MemSample::new(8.649999999999999, 5), MemSample::new(8.65, 10)];
        assert_eq!(steps(&noisy, 10.0, unit), [(0.0, 10.0), (10.0, 10.0)]);
        let first = [MemSample::new(0.0, 7), MemSample::new(0.0, 3)];
        assert_eq!(steps(&first, 2.0, unit), [(0.0, 7.0), (0.0, 3.0), (2.0, 3.0)]);
        assert!(steps(&[], 5.0, unit).is_empty());
    }
}
