//! Numeric flags with bounds: counts of at least 1 (`-m`, `--steps`, `--batch`), counts of ranks
//! and chunks (`-p`, `-v`: at most the stages a schedule can have) and positive finite rates
//! (`--lr`).
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

/// A count of ranks or chunks: 1 to [`MAX_STAGES`](pipesched_schedules::MAX_STAGES), the most
/// model stages a schedule can have.
pub fn stage_count(text: &str) -> Result<usize, String> {
    let n = at_least_one(text)?;
    let max = pipesched_schedules::MAX_STAGES;
    if n > max {
        return Err(format!("{n} is more than {max}, the most model stages (p·v) a schedule can have"));
    }
    Ok(n)
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
        assert_eq!(stage_count("65536"), Ok(65536));
        assert!(stage_count("65537").unwrap_err().contains("most model stages"));
        assert!(stage_count("4294967296").is_err());
        assert_eq!(positive("3e-4"), Ok(3e-4));
        for bad in ["0", "-1", "inf", "NaN", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
    }
}
