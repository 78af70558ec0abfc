//! The cost file: what `pipesched profile` writes and `simulate --costs-file` reads — a
//! [`CostModel`] plus, when it was profiled, the layout and the recompute policy of every stage
//! it was measured under:
//!
//! ```json
//! {"stages": [{"f": 0.81, "i": 0.93, "w": 0.62, "r": 0.8, "act_bytes": 139264,
//!              "recompute_bytes": 1507328, "w_bytes": 1179648}, ...],
//!  "latency": 0.004, "static_bytes": [33636352, 33636352], "time_unit": "ms",
//!  "layout": {"p": 2, "v": 1, "placement": "loop"}, "recompute": ["full", "full"]}
//! ```
//!
//! `profile` measures the latency of a hand-off, not a bandwidth: a `"bandwidth"` (bytes per time
//! unit, so per ms here; see [`CostModel`]) is added by hand, and is carried through as written.
//! The format has no version: a key added later is optional, and a file without it reads as
//! before (no `"bandwidth"`: unlimited).
//!
//! Invariant: the bytes of a profiled file hold only under the policies it records, so
//! [`CostFile::plan`] plans `R` into a schedule from those policies and refuses others, and
//! refuses a schedule of another layout. A file without them (written by hand) takes any.

use pipesched_schedules::{with_recompute, CostModel, Schedule, MAX_STAGES};
use pipesched_stages::{Policies, RecomputePolicy};
use serde::Deserialize;

use crate::workload::Layout;
use crate::{Error, Result};

/// A cost model and what it was measured under.
#[derive(Debug, Clone, PartialEq)]
pub struct CostFile {
    /// Times and bytes.
    pub model: CostModel,
    /// The layout it was profiled for.
    pub layout: Option<Layout>,
    /// The recompute policy of every stage when it was profiled.
    pub recompute: Option<Vec<RecomputePolicy>>,
}

/// The keys a cost file adds to a cost model.
#[derive(Deserialize)]
struct Provenance {
    #[serde(default)]
    layout: Option<Layout>,
    #[serde(default)]
    recompute: Option<Vec<RecomputePolicy>>,
}

impl From<CostModel> for CostFile {
    fn from(model: CostModel) -> CostFile {
        CostFile { model, layout: None, recompute: None }
    }
}

impl CostFile {
    /// Reads a cost file (or a plain cost model).
    pub fn from_json(text: &str) -> Result<CostFile> {
        let model = CostModel::from_json(text)?;
        let extra: Provenance = serde_json::from_str(text)
            .map_err(|e| pipesched_schedules::Error::Cost(format!("{e}; \"layout\" is {{\"p\": P, \"v\": V, \"placement\": \"loop\"}}, \"recompute\" one policy per stage")))?;
        if let Some(l) = extra.layout {
            if l.p == 0 || l.v == 0 || l.p.checked_mul(l.v).is_none_or(|n| n > MAX_STAGES) {
                return Err(pipesched_schedules::Error::Cost(format!(
                    "\"layout\" has p={}, v={}: both must be at least 1 and p·v at most {MAX_STAGES} model stages; give the layout the costs were profiled for, or leave \"layout\" out",
                    l.p, l.v
                ))
                .into());
            }
        }
        Ok(CostFile { model, layout: extra.layout, recompute: extra.recompute })
    }

    /// The file as pretty JSON.
    pub fn to_json(&self) -> String {
        let mut doc = serde_json::to_value(&self.model).expect("a cost model always serialises");
        if let Some(layout) = &self.layout {
            doc["layout"] = serde_json::to_value(layout).expect("a layout always serialises");
        }
        if let Some(r) = &self.recompute {
            doc["recompute"] = serde_json::to_value(r).expect("policies always serialise");
        }
        serde_json::to_string_pretty(&doc).expect("JSON values always serialise")
    }

    /// Whether any stage will recompute: a policy `asked` for, or else the profiled ones, drops
    /// activations. (`plan` then inserts `R` actions; sizes estimated before planning count them.)
    pub fn recomputes(&self, asked: Option<&Policies>) -> bool {
        match (asked, &self.recompute) {
            (Some(asked), _) => asked.0.iter().any(|p| p.drops()),
            (None, Some(profiled)) => profiled.iter().any(|p| p.drops()),
            (None, None) => false,
        }
    }

