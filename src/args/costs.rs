//! `--costs F=..,I=..,W=..,R=..,C=..`, `--mem A=..,W=..,R=..,S=..` and `--bandwidth`: a per-rank
//! cost model on the command line, and the group of flags that gives it.
//!
//! The rule for units, the same as synthetic model specs: a time is a number with an optional
//! unit `us`, `ms` or `s`. Either every time in `--costs` has a unit — the model is then in
//! milliseconds — or none has, and the model is in abstract "units". Bytes are [`ByteSize`]s. A
//! [`Bandwidth`] follows the times: per second (or ms, us) in a model in milliseconds, a bare
//! byte size (per unit) in a model in units.

use std::fmt;
use std::str::FromStr;

use clap::Args;
use pipesched_schedules::{CostModel, Op, Schedule, StageCost, StageCosts};

use super::bandwidth::Bandwidth;
use super::bytes::ByteSize;
use super::pairs::pairs;
use super::time::Time;
use crate::Error;

/// Per-rank op times and the cross-rank latency, as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Costs {
    text: String,
    /// Times in the model's unit: `t_F`, `t_I`, `t_W` (1 when not given), `t_R` (`t_F` when not
    /// given), latency `c` (0 when not given).
    f: f64,
    i: f64,
    w: f64,
    r: Option<f64>,
    c: f64,
    /// Whether the times were given in units (the model is then in ms).
    in_ms: bool,
}

impl FromStr for Costs {
    type Err = String;

    fn from_str(text: &str) -> Result<Costs, String> {
        let keys = [
            ("F", "forward"),
            ("I", "input-gradient backward"),
            ("W", "weight-gradient backward"),
            ("R", "recompute, default F"),
            ("C", "cross-rank latency"),
        ];
        let mut times = Vec::new();
        for (k, v) in pairs(text, &keys)? {
            times.push((k, v, v.parse::<Time>().map_err(|e| format!("{k}: {e}"))?));
        }
        let with_unit = times.iter().filter(|(_, _, t)| t.unit.is_some()).count();
        if with_unit != 0 && with_unit != times.len() {
            return Err(format!(
                "`{text}` mixes times with and without a unit; give every time a unit (F=2ms,I=2ms,W=1ms) or none (F=2,I=2,W=1)"
            ));
        }
        let in_ms = with_unit > 0;
        let mut c = Costs { text: text.trim().into(), f: 1.0, i: 1.0, w: 1.0, r: None, c: 0.0, in_ms };
        for (k, v, t) in times {
            let x = t.ms().unwrap_or(t.value);
            if !x.is_finite() {
                return Err(format!("{k}: `{v}` is too long a time: in milliseconds it overflows; give a smaller one"));
            }
            match k {
                "F" => c.f = x,
                "I" => c.i = x,
                "W" => c.w = x,
                "R" => c.r = Some(x),
                _ => c.c = x,
            }
        }
        Ok(c)
    }
}

impl fmt::Display for Costs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Per-rank bytes, as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mem {
    text: String,
    /// Kept by `F` per micro-batch.
    act: u64,
    /// Kept from `I` until `W`.
    w: u64,
    /// Re-created by `R`, if given.
    r: Option<u64>,
    /// Each activation or gradient sent between stages.
    msg: u64,
    /// Static (parameters, gradients, optimizer state), if given.
    statics: Option<u64>,
    /// The gradients, summed over replicas under data parallelism, if given.
    grads: Option<u64>,
}

impl FromStr for Mem {
    type Err = String;

