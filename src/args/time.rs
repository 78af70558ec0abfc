//! Times as flags and specs write them: a number with an optional unit, `us` (or `µs`), `ms` or
//! `s` — `2ms`, `500us`, `0.1s`, `1.5`, `1e3`.
//!
//! Invariant: a parsed [`Time`] is finite and ≥ 0, and keeps whether a unit was written, so a
//! caller can tell `2` (in whatever unit it works in) from `2ms`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A unit of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl TimeUnit {
    /// Milliseconds in one of this unit.
    pub fn in_ms(self) -> f64 {
        match self {
            TimeUnit::Us => 1e-3,
            TimeUnit::Ms => 1.0,
            TimeUnit::S => 1e3,
        }
    }
}

impl fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeUnit::Us => "us",
            TimeUnit::Ms => "ms",
            TimeUnit::S => "s",
        })
    }
}

/// A time read from text: a number and the unit written after it, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Time {
    /// The number as written.
    pub value: f64,
    /// The unit written after it.
    pub unit: Option<TimeUnit>,
}

impl Time {
    /// The time in milliseconds, if a unit was written.
    pub fn ms(self) -> Option<f64> {
        self.unit.map(|u| self.value * u.in_ms())
    }

    /// The time as a [`Duration`], reading a number without a unit in `bare`; at most
    /// `MAX_DURATION_S` seconds, so that adding it to a clock or to another such time never
    /// overflows.
    pub fn duration(self, bare: TimeUnit) -> Result<Duration, String> {
        let secs = self.value * self.unit.unwrap_or(bare).in_ms() / 1e3;
        if secs.is_nan() || secs > MAX_DURATION_S {
            return Err(format!("`{self}` is too long a time: the most is {MAX_DURATION_S} s (a year)"));
        }
        Duration::try_from_secs_f64(secs).map_err(|_| format!("`{self}` is too long a time"))
    }
}

impl FromStr for Time {
    type Err = String;

    fn from_str(text: &str) -> Result<Time, String> {
        let t = text.trim();
        let units = [("us", TimeUnit::Us), ("µs", TimeUnit::Us), ("ms", TimeUnit::Ms), ("s", TimeUnit::S)];
        let (num, unit) = units
            .iter()
            .find_map(|&(suffix, u)| t.strip_suffix(suffix).map(|n| (n.trim(), Some(u))))
            .unwrap_or((t, None));
        match num.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(Time { value: x, unit }),
            Ok(x) if x < 0.0 => Err(format!("`{t}` is negative; a time is ≥ 0")),
            Ok(_) => Err(format!("`{t}` is not a finite time; give a number ≥ 0, e.g. 2ms")),
            Err(_) => {
                // `2min`: a number followed by a word that is not one of the units.
                let word = t.trim_start_matches(|c: char| !c.is_alphabetic());
                let lead = t[..t.len() - word.len()].trim();
                if !word.is_empty() && lead.parse::<f64>().is_ok() {
                    Err(format!("`{t}`: unknown time unit `{word}`; use us, ms or s, e.g. 2ms"))
                } else {
                    Err(format!("`{t}` is not a time; write a number ≥ 0 with an optional unit: 1.5, 2ms, 500us, 0.1s"))
                }
            }
        }
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            Some(u) => write!(f, "{}{u}", self.value),
            None => write!(f, "{}", self.value),
        }
    }
}

/// The longest duration a flag or a synthetic spec may give, in seconds: a year.
pub const MAX_DURATION_S: f64 = 365.0 * 24.0 * 3600.0;

/// Parses a duration flag: a time whose bare numbers are seconds (`30`, `500ms`), more than 0.
pub fn seconds(text: &str) -> Result<Duration, String> {
    let d = text.parse::<Time>()?.duration(TimeUnit::S)?;
    if d.is_zero() {
        return Err(format!("`{}` is no time at all; give a duration > 0, e.g. 30 (seconds) or 500ms", text.trim()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_and_without_units() {
        assert_eq!("2ms".parse::<Time>().unwrap().ms(), Some(2.0));
        assert_eq!("500us".parse::<Time>().unwrap().ms(), Some(0.5));
        assert_eq!("500 µs".parse::<Time>().unwrap().ms(), Some(0.5));
        assert_eq!("0.1s".parse::<Time>().unwrap().ms(), Some(100.0));
        assert_eq!("1.5".parse::<Time>().unwrap(), Time { value: 1.5, unit: None });
        assert_eq!("1e-3".parse::<Time>().unwrap().value, 1e-3);
        assert_eq!("1e308".parse::<Time>().unwrap().value, 1e308);
        assert_eq!(seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(seconds("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn says_what_is_wrong() {
        for (text, needle) in [
            ("-2ms", "negative"),
            ("2min", "unknown time unit `min`"),
            ("2 min", "unknown time unit `min`"),
            ("inf", "not a finite time"),
            ("NaN", "not a finite time"),
            ("1e999", "not a finite time"),
            ("-inf", "negative"),
            ("x", "not a time"),
            ("", "not a time"),
            ("ms", "not a time"),
        ] {
            let e = text.parse::<Time>().unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(seconds("0").unwrap_err().contains("no time at all"));
        assert!(seconds("1e300").unwrap_err().contains("too long"));
    }
}
