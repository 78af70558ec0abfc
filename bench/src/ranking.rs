//! Which configuration is fastest, and whether this run can tell: the one rule the Markdown table
//! and both benchmark charts mark by.
//!
//! The rule:
//! 1. The leader is the configuration with the highest median throughput (the first of them, if
//!    several share it). Configurations whose throughput is not a finite number take no part.
//! 2. A configuration's spread is the throughput of its slowest to its fastest measured step
//!    (with `--simulate-only`, the single simulated value).
//! 3. The leader is **best** when no other configuration's spread overlaps its own (touching
//!    counts as overlapping). Otherwise the leader and every configuration whose spread overlaps
//!    the leader's are **tied**: the run-to-run noise is as large as the gap between them, and
//!    another run could order them differently.
//! 4. With fewer than two configurations taking part, nothing is marked.
//!
//! Invariant: at most one configuration is best; if one is, none is tied; every tied
//! configuration's spread overlaps the leader's.

use crate::sweep::Row;

/// A configuration's throughput: its median and its spread over the measured steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median throughput.
    pub median: f64,
    /// Throughput of the slowest measured step.
    pub lo: f64,
    /// Throughput of the fastest measured step.
    pub hi: f64,
}

impl Spread {
    /// The spread of a benchmark row.
    pub fn of(row: &Row) -> Spread {
        Spread { median: row.throughput, lo: row.throughput_range.0, hi: row.throughput_range.1 }
    }

    /// The interval the rule compares: `lo..=hi` widened to contain the median, a non-finite end
    /// replaced by the median; `None` when the median itself is not finite.
    fn interval(self) -> Option<(f64, f64)> {
        let m = self.median;
        if !m.is_finite() {
            return None;
        }
        let lo = if self.lo.is_finite() { self.lo.min(m) } else { m };
        let hi = if self.hi.is_finite() { self.hi.max(m) } else { m };
        Some((lo, hi))
    }
}

/// Where a configuration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Standing {
    /// The fastest, and clear of every other configuration's spread.
    Best,
    /// Fastest or within the fastest's spread: this run cannot rank it against the leader.
    Tied,
    /// Neither.
    #[default]
    Rest,
}

impl Standing {
    /// How a table or chart marks it: `★ best`, `tied`, or nothing.
    pub fn mark(self) -> &'static str {
        match self {
            Standing::Best => "★ best",
            Standing::Tied => "tied",
            Standing::Rest => "",
        }
    }
}

/// The standing of each of `spreads`, in the same order.
pub fn standings(spreads: &[Spread]) -> Vec<Standing> {
    let mut out = vec![Standing::Rest; spreads.len()];
    let intervals: Vec<Option<(f64, f64)>> = spreads.iter().map(|s| s.interval()).collect();
    if intervals.iter().flatten().count() < 2 {
        return out;
    }
    let leader = (0..spreads.len()).filter(|&i| intervals[i].is_some()).reduce(|a, b| {
        if spreads[b].median > spreads[a].median {
            b
        } else {
            a
        }
    });
    let Some(leader) = leader else { return out };
    let Some((lead_lo, lead_hi)) = intervals[leader] else { return out };
    let overlapping: Vec<usize> = (0..spreads.len())
        .filter(|&i| i != leader)
        .filter(|&i| intervals[i].is_some_and(|(lo, hi)| lo <= lead_hi && lead_lo <= hi))
        .collect();
    if overlapping.is_empty() {
        out[leader] = Standing::Best;
    } else {
        out[leader] = Standing::Tied;
        for i in overlapping {
            out[i] = Standing::Tied;
        }
    }
    out
}

/// The standings of benchmark rows.
pub fn of_rows(rows: &[Row]) -> Vec<Standing> {
    standings(&rows.iter().map(Spread::of).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Standing::{Best, Rest, Tied};

    fn s(median: f64, lo: f64, hi: f64) -> Spread {
        Spread { median, lo, hi }
    }

    #[test]
    fn a_clear_winner_is_best() {
        // 100 (95–104) against 90 (86–94): no overlap.
        assert_eq!(standings(&[s(90.0, 86.0, 94.0), s(100.0, 95.0, 104.0), s(50.0, 40.0, 60.0)]), [Rest, Best, Rest]);
    }

    #[test]
    fn overlapping_spreads_are_tied_with_the_leader() {
        // The runner-up reaches 96 > the leader's slowest 95: tied. The third does not overlap.
        assert_eq!(standings(&[s(100.0, 95.0, 104.0), s(92.0, 88.0, 96.0), s(80.0, 70.0, 90.0)]), [Tied, Tied, Rest]);
        // Touching counts.
        assert_eq!(standings(&[s(100.0, 95.0, 104.0), s(90.0, 85.0, 95.0)]), [Tied, Tied]);
        // A slower median with a wide spread overlaps even when the runner-up does not.
        assert_eq!(standings(&[s(100.0, 98.0, 101.0), s(97.0, 96.0, 97.5), s(90.0, 60.0, 99.0)]), [Tied, Rest, Tied]);
    }

    #[test]
    fn equal_medians_without_spread_are_tied() {
        // --simulate-only: every spread is one value.
        assert_eq!(standings(&[s(50.0, 50.0, 50.0), s(50.0, 50.0, 50.0), s(40.0, 40.0, 40.0)]), [Tied, Tied, Rest]);
        assert_eq!(standings(&[s(50.0, 50.0, 50.0), s(49.9, 49.9, 49.9)]), [Best, Rest]);
    }

    #[test]
    fn too_few_or_unusable_configurations_mark_nothing() {
        assert_eq!(standings(&[]), []);
        assert_eq!(standings(&[s(10.0, 9.0, 11.0)]), [Rest]);
        assert_eq!(standings(&[s(f64::NAN, 1.0, 2.0), s(10.0, 9.0, 11.0)]), [Rest, Rest]);
        // A non-finite median takes no part; non-finite ends fall back to the median.
        assert_eq!(
            standings(&[s(f64::INFINITY, 0.0, 0.0), s(10.0, f64::NAN, 11.0), s(8.0, 7.0, f64::INFINITY)]),
            [Rest, Best, Rest]
        );
        // A spread that does not contain its median is widened to it.
        assert_eq!(standings(&[s(10.0, 11.0, 12.0), s(9.0, 8.0, 9.5)]), [Best, Rest]);
        assert_eq!(standings(&[s(10.0, 11.0, 12.0), s(9.0, 8.0, 10.0)]), [Tied, Tied]);
    }

    #[test]
    fn marks() {
        assert_eq!((Best.mark(), Tied.mark(), Rest.mark()), ("★ best", "tied", ""));
    }
}