    fn from_str(text: &str) -> Result<Mem, String> {
        let keys = [
            ("A", "bytes F keeps per micro-batch"),
            ("W", "bytes kept from I until W"),
            ("R", "bytes R re-creates"),
            ("S", "static bytes per rank"),
            ("M", "bytes of each activation or gradient sent between stages"),
            ("G", "gradient bytes per rank, summed over data-parallel replicas"),
        ];
        let mut m = Mem { text: text.trim().into(), ..Mem::default() };
        for (k, v) in pairs(text, &keys)? {
            let b = v.parse::<ByteSize>().map_err(|e| format!("{k}: {e}"))?.0;
            match k {
                "A" => m.act = b,
                "W" => m.w = b,
                "R" => m.r = Some(b),
                "M" => m.msg = b,
                "G" => m.grads = Some(b),
                _ => m.statics = Some(b),
            }
        }
        Ok(m)
    }
}

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The flags of a cost model given on the command line.
#[derive(Debug, Clone, Default, Args)]
pub struct CostArgs {
    /// Per-rank op times and cross-rank latency, e.g. F=2ms,I=2ms,W=1ms,C=50us, or without units
    /// F=1,I=1,W=0.5 (every time with a unit, in us, ms or s, or none; R defaults to F; missing
    /// keys default to F=I=W=1, C=0). A schedule with v chunks gives each chunk t/v.
    #[arg(long, value_name = "F=..,I=..,W=..,R=..,C=..")]
    pub costs: Option<Costs>,
    /// Per-rank bytes: A kept by F per micro-batch, W kept from I until W, R re-created by
    /// recompute, S static, M each message between stages (counted on its consumer while in
    /// flight), G the gradients (summed over replicas with --dp); units B, KB, MB, GB, KiB, MiB,
    /// GiB, e.g. A=64MiB,W=16MiB,S=1GiB,M=4MiB.
    #[arg(long, value_name = "A=..,W=..,R=..,S=..,M=..,G=..")]
    pub mem: Option<Mem>,
    /// Cross-rank bandwidth: a message of b bytes (M in --mem) between ranks then takes C + b/B
    /// instead of C (and a sum of gradients over replicas, G in --mem, its bytes over B). Bytes per second, ms or us (2GiB/s, 500MB/ms) when --costs times have units;
    /// bytes per unit (64MiB) when they have none. Unlimited when not given.
    #[arg(long, value_name = "BYTES/s")]
    pub bandwidth: Option<Bandwidth>,
}

impl CostArgs {
    /// Each rank's gradient bytes (`G=` in `--mem`), or none.
    pub fn grad_bytes(&self) -> Vec<u64> {
        self.mem.as_ref().and_then(|m| m.grads).into_iter().collect()
    }

    /// Whether any cost flag was given.
    pub fn given(&self) -> bool {
        self.costs.is_some() || self.mem.is_some() || self.bandwidth.is_some()
    }

    /// Refuses `R=` in `--costs` or `--mem` when `schedule` has no `R` action: the values would
    /// be silently ignored.
    pub fn check_used(&self, schedule: &Schedule) -> crate::Result<()> {
        let given =
            self.costs.as_ref().is_some_and(|c| c.r.is_some()) || self.mem.as_ref().is_some_and(|m| m.r.is_some());
        if given && !schedule.actions().any(|a| a.op == Op::R) {
            return Err(Error::Usage(format!(
                "R= in --costs or --mem describes recompute, but no stage of {} recomputes; add --recompute full (or one policy per stage), or drop R=",
                schedule.name
            )));
        }
        Ok(())
    }

