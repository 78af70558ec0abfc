//! Downsampling a timeline row to its pixel columns, for spans too narrow to draw as boxes (or
//! rows holding several ranks): each column gets the op (and chunk shade) that spent the most
//! time in it, drawn as a bar whose height is the column's busy share.
//!
//! Invariant: the drawing of a row costs at most one run per pixel column whatever the number of
//! spans, every busy column is visible (at least one pixel high), and a column's height never
//! exceeds the box height: a column fully busy on every rank of the row is a full box.

use pipesched_schedules::Op;

use crate::palette::SHADES;

/// Ops × shades: the keys a column's time is split by.
const KEYS: usize = Op::ALL.len() * SHADES;

/// What fills a run: an op on a chunk shade (0 … `SHADES` − 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    /// The op.
    pub op: Op,
    /// The chunk, with 3 and up as 3.
    pub shade: usize,
}

impl Key {
    fn index(self) -> usize {
        let op = Op::ALL.iter().position(|&o| o == self.op).unwrap_or(0);
        op * SHADES + self.shade.min(SHADES - 1)
    }

    fn of(index: usize) -> Key {
        Key { op: Op::ALL[index / SHADES], shade: index % SHADES }
    }
}

/// Neighbouring pixel columns with the same key and height, drawn as one bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// First column.
    pub c0: u32,
    /// One past the last column.
    pub c1: u32,
    /// The op and shade with the most time in these columns.
    pub key: Key,
    /// Bar height in pixels, 1 to the box height.
    pub height: u32,
}

/// Busy time per pixel column and key of one row.
pub(crate) struct Raster {
    /// Time per column per key; `KEYS` entries per column.
    time: Vec<f64>,
    /// Columns.
    w: usize,
    /// Time one column spans.
    col: f64,
}

impl Raster {
    /// An empty raster of `w` columns over the times 0 to `x_max`.
    pub fn new(w: u32, x_max: f64) -> Raster {
        let w = w as usize;
        let col = if w > 0 && x_max > 0.0 && x_max.is_finite() { x_max / w as f64 } else { 0.0 };
        Raster { time: vec![0.0; w * KEYS], w, col }
    }

    /// Forgets every span added, keeping the buffer.
    pub fn clear(&mut self) {
        self.time.fill(0.0);
    }

    /// Adds a span from `start` to `end` (clipped to the raster's times) spent on `key`.
    pub fn add(&mut self, start: f64, end: f64, key: Key) {
        if self.col <= 0.0 || !(start.is_finite() && end.is_finite()) || end <= start {
            return;
        }
        let last = self.w - 1;
        let column = |t: f64| ((t / self.col).floor().max(0.0) as usize).min(last);
        let k = key.index();
        for c in column(start)..=column(end) {
            let (lo, hi) = (c as f64 * self.col, (c + 1) as f64 * self.col);
            let overlap = end.min(hi) - start.max(lo);
            if overlap > 0.0 {
                self.time[c * KEYS + k] += overlap;
            }
        }
    }

    /// The bars of the row: per column, the key with the most time and a height of `box_h`
    /// pixels times the busy share (time over `ranks` × the column's span, at most 1), rounded up;
    /// neighbouring columns alike merged into one run.
    pub fn runs(&self, ranks: usize, box_h: u32) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        if self.col <= 0.0 || box_h == 0 {
            return runs;
        }
        let capacity = self.col * ranks.max(1) as f64;
        for (c, keys) in self.time.chunks_exact(KEYS).enumerate() {
            let total: f64 = keys.iter().sum();
            if total <= 0.0 {
                continue;
            }
            let (best, _) = keys.iter().enumerate().fold((0, 0.0), |acc, (i, &t)| if t > acc.1 { (i, t) } else { acc });
            let share = (total / capacity).min(1.0);
            let height = ((share * box_h as f64).ceil() as u32).clamp(1, box_h);
            let (key, c) = (Key::of(best), c as u32);
            match runs.last_mut() {
                Some(run) if run.c1 == c && run.key == key && run.height == height => run.c1 = c + 1,
                _ => runs.push(Run { c0: c, c1: c + 1, key, height }),
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Key = Key { op: Op::F, shade: 0 };
    const B: Key = Key { op: Op::B, shade: 0 };

    #[test]
    fn columns_take_the_op_with_most_time_and_the_busy_share_as_height() {
        // 10 columns over 0..10: one time unit each.
        let mut r = Raster::new(10, 10.0);
        r.add(0.0, 0.25, F);
        r.add(0.25, 1.0, B);
        r.add(1.0, 3.0, F);
        r.add(5.5, 6.0, B);
        let runs = r.runs(1, 20);
        assert_eq!(
            runs,
            [
                Run { c0: 0, c1: 1, key: B, height: 20 },
                Run { c0: 1, c1: 3, key: F, height: 20 },
                Run { c0: 5, c1: 6, key: B, height: 10 },
            ]
        );
        // Two ranks in the row: the same time is half as busy.
        assert_eq!(r.runs(2, 20)[2], Run { c0: 5, c1: 6, key: B, height: 5 });
        // A sliver is still a pixel high; overlapping spans never overflow the box.
        let mut r = Raster::new(10, 10.0);
        r.add(2.0, 2.001, F);
        r.add(4.0, 5.0, F);
        r.add(4.0, 5.0, F);
        assert_eq!(r.runs(1, 20), [Run { c0: 2, c1: 3, key: F, height: 1 }, Run { c0: 4, c1: 5, key: F, height: 20 }]);
        r.clear();
        assert!(r.runs(1, 20).is_empty());
    }

    #[test]
    fn odd_spans_are_clipped_or_ignored() {
        let mut r = Raster::new(4, 4.0);
        r.add(-3.0, 0.5, F);
        r.add(3.5, 99.0, B);
        r.add(f64::NAN, 1.0, F);
        r.add(2.0, 1.0, F);
        let runs = r.runs(1, 10);
        assert_eq!(runs, [Run { c0: 0, c1: 1, key: F, height: 5 }, Run { c0: 3, c1: 4, key: B, height: 5 }]);
        // No time axis or no columns: nothing.
        let mut r = Raster::new(0, 4.0);
        r.add(0.0, 1.0, F);
        assert!(r.runs(1, 10).is_empty());
        let mut r = Raster::new(4, 0.0);
        r.add(0.0, 1.0, F);
        assert!(r.runs(1, 10).is_empty());
    }

    #[test]
    fn keys_round_trip_and_cap_the_shade() {
        for op in Op::ALL {
            for shade in 0..SHADES {
                assert_eq!(Key::of(Key { op, shade }.index()), Key { op, shade });
            }
        }
        assert_eq!(Key::of(Key { op: Op::W, shade: 9 }.index()), Key { op: Op::W, shade: SHADES - 1 });
    }
}
