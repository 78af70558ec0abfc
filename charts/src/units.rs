//! Numbers as a reader wants them on a chart: byte counts in one binary unit chosen from the data
//! (B, KiB, MiB, GiB, TiB), times with a few significant digits, and the one-line summary of a
//! trace used in titles and captions.
//!
//! Invariant: every label of one axis uses the same unit, the one that puts the largest value of
//! the data between 1 and 1024.

use pipesched_schedules::{Source, Stats, Trace};

/// A binary byte unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteUnit {
    /// Its name (`MiB`).
    pub name: &'static str,
    /// Bytes in one unit.
    pub bytes: u64,
}

impl ByteUnit {
    /// The unit for data whose largest value is `max` bytes.
    pub fn for_max(max: u64) -> ByteUnit {
        const NAMES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut k = 0;
        while k + 1 < NAMES.len() && max >= 1u64 << (10 * (k + 1)) {
            k += 1;
        }
        ByteUnit { name: NAMES[k], bytes: 1u64 << (10 * k) }
    }

    /// `bytes` in this unit.
    pub fn value(self, bytes: u64) -> f64 {
        bytes as f64 / self.bytes as f64
    }

    /// An axis label for `value` (already in this unit).
    pub fn axis_label(self, value: f64) -> String {
        format!("{} {}", short(value), self.name)
    }

    /// `bytes` written in this unit (`1.25 GiB`).
    pub fn format(self, bytes: u64) -> String {
        self.axis_label(self.value(bytes))
    }
}

/// `x` with about three significant digits and no trailing zeros (`12.5`, `0.125`, `1250`).
pub fn short(x: f64) -> String {
    if !x.is_finite() {
        return "?".into();
    }
    let a = x.abs();
    let digits = if a >= 100.0 || a == 0.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `n` as an ordinal: `1st`, `2nd`, `3rd`, `4th`, … `11th`, `12th`, `13th`, … `21st`, `32nd`.
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `bytes` in the unit that suits it alone (`32 MiB`, `1.03 GiB`).
pub fn bytes(n: u64) -> String {
    ByteUnit::for_max(n).format(n)
}

/// `schedule · p=4 m=8 v=2 · makespan 35.2 ms · bubble 12.3 %`: what a trace is and how it went
/// (`v` only when a rank holds more than one chunk). It does not say who made the trace; see
/// [`source_name`].
pub fn summary(trace: &Trace, stats: &Stats) -> String {
    let chunks = if trace.v > 1 { format!(" v={}", trace.v) } else { String::new() };
    let sums = if trace.sums.is_empty() {
        String::new()
    } else {
        format!(" · {} {} with the gradient sums", short(trace.step_end()), trace.time_unit)
    };
    format!(
        "{} · p={} m={}{chunks} · makespan {} {} · bubble {:.1} %{sums}",
        trace.schedule,
        trace.p,
        trace.m,
        short(stats.makespan),
        trace.time_unit,
        100.0 * stats.bubble_rate,
    )
}

/// Who made a trace, as charts say it: `simulated` or `measured`.
pub fn source_name(source: Source) -> &'static str {
    match source {
        Source::Simulated => "simulated",
        Source::Measured => "measured",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_chosen_from_the_largest_value() {
        assert_eq!(ByteUnit::for_max(0).name, "B");
        assert_eq!(ByteUnit::for_max(1023).name, "B");
        assert_eq!(ByteUnit::for_max(1024).name, "KiB");
        assert_eq!(ByteUnit::for_max(300 << 20).name, "MiB");
        assert_eq!(ByteUnit::for_max(3 << 30).name, "GiB");
        assert_eq!(ByteUnit::for_max(u64::MAX).name, "TiB");
        assert_eq!(ByteUnit::for_max(3 << 30).format(5 << 29), "2.5 GiB");
    }

    #[test]
    fn ordinals_and_lone_byte_counts() {
        let words: Vec<String> = [1, 2, 3, 4, 5, 11, 12, 13, 21, 22, 32, 101, 111].into_iter().map(ordinal).collect();
        assert_eq!(
            words,
            ["1st", "2nd", "3rd", "4th", "5th", "11th", "12th", "13th", "21st", "22nd", "32nd", "101st", "111th"]
        );
        assert_eq!(bytes(32 << 20), "32 MiB");
        assert_eq!(bytes(0), "0 B");
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(35.26), "35.3");
        assert_eq!(short(0.0), "0");
        assert_eq!(short(1250.0), "1250");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(0.125), "0.125");
        assert_eq!(short(f64::NAN), "?");
    }
}
