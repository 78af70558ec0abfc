//! Numeric flags with a lower bound: counts of at least 1 (`-p`, `-m`, `--steps`, `--batch`)
//! and positive finite rates (`--lr`).
//!
//! Invariant: a value these parsers return is within its bound.

/// A whole number ≥ 1.
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1, got 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{}` is not a whole number ≥ 1", text.trim())),
    }
}

/// A finite number > 0.
pub fn positive(text: &str) -> Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("`{}` is not a positive number; give e.g. 3e-4", text.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
        assert!(at_least_one("-1").unwrap_err().contains("not a whole number"));
        assert_eq!(positive("3e-4"), Ok(3e-4));
        for bad in ["0", "-1", "inf", "NaN", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
    }
}