    /// The per-rank cost model of these flags (times F=I=W=1, C=0, no bytes and an unlimited
    /// bandwidth where not given). Refuses a bandwidth whose time unit does not follow the times'
    /// rule, and one with no message bytes to carry.
    pub fn model(&self) -> crate::Result<CostModel> {
        let c = self.costs.clone().unwrap_or_else(|| "F=1".parse().expect("a constant spec parses"));
        let m = self.mem.clone().unwrap_or_default();
        let cost = StageCost {
            f: c.f,
            i: c.i,
            w: c.w,
            r: c.r,
            act_bytes: m.act,
            recompute_bytes: m.r.unwrap_or(0),
            w_bytes: m.w,
            fwd_msg_bytes: m.msg,
            bwd_msg_bytes: m.msg,
        };
        let bandwidth = match &self.bandwidth {
            None => None,
            Some(_) if m.msg == 0 && m.grads.unwrap_or(0) == 0 => {
                return Err(Error::Usage(
                    "--bandwidth prices each message between ranks by its bytes, but --mem gives none; add M= (or G=, with --dp) to --mem (e.g. --mem M=16MiB), or drop --bandwidth".into(),
                ))
            }
            Some(b) => Some(match (b.per_ms(), c.in_ms) {
                (Some(per_ms), true) => per_ms,
                (None, false) => b.bytes as f64,
                (Some(_), false) => {
                    return Err(Error::Usage(format!(
                        "--bandwidth {b} is per unit of time, but the times of --costs have no unit (a model in abstract units); give every time a unit (F=2ms,I=2ms,W=1ms) or the bandwidth in bytes per unit (e.g. --bandwidth 64MiB)"
                    )))
                }
                (None, true) => {
                    return Err(Error::Usage(format!(
                        "--bandwidth {b} has no time unit, but the times of --costs have one (a model in milliseconds); give bytes per second, ms or us, e.g. --bandwidth {b}/s"
                    )))
                }
            }),
        };
        Ok(CostModel {
            costs: StageCosts::PerRank(cost),
            latency: c.c,
            bandwidth,
            static_bytes: m.statics.into_iter().collect(),
            host_link: None,
            time_unit: if c.in_ms { "ms" } else { "units" }.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(costs: &str, mem: &str) -> CostModel {
        CostArgs { costs: Some(costs.parse().unwrap()), mem: Some(mem.parse().unwrap()), bandwidth: None }
            .model()
            .unwrap()
    }

    fn with_bandwidth(costs: &str, mem: &str, bandwidth: &str) -> crate::Result<CostModel> {
        CostArgs {
            costs: Some(costs.parse().unwrap()),
            mem: Some(mem.parse().unwrap()),
            bandwidth: Some(bandwidth.parse().unwrap()),
        }
        .model()
    }

    #[test]
    fn parses_costs_and_memory() {
        let m = model("F=2, I=1.5,w=0.5,C=0.1", "A=1MiB,W=1KB,S=2GiB");
        let StageCosts::PerRank(c) = &m.costs else { panic!("per rank") };
        assert_eq!((c.f, c.i, c.w, c.r), (2.0, 1.5, 0.5, None));
        assert_eq!((c.act_bytes, c.w_bytes, c.recompute_bytes), (1 << 20, 1000, 0));
        assert_eq!((m.static_bytes, m.latency, m.time_unit.as_str()), (vec![2 << 30], 0.1, "units"));
    }

    #[test]
    fn units_make_a_model_in_milliseconds() {
        let m = model("F=2ms,I=1500us,W=0.0005s,R=3ms,C=50us", "R=4KiB");
        let StageCosts::PerRank(c) = &m.costs else { panic!("per rank") };
        assert_eq!((c.f, c.i, c.w, c.r, c.recompute_bytes), (2.0, 1.5, 0.5, Some(3.0), 4096));
        assert_eq!((m.latency, m.time_unit.as_str()), (0.05, "ms"));
        assert_eq!(CostArgs::default().model().unwrap().time_unit, "units");
    }

    #[test]
    fn bandwidth_follows_the_times_unit() {
        let ms = with_bandwidth("F=1ms,C=10us", "M=1MB", "2GB/s").unwrap();
        assert_eq!((ms.bandwidth, ms.latency, ms.time_unit.as_str()), (Some(2e6), 0.01, "ms"));
        assert_eq!(with_bandwidth("F=1ms", "M=1MB", "4KB/us").unwrap().bandwidth, Some(4e6));
        let units = with_bandwidth("F=1", "M=1MiB", "256KiB").unwrap();
        assert_eq!((units.bandwidth, units.time_unit.as_str()), (Some(262144.0), "units"));
        assert_eq!(model("F=1ms", "M=1MB").bandwidth, None);
        for (costs, mem, bw, needle) in [
            ("F=1", "M=1MB", "2GB/s", "--bandwidth 2GB/s is per unit of time, but the times of --costs have no unit"),
            ("F=1ms", "M=1MB", "2GB", "--bandwidth 2GB has no time unit, but the times of --costs have one"),
            ("F=1ms", "A=1MB", "2GB/s", "but --mem gives none; add M="),
        ] {
            let e = with_bandwidth(costs, mem, bw).unwrap_err().to_string();
            assert!(e.contains(needle), "{costs} {mem} {bw}: {e}");
        }
    }

    #[test]
    fn says_what_is_wrong() {
        for (costs, needle) in [
            ("F1", "not KEY=VALUE"),
            ("F=x", "F: `x` is not a time"),
            ("F=-1", "F: `-1` is negative"),
            ("Q=1", "unknown key `Q`"),
            ("F=1,F=2", "given twice"),
            ("", "nothing given"),
            ("F=inf", "not a finite time"),
            ("F=2ms,I=1", "mixes times with and without a unit"),
            ("F=1e308s,I=1ms", "F: `1e308s` is too long a time"),
        ] {
            let e = costs.parse::<Costs>().unwrap_err();
            assert!(e.contains(needle), "{costs}: {e}");
        }
        for (mem, needle) in [
            ("A=-64MiB", "A: `-64MiB` is negative"),
            ("A=99999999999GiB", "A: `99999999999GiB` is too large"),
            ("S=12parsecs", "unknown unit `parsecs`"),
        ] {
            let e = mem.parse::<Mem>().unwrap_err();
            assert!(e.contains(needle), "{mem}: {e}");
        }
    }
}
