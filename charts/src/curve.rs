//! One rank's memory as a line a chart can draw: its held bytes, or its live bytes (held plus
//! messages in flight), as a step function of time — exact while the rank has few samples, thinned
//! to each pixel column's extremes when it has many. Also what the memory panel asks of a trace:
//! whether it counts bytes at all, whether messages are in flight, and each rank's static bytes.
//!
//! Invariant: the line follows the step function — from each time on it holds the last sample of
//! that time and it reaches the highest sample of every time — so a peak always sits on it; a dip
//! that lasts no time is not drawn, as it holds nothing. Thinned, a line keeps every column's
//! highest and lowest held value, so no peak or trough is lost, and has at most four points per
//! pixel column.

use pipesched_schedules::{MemSample, RankTrace, Trace};

use crate::units::ByteUnit;

/// Samples per pixel column above which a line is thinned.
const EXACT_PER_COLUMN: usize = 4;

/// Whether any rank of `trace` ever counts a byte: a trace whose every sample is 0 (or that has
/// none) gets no memory panel.
pub(crate) fn has_bytes(trace: &Trace) -> bool {
    trace.ranks.iter().any(|r| r.memory.iter().any(|s| s.bytes > 0))
}

/// Whether any rank of `trace` has messages in flight at some time.
pub(crate) fn has_in_flight(trace: &Trace) -> bool {
    trace.ranks.iter().any(|r| r.memory.iter().any(|s| s.in_flight > 0))
}

/// The bytes a rank holds before its first action: its first sample's held bytes (static
/// bytes: parameters, gradients, optimizer state).
pub(crate) fn static_bytes(rank: &RankTrace) -> Option<u64> {
    rank.memory.first().map(MemSample::held)
}

/// The lowest held and highest live byte count of `trace`, if it has samples.
pub(crate) fn extremes(trace: &Trace) -> Option<(u64, u64)> {
    let samples = || trace.ranks.iter().flat_map(|r| r.memory.iter());
    let lo = samples().map(MemSample::held).min()?;
    let hi = samples().map(|s| s.bytes).max()?;
    Some((lo, hi))
}

/// The line of `value` over `samples`, in (time, bytes in `unit`), extended to `end`, for a plot
/// `w` pixels wide.
///
/// Exact (at most `EXACT_PER_COLUMN` samples per column on average): samples sharing a time (to
/// within 1/1000 of `end` of the group's first, about a pixel and a half at the widest chart,
/// which absorbs both the rounding of sums of durations and the microsecond gaps between one
/// action's end and the next one's start in measured traces) are one vertical move from the value
/// before them to the last of them, reaching up to the highest of them on the way if that is
/// higher still. Thinned: the
/// samples of each pixel column are one vertical move at the column's first sample, through the
/// highest sample and the lowest value held for some time, to the last.
pub(crate) fn line(
    samples: &[MemSample],
    value: impl Fn(&MemSample) -> u64,
    end: f64,
    unit: ByteUnit,
    w: u32,
) -> Vec<(f64, f64)> {
    let finite = samples.iter().filter(|s| s.time.is_finite());
    let mut points: Vec<(f64, f64)> = Vec::new();
    if samples.len() <= EXACT_PER_COLUMN * w.max(1) as usize {
        let eps = end.abs() * 1e-3;
        // The group being gathered: its first time, highest value and last value.
        let mut open: Option<(f64, u64, u64)> = None;
        for s in finite {
            let v = value(s);
            match &mut open {
                Some((t0, high, last)) if (s.time - *t0).abs() <= eps => {
                    *high = (*high).max(v);
                    *last = v;
                }
                _ => {
                    if let Some((t0, high, last)) = open.take() {
                        step(&mut points, t0, high, None, last, unit);
                    }
                    open = Some((s.time, v, v));
                }
            }
        }
        if let Some((t0, high, last)) = open {
            step(&mut points, t0, high, None, last, unit);
        }
    } else {
        let col = if end > 0.0 { end / w as f64 } else { 1.0 };
        let column = |t: f64| (t / col).floor().max(0.0) as u64;
        let mut open: Option<Column> = None;
        for s in finite {
            let (c, v) = (column(s.time), value(s));
            match &mut open {
                Some(o) if o.index == c => {
                    if s.time > o.last.0 {
                        o.low = Some(o.low.map_or(o.last.1, |l| l.min(o.last.1)));
                    }
                    o.high = o.high.max(v);
                    o.last = (s.time, v);
                }
                _ => {
                    if let Some(o) = open.take() {
                        step(&mut points, o.first, o.high, o.low, o.last.1, unit);
                    }
                    open = Some(Column { index: c, first: s.time, high: v, low: None, last: (s.time, v) });
                }
            }
        }
        if let Some(o) = open {
            step(&mut points, o.first, o.high, o.low, o.last.1, unit);
        }
    }
    if let Some(&(t, held)) = points.last() {
        if t < end {
            points.push((end, held));
        }
    }
    points
}

