//! The cost file: what `pipesched profile` writes and `simulate --costs-file` reads — a
//! [`CostModel`] plus, when it was profiled, the layout and the recompute policy of every stage
//! it was measured under, and for a real model the costs of every layer:
//!
//! ```json
//! {"format": 2,
//!  "stages": [{"f": 0.81, "i": 0.93, "w": 0.62, "r": 0.8, "act_bytes": 139264,
//!              "recompute_bytes": 1507328, "w_bytes": 1179648}, ...],
//!  "latency": 0.004, "static_bytes": [33636352, 33636352], "time_unit": "ms",
//!  "layout": {"p": 2, "v": 1, "placement": "loop"}, "recompute": ["full", "full"],
//!  "model_name": "tiny", "rows": 128,
//!  "layers": [{"kind": "linear", "f": 0.05, "i": 0.04, "w": 0.03, "r": 0.05,
//!              "act_bytes": 32768, "input_bytes": 32768, "output_bytes": 65536, "w_bytes": 98304,
//!              "param_bytes": 33024, "grad_bytes": 33024, "optimizer_bytes": 66048}, ...],
//!  "loss": {"kind": "cross_entropy", "f": 0.01, "i": 0.01, "saved_bytes": 8704,
//!           "target_bytes": 512}}
//! ```
//!
//! Per stage (`"stages"`, or one `"per_rank"` for all): `f`, `i`, `w` and `r` (`R`, the
//! recompute; `f` when left out) in `time_unit`; per micro-batch, `act_bytes` kept by `F`,
//! `recompute_bytes` re-created by `R`, `w_bytes` kept from `I` until `W`, and the messages
//! sent (`fwd_msg_bytes`, `bwd_msg_bytes`). `static_bytes`: parameters, gradients and
//! optimizer state per rank. `grad_bytes` (optional, written by `profile` for a real model):
//! the bytes each stage's gradients send when `simulate --dp D` sums them over the replicas
//! (`f32` values, 4 bytes each, whatever the stage stores).
//!
//! Per layer (`"layers"`, in model order, for micro-batches of `rows` rows of the model named
//! `model_name`): `f` (its forward keeping what `none` keeps), `i`, `w`, `r` (that forward run
//! again from its input) and, for a layer with a selective form, `restore` (`R` under
//! `selective`); bytes per micro-batch `act_bytes` (kept by `F` under `none`), `input_bytes`
//! (what a checkpoint before it keeps), `output_bytes`, `selective_bytes` (kept by `F` under
//! `selective`, for a layer with a selective form), `w_bytes` (kept from `I` until `W`); and its
//! `param_bytes`, `grad_bytes` and `optimizer_bytes`. `"loss"`: its kind, the times of its
//! forward and backward, and the bytes its backward keeps and of the target. From these,
//! [`CostFile::compose`] makes the stage costs of any partition and any recompute policies.
//!
//! `"format"` is the version: 2 adds the per-layer keys; a file without it is format 1 (no
//! per-layer keys), and a format newer than [`FORMAT`] is refused. Within a format a key added
//! later is optional, and a file without it reads as before. `profile` measures the latency of
//! a hand-off, not a bandwidth: a `"bandwidth"` (bytes per time unit, so per ms here; see
//! [`CostModel`]) is added by hand, and is carried through as written (none: unlimited).
//!
//! Invariant: the bytes of a profiled file hold only under the policies it records, so
//! [`CostFile::plan`] plans `R` into a schedule from those policies and refuses others, and
//! refuses a schedule of another layout. A file without them (written by hand) takes any. The
//! per-layer costs hold for any partition and policy of the model they were profiled on, and
//! composing them for another model is refused.

