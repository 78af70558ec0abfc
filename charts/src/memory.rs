//! The memory panel: the bytes every rank holds over the shared time axis, one colour per rank,
//! each rank's peak marked with a dot, and a table right of the plot that names the colours and
//! gives every peak (a colour ramp and the extremes when there are too many ranks to list).
//!
//! - The byte axis spans the data, not 0 to the peak: it starts a little under the lowest held
//!   value (at 0 only when that is near 0 anyway), so a swing of a few MiB over a large static
//!   base shows; the static base is stated in the caption and, when every rank shares it, drawn
//!   as a dashed line.
//! - When messages are in flight (sent to a rank and not yet consumed), the line is the bytes the
//!   rank's stages hold and a pale band above it reaches the live total with the messages; the
//!   peak dot and the table give the live peak, the table the held peak beside it.
//! - A trace that counts no bytes at all gets no panel (see [`crate::curve::has_bytes`]).
//! - Past `MAX_LINES` ranks, every k-th rank's line is drawn, and the highest peak's.
//!
//! Invariant: the dot of a rank's peak (`RankTrace::peak_bytes` at `peak_time`) sits on the
//! line (or the band's top edge) it belongs to.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use pipesched_schedules::{MemSample, Trace};

use crate::curve::{extremes, has_in_flight, line, static_bytes};
use crate::page::{draw_axes, number_label, padded, style, DrawResult, Frame, LEGEND};
use crate::palette::{rank_colour, INK, MUTED, PAPER};
use crate::peaks;
use crate::rect::Rect;
use crate::units::{bytes, ordinal, ByteUnit};

/// Ranks listed one by one in the table, and drawn with bands; more are summarised.
const LISTED: usize = 16;
/// Most lines drawn; past this, every k-th rank's.
const MAX_LINES: usize = 64;
/// Height of one table line.
const LINE: u32 = 18;

/// The byte axis shared by the memory panels of one figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scale {
    /// Bottom and top of the axis, in `unit`.
    pub lo: f64,
    /// Top of the axis, in `unit`.
    pub hi: f64,
    /// The unit of every label.
    pub unit: ByteUnit,
}

impl Scale {
    /// The axis for `traces`: from a little under the lowest held value (never below 0) to well
    /// over the highest live one (room for the peak labels); `None` when none has samples.
    pub fn of<'a>(traces: impl Iterator<Item = &'a Trace>) -> Option<Scale> {
        let (lo, hi) = traces.filter_map(extremes).reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))?;
        let unit = ByteUnit::for_max(hi);
        let (lo, hi) = padded(unit.value(lo), unit.value(hi), 0.1, 0.25);
        Some(Scale { lo: lo.max(0.0), hi, unit })
    }
}

/// Pixel height of the plotting area for `trace`: tall enough for its table.
pub(crate) fn height(trace: &Trace) -> u32 {
    let n = trace.ranks.len();
    let table = if n <= LISTED { (n as u32 + 2) * LINE + 8 } else { 7 * LINE };
    table.max(220)
}

/// What the caption says about `trace`'s memory: its static base, and the band.
pub(crate) fn caption(trace: &Trace) -> String {
    let statics: Vec<u64> = trace.ranks.iter().filter_map(static_bytes).collect();
    let mut out = String::from("live memory per rank");
    if let (Some(&lo), Some(&hi)) = (statics.iter().min(), statics.iter().max()) {
        if hi == 0 {
            // Nothing static: nothing to say.
        } else if lo == hi {
            out.push_str(&format!(" · static {} on every rank", bytes(lo)));
        } else {
            out.push_str(&format!(" · static {} to {}", bytes(lo), bytes(hi)));
        }
    }
    if has_in_flight(trace) {
        if trace.ranks.len() <= LISTED {
            out.push_str(" · pale band: messages in flight");
        } else {
            out.push_str(" · with messages in flight");
        }
    }
    out
}