/// The samples of one pixel column being gathered by a thinned line.
struct Column {
    /// Which column.
    index: u64,
    /// Time of its first sample.
    first: f64,
    /// Its highest sample.
    high: u64,
    /// Its lowest value held for some time, once one is known.
    low: Option<u64>,
    /// The sample seen last: held only if a later time follows it.
    last: (f64, u64),
}

/// Appends the vertical move at `time` from the value held before it (if any) up to `high`, down
/// to `low` (when lower than where the move ends) and to `last`, leaving out points that draw
/// nothing.
fn step(points: &mut Vec<(f64, f64)>, time: f64, high: u64, low: Option<u64>, last: u64, unit: ByteUnit) {
    let (high, last) = (unit.value(high), unit.value(last));
    let low = low.map(|l| unit.value(l)).filter(|&l| l < last);
    let before = points.last().map(|&(_, held)| held);
    let mut push = |y: f64| {
        if points.last() != Some(&(time, y)) {
            points.push((time, y));
        }
    };
    match before {
        Some(held) if held == last && high <= held && low.is_none() => return,
        Some(held) => push(held),
        None => {}
    }
    if high > last && Some(high) > before {
        push(high);
    }
    if let Some(l) = low {
        push(l);
    }
    push(last);
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: ByteUnit = ByteUnit { name: "B", bytes: 1 };

    fn bytes(s: &MemSample) -> u64 {
        s.bytes
    }

    #[test]
    fn exact_lines_hold_each_value_until_the_next_sample() {
        let samples =
            [MemSample::new(0.0, 10), MemSample::new(1.0, 30), MemSample::new(1.0, 20), MemSample::new(2.0, 10)];
        let line = line(&samples, bytes, 5.0, B, 100);
        assert_eq!(line, [(0.0, 10.0), (1.0, 10.0), (1.0, 30.0), (1.0, 20.0), (2.0, 20.0), (2.0, 10.0), (5.0, 10.0)]);
        // A dip at one instant is not drawn; a spike is.
        let dip = [MemSample::new(0.0, 10), MemSample::new(1.0, 5), MemSample::new(1.0, 10)];
        assert_eq!(super::line(&dip, bytes, 1.0, B, 100), [(0.0, 10.0), (1.0, 10.0)]);
        // Times that differ only by rounding are one time.
        let noisy = [MemSample::new(0.0, 10), MemSample::new(8.649999999999999, 5), MemSample::new(8.65, 10)];
        assert_eq!(super::line(&noisy, bytes, 10.0, B, 100), [(0.0, 10.0), (10.0, 10.0)]);
        // Samples closer than that to each other, in a chain, are still separate times: a group
        // is measured from its first sample.
        let chain: Vec<MemSample> = (0..6).map(|k| MemSample::new(k as f64 * 0.008, 10 + k)).collect();
        let drawn = super::line(&chain, bytes, 10.0, B, 100);
        assert_eq!(drawn, [(0.0, 11.0), (0.016, 11.0), (0.016, 13.0), (0.032, 13.0), (0.032, 15.0), (10.0, 15.0)]);
        let first = [MemSample::new(0.0, 7), MemSample::new(0.0, 3)];
        assert_eq!(super::line(&first, bytes, 2.0, B, 100), [(0.0, 7.0), (0.0, 3.0), (2.0, 3.0)]);
        assert!(super::line(&[], bytes, 5.0, B, 100).is_empty());
        // Held bytes leave the messages in flight out.
        let flight =
            [MemSample { time: 0.0, bytes: 10, in_flight: 4 }, MemSample { time: 1.0, bytes: 12, in_flight: 0 }];
        assert_eq!(
            super::line(&flight, MemSample::held, 2.0, B, 100),
            [(0.0, 6.0), (1.0, 6.0), (1.0, 12.0), (2.0, 12.0)]
        );
    }

    #[test]
    fn thinned_lines_keep_each_columns_extremes() {
        // Two columns over 0..2; nine samples, more than four per column.
        let s = |t: f64, b: u64| MemSample::new(t, b);
        let samples = [
            s(0.0, 10),
            s(0.2, 50),
            s(0.4, 5), // lasts no time: not drawn
            s(0.4, 20),
            s(0.6, 15),
            s(1.0, 30),
            s(1.5, 40), // lasts no time, but a peak is reached
            s(1.5, 0),  // held until 1.9: drawn
            s(1.9, 25),
        ];
        let line = line(&samples, bytes, 2.0, B, 2);
        let expected = [(0.0, 50.0), (0.0, 10.0), (0.0, 15.0), (1.0, 15.0), (1.0, 40.0), (1.0, 0.0), (1.0, 25.0)];
        assert_eq!(line[..7], expected);
        assert_eq!(line[7..], [(2.0, 25.0)]);
        // At most four points per column plus the end, however many samples.
        let many: Vec<MemSample> = (0..10_000).map(|k| s(k as f64 * 1e-3, (k * 7919 % 1000) as u64)).collect();
        let thin = super::line(&many, bytes, 10.0, B, 100);
        assert!(thin.len() <= 4 * 100 + 1, "{}", thin.len());
        let top = thin.iter().map(|p| p.1).fold(0.0, f64::max);
        assert_eq!(top, 999.0);
    }

    #[test]
    fn what_a_trace_counts() {
        let rank = |samples: Vec<MemSample>| RankTrace { memory: samples, ..RankTrace::default() };
        let trace = |ranks| Trace {
            source: pipesched_schedules::Source::Simulated,
            schedule: "x".into(),
            p: 2,
            v: 1,
            m: 1,
            placement: pipesched_schedules::Placement::Loop,
            time_unit: "ms".into(),
            ranks,
            transfers: pipesched_schedules::Transfers::Latency(0.0),
            sums: vec![],
        };
        let zero = trace(vec![rank(vec![MemSample::new(0.0, 0)]), rank(vec![])]);
        assert!(!has_bytes(&zero) && !has_in_flight(&zero));
        assert_eq!(extremes(&zero), Some((0, 0)));
        let flat = trace(vec![rank(vec![MemSample::new(0.0, 7)]), rank(vec![])]);
        assert!(has_bytes(&flat));
        let moving = trace(vec![
            rank(vec![MemSample::new(0.0, 32), MemSample { time: 1.0, bytes: 40, in_flight: 3 }]),
            rank(vec![MemSample::new(0.0, 30), MemSample::new(2.0, 31)]),
        ]);
        assert!(has_bytes(&moving) && has_in_flight(&moving));
        assert_eq!(extremes(&moving), Some((30, 40)));
        assert_eq!(static_bytes(&moving.ranks[0]), Some(32));
        assert_eq!(extremes(&trace(vec![rank(vec![]), rank(vec![])])), None);
    }
}