use pipesched_schedules::{with_recompute, CostModel, Schedule, StageCosts, MAX_STAGES};
use pipesched_stages::{LayerCost, LayerCosts, LossCost, ModelSpec, Policies, RecomputePolicy, StageSpec};
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
    /// Every layer's costs, when a real model was profiled.
    pub layers: Option<LayerCosts>,
    /// Every stage's gradient bytes (what data parallelism sums over the replicas), when a real
    /// model was profiled.
    pub grad_bytes: Option<Vec<u64>>,
}

/// The format this version writes; it reads it and every earlier one.
pub const FORMAT: u64 = 2;

/// The version key, read before anything else.
#[derive(Deserialize)]
struct Version {
    #[serde(default)]
    format: Option<serde_json::Value>,
}

/// The keys a cost file adds to a cost model.
#[derive(Deserialize)]
struct Provenance {
    #[serde(default)]
    layout: Option<Layout>,
    #[serde(default)]
    recompute: Option<Vec<RecomputePolicy>>,
    #[serde(default)]
    model_name: Option<String>,
    #[serde(default)]
    rows: Option<usize>,
    #[serde(default)]
    layers: Option<Vec<LayerCost>>,
    #[serde(default)]
    loss: Option<LossCost>,
    #[serde(default)]
    grad_bytes: Option<Vec<u64>>,
}

impl From<CostModel> for CostFile {
    fn from(model: CostModel) -> CostFile {
        CostFile { model, layout: None, recompute: None, layers: None, grad_bytes: None }
    }
}

fn cost_error(message: String) -> Error {
    pipesched_schedules::Error::Cost(message).into()
}

/// The file's format: 1 without `"format"`; an error for one that is not a whole number from 1
/// to [`FORMAT`].
fn format_of(text: &str) -> Result<u64> {
    // Text that is no JSON object has no version; reading it as a cost model says what is wrong.
    let Ok(Version { format }) = serde_json::from_str::<Version>(text) else { return Ok(1) };
    let Some(value) = format else { return Ok(1) };
    match value.as_u64() {
        Some(v @ 1..=FORMAT) => Ok(v),
        Some(v) if v > FORMAT => Err(cost_error(format!(
            "the file is format {v}, newer than this pipesched reads (formats 1 to {FORMAT}); read it with a newer pipesched, or profile again with this one"
        ))),
        _ => Err(cost_error(format!(
            "\"format\" is {value}; it must be a whole number from 1 to {FORMAT} (or left out: format 1)"
        ))),
    }
}

impl CostFile {
    /// Reads a cost file (or a plain cost model).
    pub fn from_json(text: &str) -> Result<CostFile> {
        let format = format_of(text)?;
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
        let layers = layer_costs(format, extra.model_name, extra.rows, extra.layers, extra.loss)?;
        Ok(CostFile { model, layout: extra.layout, recompute: extra.recompute, layers, grad_bytes: extra.grad_bytes })
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
        if let Some(g) = &self.grad_bytes {
            doc["grad_bytes"] = g.as_slice().into();
        }
        doc["format"] = FORMAT.into();
        if let Some(layers) = &self.layers {
            let serde_json::Value::Object(keys) = serde_json::to_value(layers).expect("layer costs always serialise")
            else {
                unreachable!("layer costs serialise as an object")
            };
            for (key, value) in keys {
                doc[key] = value;
            }
        }
        serde_json::to_string_pretty(&doc).expect("JSON values always serialise")
    }