/// The ranks whose lines are drawn: all, or every k-th and the one with the highest peak.
fn drawn_ranks(trace: &Trace) -> (Vec<usize>, usize) {
    let p = trace.ranks.len();
    if p <= MAX_LINES {
        return ((0..p).collect(), 1);
    }
    let k = p.div_ceil(MAX_LINES / 2);
    let mut ranks: Vec<usize> = (0..p).step_by(k).collect();
    if let Some((top, _)) = trace.ranks.iter().enumerate().max_by_key(|(_, r)| r.peak_bytes()) {
        if !ranks.contains(&top) {
            ranks.push(top);
            ranks.sort_unstable();
        }
    }
    (ranks, k)
}

/// Draws the memory of `trace` in `frame`: time 0 to `x_max`, bytes on `scale`.
pub(crate) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: Frame,
    trace: &Trace,
    x_max: f64,
    scale: Scale,
) -> DrawResult<DB> {
    let unit = scale.unit;
    let area = frame.area(root);
    let mut chart = frame.chart(&area, 0.0..x_max, scale.lo..scale.hi)?;
    // Labels only where they are whole bytes or in a larger unit, never below 0.
    let y_label = |y: &f64| {
        if *y < 0.0 || (unit.bytes == 1 && y.fract() != 0.0) {
            String::new()
        } else {
            unit.axis_label(*y)
        }
    };
    draw_axes(&mut chart, 12, &number_label, Some(((frame.h / 30).max(2) as usize, &y_label)))?;

    let p = trace.ranks.len();
    let statics: Vec<u64> = trace.ranks.iter().filter_map(static_bytes).collect();
    let shared_static = statics.first().copied().filter(|&s| s > 0 && statics.iter().all(|&t| t == s));
    if let Some(s) = shared_static {
        let y = unit.value(s);
        chart.draw_series(DashedLineSeries::new([(0.0, y), (x_max, y)], 6, 4, MUTED.stroke_width(1)))?;
    }

    let band = has_in_flight(trace) && p <= LISTED;
    let width = if p <= 8 { 2 } else { 1 };
    let (ranks, every) = drawn_ranks(trace);
    let mut pixel_lines: Vec<Vec<(i32, i32)>> = Vec::new();
    for &r in &ranks {
        let samples = &trace.ranks[r].memory;
        let colour = rank_colour(r, p);
        let total = line(samples, |s: &MemSample| s.bytes, x_max, unit, frame.w);
        if band {
            let held = line(samples, MemSample::held, x_max, unit, frame.w);
            let mut outline = total.clone();
            outline.extend(held.iter().rev());
            chart.draw_series(std::iter::once(Polygon::new(outline, colour.mix(0.25).filled())))?;
            chart.draw_series(std::iter::once(PathElement::new(total.clone(), colour.mix(0.7).stroke_width(1))))?;
            chart.draw_series(std::iter::once(PathElement::new(held.clone(), colour.stroke_width(width))))?;
            pixel_lines.push(held.iter().map(|pt| chart.backend_coord(pt)).collect());
        } else {
            chart.draw_series(std::iter::once(PathElement::new(total.clone(), colour.stroke_width(width))))?;
        }
        pixel_lines.push(total.iter().map(|pt| chart.backend_coord(pt)).collect());
    }

    // Peaks: a dot on each drawn line, ringed in white (when there are few) so it stands out
    // where lines cross.
    let with_memory: Vec<usize> = ranks.iter().copied().filter(|&r| !trace.ranks[r].memory.is_empty()).collect();
    let peaks: Vec<(f64, f64)> =
        with_memory.iter().map(|&r| (trace.ranks[r].peak_time(), unit.value(trace.ranks[r].peak_bytes()))).collect();
    let radius = if p <= LISTED { 4 } else { 3 };
    let ring = if p <= LISTED { 2 } else { 0 };
    for (&(t, b), &r) in peaks.iter().zip(&with_memory) {
        chart.draw_series([
            Circle::new((t, b), radius + ring, PAPER.filled()),
            Circle::new((t, b), radius, rank_colour(r, p).filled()),
        ])?;
    }

    // Peak values beside the dots, when every one fits.
    if p <= LISTED {
        let label_style = style(12.0, INK, false, HPos::Left, VPos::Top);
        let texts: Vec<String> = with_memory.iter().map(|&r| unit.format(trace.ranks[r].peak_bytes())).collect();
        let sizes: Vec<(u32, u32)> = texts
            .iter()
            .map(|t| root.estimate_text_size(t, &label_style).unwrap_or((8 * t.len() as u32, 12)))
            .collect();
        // Each label sits on a pale patch, 2 px wider on each side, so lines under it stay out of the way.
        let padded: Vec<(u32, u32)> = sizes.iter().map(|&(w, h)| (w + 4, h + 4)).collect();
        let dots: Vec<(i32, i32)> = peaks.iter().map(|pt| chart.backend_coord(pt)).collect();
        if let Some(s) = shared_static {
            let (_, y) = chart.backend_coord(&(0.0, unit.value(s)));
            pixel_lines.push(vec![(frame.left, y), (frame.right(), y)]);
        }
        let bounds = Rect { x0: frame.left + 2, y0: frame.top + 2, x1: frame.right() - 2, y1: frame.bottom() - 2 };
        if let Some(corners) = peaks::place(&dots, &padded, &pixel_lines, bounds) {
            for (((text, (x, y)), &r), &(w, h)) in texts.into_iter().zip(corners).zip(&with_memory).zip(&padded) {
                let colour = rank_colour(r, p);
                root.draw(&Rectangle::new([(x, y), (x + w as i32, y + h as i32)], PAPER.filled()))?;
                root.draw(&Text::new(text, (x + 2, y + 2), style(12.0, colour, false, HPos::Left, VPos::Top)))?;
            }
        }
    }
    draw_table(root, frame, trace, unit, band, shared_static, every)
}