    /// `base` with `R` planned for every stage whose policy drops activations: the policies
    /// `asked` for (one for all stages or one per stage), else the ones the file was profiled
    /// under, else none.
    pub fn plan(&self, base: &Schedule, asked: Option<&Policies>) -> Result<Schedule> {
        let here = Layout::from(base);
        if let Some(layout) = self.layout.filter(|l| *l != here) {
            return Err(Error::Config(format!(
                "the costs were profiled for {layout}, but {} has {here}; profile with this schedule's -s, -p and -v",
                base.name
            )));
        }
        let stages = here.stages();
        let policies = match (asked, &self.recompute) {
            (Some(asked), Some(profiled)) => {
                let asked = asked.for_stages(stages)?;
                if asked != *profiled {
                    return Err(Error::Config(format!(
                        "the costs were profiled under --recompute {}, and their bytes hold only under it; profile again with --recompute {}, or leave --recompute out",
                        compact(profiled),
                        compact(&asked)
                    )));
                }
                asked
            }
            (Some(asked), None) => asked.for_stages(stages)?,
            (None, Some(profiled)) => Policies(profiled.clone()).for_stages(stages)?,
            (None, None) => vec![RecomputePolicy::None; stages],
        };
        let flags: Vec<bool> = policies.iter().map(|p| p.drops()).collect();
        Ok(with_recompute(base, &flags)?)
    }
}

/// One policy when every stage has the same, else the per-stage list.
fn compact(policies: &[RecomputePolicy]) -> String {
    match policies {
        [first, rest @ ..] if rest.iter().all(|p| p == first) => first.to_string(),
        _ => Policies(policies.to_vec()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_schedules::{Kind, Op};

    fn profiled(policy: RecomputePolicy) -> CostFile {
        CostFile {
            model: CostModel::per_rank(1.0, 1.0, 1.0),
            layout: Some(Layout::looped(2, 1)),
            recompute: Some(vec![policy; 2]),
        }
    }

    #[test]
    fn round_trips_and_reads_plain_models() {
        let f = profiled(RecomputePolicy::Every(2));
        assert_eq!(CostFile::from_json(&f.to_json()).unwrap(), f);
        let plain = CostFile::from_json(&CostModel::per_rank(1.0, 2.0, 1.0).to_json()).unwrap();
        assert_eq!((plain.layout, plain.recompute), (None, None));
        let e = CostFile::from_json(r#"{"per_rank": {"f": 1, "i": 1, "w": 1}, "recompute": ["most"]}"#).unwrap_err();
        assert!(e.to_string().contains("most"), "{e}");
    }

    #[test]
    fn carries_a_bandwidth() {
        let mut f = profiled(RecomputePolicy::Full);
        assert!(!f.to_json().contains("bandwidth"));
        f.model.bandwidth = Some(1.25e7);
        let text = f.to_json();
        assert!(text.contains("\"bandwidth\": 12500000.0"), "{text}");
        assert_eq!(CostFile::from_json(&text).unwrap(), f);
        let e = CostFile::from_json(r#"{"per_rank": {"f": 1, "i": 1, "w": 1}, "bandwidth": -1}"#).unwrap_err();
        assert!(e.to_string().contains("bandwidth must be a finite number > 0"), "{e}");
    }

    #[test]
    fn refuses_a_layout_no_schedule_has() {
        let text = |p: &str, v: &str| {
            format!(
                r#"{{"per_rank": {{"f": 1, "i": 1, "w": 1}}, "layout": {{"p": {p}, "v": {v}, "placement": "loop"}}}}"#
            )
        };
        let e = CostFile::from_json(&text("9223372036854775808", "2")).unwrap_err().to_string();
        assert!(
            e.contains("\"layout\" has p=9223372036854775808, v=2: both must be at least 1 and p·v at most 65536"),
            "{e}"
        );
        assert!(CostFile::from_json(&text("0", "1")).unwrap_err().to_string().contains("p=0, v=1"));
        assert!(CostFile::from_json(&text("256", "257")).unwrap_err().to_string().contains("p=256, v=257"));
        assert_eq!(CostFile::from_json(&text("256", "256")).unwrap().layout, Some(Layout::looped(256, 256)));
    }

    #[test]
    fn plans_the_profiled_policy_and_refuses_others() {
        let base = Kind::OneFOneB.generate(2, 1, 4).unwrap();
        let r_count = |s: &Schedule| s.actions().filter(|a| a.op == Op::R).count();
        let full = profiled(RecomputePolicy::Full);
        assert_eq!(r_count(&full.plan(&base, None).unwrap()), 8);
        assert_eq!(r_count(&full.plan(&base, Some(&"full,full".parse().unwrap())).unwrap()), 8);
        let e = full.plan(&base, Some(&"none".parse().unwrap())).unwrap_err().to_string();
        assert!(e.contains("profiled under --recompute full,") && e.contains("--recompute none,"), "{e}");
        let other = Kind::Interleaved.generate(2, 2, 4).unwrap();
        let e = full.plan(&other, None).unwrap_err().to_string();
        assert!(e.contains("p=2, v=1") && e.contains("p=2, v=2"), "{e}");
        let plain = CostFile::from(CostModel::per_rank(1.0, 1.0, 1.0));
        assert_eq!(r_count(&plain.plan(&base, None).unwrap()), 0);
        assert_eq!(r_count(&plain.plan(&base, Some(&"full,none".parse().unwrap())).unwrap()), 4);
    }
}
