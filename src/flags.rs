//! Parsing of the command lines' compact value syntaxes: `--costs F=1,I=1,W=0.5,C=0.05`,
//! `--mem A=64MiB,W=16MiB,S=1GiB`, and byte sizes (`512`, `4KiB`, `1.5GB`).

use crate::{Error, Result};
use pipesched_schedules::{CostModel, StageCost, StageCosts};

/// Splits `K=V,K=V` into pairs, with errors naming the flag and the bad item.
fn pairs<'a>(flag: &str, text: &'a str, keys: &[(&str, &str)]) -> Result<Vec<(String, &'a str)>> {
    let known = keys.iter().map(|(k, what)| format!("{k} ({what})")).collect::<Vec<_>>().join(", ");
    let mut out: Vec<(String, &str)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(Error::Usage(format!(
                "{flag}: `{item}` is not KEY=VALUE; write e.g. {flag} {}",
                keys.iter().map(|(k, _)| format!("{k}=1")).collect::<Vec<_>>().join(",")
            )));
        };
        let key = k.trim().to_ascii_uppercase();
        if !keys.iter().any(|(k, _)| *k == key) {
            return Err(Error::Usage(format!("{flag}: unknown key `{}` in `{item}`; the keys are {known}", k.trim())));
        }
        if out.iter().any(|(k, _)| *k == key) {
            return Err(Error::Usage(format!("{flag}: `{key}` is given twice")));
        }
        out.push((key, v.trim()));
    }
    if out.is_empty() {
        return Err(Error::Usage(format!("{flag} is empty; the keys are {known}")));
    }
    Ok(out)
}

fn time(flag: &str, key: &str, v: &str) -> Result<f64> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(Error::Usage(format!("{flag}: {key}={v} is not a time; give a finite number ≥ 0, e.g. {key}=1.5"))),
    }
}

/// Parses a byte size: a number with an optional unit B, KB, MB, GB, TB (powers of 1000) or
/// KiB, MiB, GiB, TiB (powers of 1024).
pub fn bytes(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        _ => return Err(format!("`{text}`: unknown unit `{unit}`; use B, KB, MB, GB, KiB, MiB or GiB")),
    };
    let x: f64 = num.parse().map_err(|_| format!("`{text}` is not a byte size; write e.g. 512, 64KiB or 1.5GB"))?;
    let b = x * scale;
    if !b.is_finite() || b > u64::MAX as f64 || b.fract() != 0.0 {
        return Err(format!("`{text}` is not a whole number of bytes"));
    }
    Ok(b as u64)
}

/// Builds the per-rank cost model from `--costs` and `--mem` (both optional; times default
/// to F=I=W=1, C=0, bytes to 0).
pub fn cost_model(costs: Option<&str>, mem: Option<&str>) -> Result<CostModel> {
    let mut c = StageCost::times(1.0, 1.0, 1.0);
    let mut latency = 0.0;
    let mut statics = vec![];
    if let Some(text) = costs {
        let keys = [
            ("F", "forward"),
            ("I", "input-gradient backward"),
            ("W", "weight-gradient backward"),
            ("R", "recompute, default F"),
            ("C", "cross-rank latency"),
        ];
        for (k, v) in pairs("--costs", text, &keys)? {
            let x = time("--costs", &k, v)?;
            match k.as_str() {
                "F" => c.f = x,
                "I" => c.i = x,
                "W" => c.w = x,
                "R" => c.r = Some(x),
                _ => latency = x,
            }
        }
    }
    if let Some(text) = mem {
        let keys = [
            ("A", "bytes F keeps per micro-batch"),
            ("W", "bytes kept from I until W"),
            ("R", "bytes R re-creates"),
            ("S", "static bytes per rank"),
        ];
        for (k, v) in pairs("--mem", text, &keys)? {
            let b = bytes(v).map_err(|e| Error::Usage(format!("--mem {k}: {e}")))?;
            match k.as_str() {
                "A" => c.act_bytes = b,
                "W" => c.w_bytes = b,
                "R" => c.recompute_bytes = b,
                _ => statics = vec![b],
            }
        }
    }
    Ok(CostModel { costs: StageCosts::PerRank(c), latency, static_bytes: statics, time_unit: "units".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_costs_and_memory() {
        let m = cost_model(Some("F=2, I=1.5,w=0.5,C=0.1"), Some("A=1MiB,W=1KB,S=2GiB")).unwrap();
        let StageCosts::PerRank(c) = &m.costs else { panic!() };
        assert_eq!((c.f, c.i, c.w, c.r), (2.0, 1.5, 0.5, None));
        assert_eq!((c.act_bytes, c.w_bytes), (1 << 20, 1000));
        assert_eq!(m.static_bytes, vec![2 << 30]);
        assert_eq!(m.latency, 0.1);
    }

    #[test]
    fn rejects_malformed() {
        for (costs, needle) in [
            ("F1", "not KEY=VALUE"),
            ("F=x", "not a time"),
            ("F=-1", "not a time"),
            ("Q=1", "unknown key `Q`"),
            ("F=1,F=2", "given twice"),
            ("", "is empty"),
            ("F=inf", "not a time"),
        ] {
            let e = cost_model(Some(costs), None).unwrap_err().to_string();
            assert!(e.contains(needle), "{costs}: {e}");
        }
        assert!(cost_model(None, Some("A=12parsecs")).unwrap_err().to_string().contains("unknown unit"));
        assert!(bytes("1.5").is_err());
        assert_eq!(bytes("1.5KiB"), Ok(1536));
    }
}
