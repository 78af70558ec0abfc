//! `KEY=VALUE,KEY=VALUE` lists — the syntax of `--costs`, `--mem` and synthetic model specs.
//!
//! Invariant: every key returned is one of the known keys, spelled as the table spells it (keys
//! match case-insensitively), and appears once.

/// Splits `text` into `(key, value)` pairs over the `known` keys (`(key, what it means)`).
pub fn pairs<'a>(text: &'a str, known: &[(&'static str, &str)]) -> Result<Vec<(&'static str, &'a str)>, String> {
    let list = || known.iter().map(|(k, what)| format!("{k} ({what})")).collect::<Vec<_>>().join(", ");
    let mut out: Vec<(&'static str, &str)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("`{item}` is not KEY=VALUE; the keys are {}", list()));
        };
        let Some(&(key, _)) = known.iter().find(|(name, _)| name.eq_ignore_ascii_case(k.trim())) else {
            return Err(format!("unknown key `{}` in `{item}`; the keys are {}", k.trim(), list()));
        };
        if out.iter().any(|(seen, _)| *seen == key) {
            return Err(format!("`{key}` is given twice"));
        }
        out.push((key, v.trim()));
    }
    if out.is_empty() {
        return Err(format!("nothing given; the keys are {}", list()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [(&str, &str); 2] = [("F", "forward"), ("mem", "bytes")];

    #[test]
    fn splits_and_checks() {
        assert_eq!(pairs(" f=1, MEM = 2KiB,", &KEYS), Ok(vec![("F", "1"), ("mem", "2KiB")]));
        for (text, needle) in [
            ("F1", "not KEY=VALUE"),
            ("Q=1", "unknown key `Q`"),
            ("F=1,f=2", "`F` is given twice"),
            (" , ", "nothing given"),
        ] {
            let e = pairs(text, &KEYS).unwrap_err();
            assert!(e.contains(needle) && (needle.contains("twice") || e.contains("F (forward), mem (bytes)")), "{e}");
        }
    }
}