    /// The cost model of `specs` — `model` split into contiguous layer ranges, each with its
    /// recompute policy — placed as `layout` says, composed of the file's per-layer costs
    /// ([`LayerCosts::compose`]); the latency, bandwidth, host link and time unit are the file's. An error
    /// if the file has no per-layer costs, they are another model's, or `specs` do not fit
    /// `layout`.
    pub fn compose(&self, model: &ModelSpec, specs: &[StageSpec], layout: Layout) -> Result<CostModel> {
        let Some(layers) = &self.layers else {
            return Err(Error::Config(
                "the cost file has no per-layer costs to compose stages of; profile a real model with `pipesched profile` to get them".into(),
            ));
        };
        if specs.len() != layout.stages() {
            return Err(Error::Config(format!("{} stages given for {layout}; give one per model stage", specs.len())));
        }
        let composed = layers.compose(model, specs)?;
        let mut static_bytes = vec![0u64; layout.p];
        for (s, bytes) in composed.static_bytes.iter().enumerate() {
            let rank = &mut static_bytes[layout.rank_of(s)];
            *rank = rank.saturating_add(*bytes);
        }
        Ok(CostModel {
            costs: StageCosts::Stages(composed.costs),
            latency: self.model.latency,
            bandwidth: self.model.bandwidth,
            static_bytes,
            host_link: self.model.host_link,
            time_unit: self.model.time_unit.clone(),
        })
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

/// The per-layer costs from a file's keys: none in format 1; in format 2 all four keys or none.
fn layer_costs(
    format: u64,
    model_name: Option<String>,
    rows: Option<usize>,
    layers: Option<Vec<LayerCost>>,
    loss: Option<LossCost>,
) -> Result<Option<LayerCosts>> {
    let given: Vec<&str> = [
        ("model_name", model_name.is_some()),
        ("rows", rows.is_some()),
        ("layers", layers.is_some()),
        ("loss", loss.is_some()),
    ]
    .iter()
    .filter(|(_, there)| *there)
    .map(|(key, _)| *key)
    .collect();
    if given.is_empty() {
        return Ok(None);
    }
    if format < 2 {
        return Err(cost_error(format!(
            "\"{}\" is a key of format 2, and a file without \"format\" is format 1; add \"format\": 2",
            given[0]
        )));
    }
    let (Some(model_name), Some(rows), Some(layers), Some(loss)) = (model_name, rows, layers, loss) else {
        return Err(cost_error(format!(
            "per-layer costs need \"model_name\", \"rows\", \"layers\" and \"loss\" together; the file gives only {}",
            given.join(", ")
        )));
    };
    if rows == 0 {
        return Err(cost_error("\"rows\" is 0; per-layer costs are for micro-batches of at least one row".into()));
    }
    let costs = LayerCosts { model_name, rows, layers, loss };
    costs.check_times().map_err(|e| cost_error(e.to_string()))?;
    Ok(Some(costs))
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
            layers: None,
            grad_bytes: Some(vec![1000, 2000]),
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
    fn reads_format_1_and_2_and_refuses_newer_ones() {
        let plain = r#"{"per_rank": {"f": 1, "i": 1, "w": 1}"#;
        assert_eq!(CostFile::from_json(&format!("{plain}}}")).unwrap().layers, None);
        assert_eq!(CostFile::from_json(&format!("{plain}, \"format\": 1}}")).unwrap().layers, None);
        assert!(CostFile::from_json(&format!("{plain}, \"format\": 2}}")).is_ok());
        let e = CostFile::from_json(&format!("{plain}, \"format\": 3}}")).unwrap_err().to_string();
        assert!(e.contains("format 3, newer than this pipesched reads (formats 1 to 2)"), "{e}");
        for bad in ["0", "1.5", "\"2\""] {
            let e = CostFile::from_json(&format!("{plain}, \"format\": {bad}}}")).unwrap_err().to_string();
            assert!(e.contains("must be a whole number from 1 to 2"), "{bad}: {e}");
        }
        let e = CostFile::from_json(&format!("{plain}, \"rows\": 4}}")).unwrap_err().to_string();
        assert!(e.contains("\"rows\" is a key of format 2") && e.contains("add \"format\": 2"), "{e}");
        let e = CostFile::from_json(&format!("{plain}, \"format\": 2, \"rows\": 4}}")).unwrap_err().to_string();
        assert!(e.contains("the file gives only rows"), "{e}");
        assert!(profiled(RecomputePolicy::Full).to_json().contains("\"format\": 2"));
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