/// The table right of the plot: colour, rank and peak of every rank (and its held peak, with a
/// band), the static line; or a summary past `LISTED`.
fn draw_table<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    frame: Frame,
    trace: &Trace,
    unit: ByteUnit,
    band: bool,
    shared_static: Option<u64>,
    every: usize,
) -> DrawResult<DB> {
    let p = trace.ranks.len();
    let x = frame.right() + 18;
    let x_end = frame.right() + LEGEND as i32 - 16;
    let x_peak = if band { x_end - 72 } else { x_end };
    let mut y = frame.top + LINE as i32 / 2;
    let text = |s: String, at: (i32, i32), h: HPos, colour: RGBColor| {
        Text::new(s, at, style(13.0, colour, false, h, VPos::Center))
    };
    let bold = |s: &str, at: (i32, i32), h: HPos| Text::new(s.to_string(), at, style(13.0, INK, true, h, VPos::Center));
    if p <= LISTED {
        root.draw(&bold("peak", (x_peak, y), HPos::Right))?;
        if band {
            root.draw(&bold("held", (x_end, y), HPos::Right))?;
        }
        for (r, rank) in trace.ranks.iter().enumerate() {
            y += LINE as i32;
            let colour = rank_colour(r, p);
            root.draw(&PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(3)))?;
            root.draw(&Circle::new((x + 12, y), 4, colour.filled()))?;
            root.draw(&text(format!("rank {r}"), (x + 32, y), HPos::Left, INK))?;
            root.draw(&text(unit.format(rank.peak_bytes()), (x_peak, y), HPos::Right, INK))?;
            if band {
                root.draw(&text(unit.format(rank.peak_held_bytes()), (x_end, y), HPos::Right, INK))?;
            }
        }
    } else {
        // Too many ranks to list: the colour ramp, then the highest and lowest peaks.
        root.draw(&bold("peak", (x, y), HPos::Left))?;
        y += LINE as i32;
        let bar = (x_end - x).max(1);
        for px in 0..bar {
            let r = (px as usize * p) / bar as usize;
            root.draw(&Rectangle::new([(x + px, y - 6), (x + px + 1, y + 6)], rank_colour(r, p).filled()))?;
        }
        y += LINE as i32;
        root.draw(&text("rank 0".into(), (x, y), HPos::Left, MUTED))?;
        root.draw(&text(format!("rank {}", p - 1), (x_end, y), HPos::Right, MUTED))?;
        let peaks = || trace.ranks.iter().map(|r| r.peak_bytes()).enumerate();
        let extremes = [("highest", peaks().max_by_key(|&(_, b)| b)), ("lowest", peaks().min_by_key(|&(_, b)| b))];
        for (what, found) in extremes {
            if let Some((r, b)) = found {
                y += LINE as i32;
                root.draw(&text(format!("{what}: rank {r}"), (x, y), HPos::Left, INK))?;
                root.draw(&text(bytes(b), (x_end, y), HPos::Right, INK))?;
            }
        }
        if every > 1 {
            y += LINE as i32;
            let what = format!("lines: every {} rank, and the highest", ordinal(every));
            root.draw(&text(what, (x, y), HPos::Left, MUTED))?;
        }
    }
    if let Some(s) = shared_static {
        y += LINE as i32;
        for x0 in [x, x + 10, x + 20] {
            root.draw(&PathElement::new([(x0, y), (x0 + 5, y)], MUTED.stroke_width(1)))?;
        }
        root.draw(&text("static".into(), (x + 32, y), HPos::Left, MUTED))?;
        root.draw(&text(bytes(s), (x_peak, y), HPos::Right, MUTED))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_schedules::{simulate, CostModel, Kind, StageCost, StageCosts};

    fn trace(p: usize, act: u64, statics: u64) -> Trace {
        let costs = CostModel {
            costs: StageCosts::PerRank(StageCost { act_bytes: act, ..StageCost::times(1.0, 1.0, 1.0) }),
            latency: 0.0,
            bandwidth: None,
            static_bytes: vec![statics],
            host_link: None,
            time_unit: "ms".into(),
        };
        simulate(&Kind::OneFOneB.generate(p, 1, p.max(8)).unwrap(), &costs).unwrap()
    }

    #[test]
    fn the_axis_shows_the_swing_over_a_large_static_base() {
        // 32 MiB static, 1 MiB per micro-batch in flight: rank 0 swings from 32 to 36 MiB.
        let t = trace(4, 1 << 20, 32 << 20);
        let s = Scale::of(std::iter::once(&t)).unwrap();
        assert_eq!(s.unit.name, "MiB");
        assert_eq!((s.lo, s.hi), (31.6, 37.0));
        assert_eq!(caption(&t), "live memory per rank · static 32 MiB on every rank");
        // Not even near 0: a 64 MiB swing over 256 MiB still starts near 256 MiB.
        let t = trace(4, 16 << 20, 256 << 20);
        assert_eq!(Scale::of(std::iter::once(&t)).unwrap().lo, 249.6);
        // Nothing static: the axis starts at 0, not below, and the caption has nothing to state.
        let t = trace(4, 1 << 20, 0);
        assert_eq!(Scale::of(std::iter::once(&t)).unwrap().lo, 0.0);
        assert_eq!(caption(&t), "live memory per rank");
        // Flat and nonzero: still a panel, around the value.
        let t = trace(4, 0, 32 << 20);
        let s = Scale::of(std::iter::once(&t)).unwrap();
        assert_eq!((s.lo, s.hi), (28.8, 35.2));
    }

    #[test]
    fn many_ranks_draw_every_kth_line_and_the_highest() {
        let t = trace(100, 1 << 20, 0);
        let (ranks, k) = drawn_ranks(&t);
        assert_eq!(k, 4);
        assert_eq!(ranks.len(), 25);
        assert!(ranks.contains(&0) && ranks.contains(&96));
        let t = trace(8, 1 << 20, 0);
        assert_eq!(drawn_ranks(&t), ((0..8).collect(), 1));
    }
}
