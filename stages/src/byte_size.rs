//! Byte sizes as flags and specs write them: `512`, `64KiB`, `1.5GB`.
//!
//! Invariant: a parsed size is exact — a decimal fraction is scaled in integers, never rounded
//! through a float — and anything that is not a whole number of bytes from 0 to 2⁶⁴ − 1 is
//! refused with what is wrong with it.

use std::fmt;
use std::str::FromStr;

/// A byte count read from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// The units, case-insensitive: powers of 1000 and of 1024.
const UNITS: [(&str, u128); 11] = [
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("pb", 1_000_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("pib", 1 << 50),
];

const EXAMPLE: &str = "write a whole number of bytes with an optional unit, e.g. 512, 64KiB or 1.5GB";

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err(format!("no byte size given; {EXAMPLE}"));
        }
        if t.starts_with('-') {
            return Err(format!("`{t}` is negative; a byte size is ≥ 0: {EXAMPLE}"));
        }
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = (&t[..split], t[split..].trim());
        let Some(&(_, scale)) =
            UNITS.iter().find(|(u, _)| u.eq_ignore_ascii_case(unit) || unit.is_empty() && *u == "b")
        else {
            return Err(format!(
                "`{t}`: unknown unit `{unit}`; use B, KB, MB, GB, TB, PB (powers of 1000) or KiB, MiB, GiB, TiB, PiB (powers of 1024)"
            ));
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(format!("`{t}` is not a byte size; {EXAMPLE}"));
        }
        let too_large = || format!("`{t}` is too large: a byte size is at most 2⁶⁴ − 1 bytes (16 EiB)");
        // value = (int·10^f + frac) · scale / 10^f, all in integers.
        let mut digits: u128 = 0;
        let mut denominator: u128 = 1;
        for (k, c) in int.chars().chain(frac.chars()).enumerate() {
            digits =
                digits.checked_mul(10).and_then(|d| d.checked_add(u128::from(c as u8 - b'0'))).ok_or_else(too_large)?;
            if k >= int.len() {
                denominator = denominator.checked_mul(10).ok_or_else(too_large)?;
            }
        }
        let scaled = digits.checked_mul(scale).ok_or_else(too_large)?;
        if scaled % denominator != 0 {
            return Err(format!("`{t}` is not a whole number of bytes; give more bytes or a smaller unit, e.g. 1536B"));
        }
        u64::try_from(scaled / denominator).map(ByteSize).map_err(|_| too_large())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

impl ByteSize {
    /// The size in the largest binary unit that writes it exactly (`4MiB`, `1536B`): text that
    /// parses back to the same size.
    pub fn exact(self) -> String {
        const BINARY: [&str; 5] = ["PiB", "TiB", "GiB", "MiB", "KiB"];
        for (k, unit) in BINARY.iter().enumerate() {
            let scale = 1u64 << (10 * (5 - k));
            if self.0 >= scale && self.0 % scale == 0 {
                return format!("{}{unit}", self.0 / scale);
            }
        }
        format!("{}B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(t: &str) -> Result<u64, String> {
        t.parse::<ByteSize>().map(|b| b.0)
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(bytes("512"), Ok(512));
        assert_eq!(bytes("1.5KiB"), Ok(1536));
        assert_eq!(bytes(" 64 MiB "), Ok(64 << 20));
        assert_eq!(bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(bytes("0.001KB"), Ok(1));
        assert_eq!(bytes("16PiB"), Ok(16 << 50));
        assert_eq!(bytes("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(bytes("2.kb"), Ok(2000));
    }

    #[test]
    fn exact_text_parses_back() {
        for (n, text) in [(4 << 20, "4MiB"), (1536, "1536B"), (0, "0B"), (3 << 40, "3TiB"), (1024, "1KiB")] {
            assert_eq!(ByteSize(n).exact(), text);
            assert_eq!(bytes(text), Ok(n));
        }
    }

    #[test]
    fn says_what_is_wrong() {
        for (text, needle) in [
            ("-64MiB", "is negative"),
            ("99999999999GiB", "too large"),
            ("18446744073709551616", "too large"),
            ("1".repeat(60).as_str(), "too large"),
            ("1.5", "not a whole number of bytes"),
            ("0.0001KB", "not a whole number of bytes"),
            ("12parsecs", "unknown unit `parsecs`"),
            ("", "no byte size"),
            (".", "not a byte size"),
            ("1.2.3", "not a byte size"),
            ("MiB", "not a byte size"),
        ] {
            let e = bytes(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
