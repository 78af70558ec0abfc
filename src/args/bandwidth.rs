//! Bandwidths as flags write them: a [`ByteSize`] per time unit — `2GiB/s`, `500MB/ms`,
//! `64KiB/us` — or a bare byte size (`64MiB`), read per time unit of a model without units.
//!
//! Invariant: a parsed [`Bandwidth`] is more than 0 bytes, and keeps whether a time unit was
//! written, so the cost flags can hold it to their rule: a model in milliseconds takes a bandwidth
//! per second, millisecond or microsecond; a model in abstract units takes a bare byte size.

use std::fmt;
use std::str::FromStr;

use super::bytes::ByteSize;
use super::time::TimeUnit;

/// A bandwidth read from text: bytes, and the unit of time they are per, if written.
#[derive(Debug, Clone, PartialEq)]
pub struct Bandwidth {
    text: String,
    /// Bytes per `per` (per time unit of the model when `per` is `None`).
    pub bytes: u64,
    /// The time unit written after the `/`.
    pub per: Option<TimeUnit>,
}

const EXAMPLE: &str = "write bytes per second, millisecond or microsecond, e.g. 2GiB/s, 500MB/ms or 64KiB/us (or, for a model without time units, bytes per unit: 64MiB)";

impl Bandwidth {
    /// Bytes per millisecond, if a time unit was written.
    pub fn per_ms(&self) -> Option<f64> {
        let b = self.bytes as f64;
        // Scaled by the exact factor of each unit (1e-3 has no exact f64; dividing by it would
        // not be a product by 1000).
        self.per.map(|u| match u {
            TimeUnit::Us => b * 1e3,
            TimeUnit::Ms => b,
            TimeUnit::S => b / 1e3,
        })
    }
}

impl FromStr for Bandwidth {
    type Err = String;

    fn from_str(text: &str) -> Result<Bandwidth, String> {
        let t = text.trim();
        let (size, per) = match t.split_once('/') {
            Some((size, unit)) => {
                let unit = unit.trim();
                let per = [("s", TimeUnit::S), ("ms", TimeUnit::Ms), ("us", TimeUnit::Us), ("µs", TimeUnit::Us)]
                    .into_iter()
                    .find_map(|(name, u)| (name == unit).then_some(u))
                    .ok_or_else(|| format!("`{t}`: unknown time unit `{unit}` after `/`; {EXAMPLE}"))?;
                (size, Some(per))
            }
            None => (t, None),
        };
        let bytes = size.parse::<ByteSize>().map_err(|e| format!("`{t}`: {e}"))?.0;
        if bytes == 0 {
            return Err(format!("`{t}` is no bandwidth at all: messages would never arrive; {EXAMPLE}"));
        }
        Ok(Bandwidth { text: t.into(), bytes, per })
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_ms(t: &str) -> Option<f64> {
        t.parse::<Bandwidth>().unwrap().per_ms()
    }

    #[test]
    fn bytes_per_time_unit() {
        assert_eq!(per_ms("2GiB/s"), Some(2.0 * (1u64 << 30) as f64 / 1e3));
        assert_eq!(per_ms("500MB/ms"), Some(5e8));
        assert_eq!(per_ms("64KiB / us"), Some(65536e3));
        assert_eq!(per_ms("1KB/µs"), Some(1e6));
        let bare = "64MiB".parse::<Bandwidth>().unwrap();
        assert_eq!((bare.bytes, bare.per, bare.per_ms()), (64 << 20, None, None));
        assert_eq!(bare.to_string(), "64MiB");
    }

    #[test]
    fn says_what_is_wrong() {
        for (text, needle) in [
            ("0GiB/s", "no bandwidth at all"),
            ("0", "no bandwidth at all"),
            ("2GiB/min", "unknown time unit `min`"),
            ("2GiB/", "unknown time unit ``"),
            ("-2GiB/s", "negative"),
            ("2parsecs/s", "unknown unit `parsecs`"),
            ("/s", "no byte size"),
            ("1.5B/s", "not a whole number of bytes"),
        ] {
            let e = text.parse::<Bandwidth>().unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
