//! The plan file `pipesched plan` writes (`plan.json`) and `run --plan` reads: the model (as
//! named and as a model file), p, v, m, the step's batch and the micro-batch size, each stage's
//! layers and recompute policy, the schedule (its name and its PyTorch-compatible CSV, without
//! `R`: the run plans `R` from the policies as the search did), and what was predicted — step
//! time (and, when the plan's stages were measured, the step composed from per-layer costs
//! before), bubble, peak held bytes and static bytes per rank — under which cap.
//!
//! Invariant: a plan read back is consistent — its stages cover the model's layers in order,
//! one policy per stage, and its CSV is a valid schedule of p ranks, p·v stages and m
//! micro-batches — or reading it is an error naming what disagrees.

use std::ops::Range;
use std::path::Path;

use pipesched_schedules::{from_csv, to_csv, Schedule};
use pipesched_stages::{ModelSpec, RecomputePolicy};
use serde::{Deserialize, Serialize};

use super::candidate::Candidate;
use crate::args::read_text;
use crate::output::write_atomic;
use crate::{Error, Result};

/// The version this pipesched writes and reads.
pub const PLAN_FORMAT: u64 = 1;

/// A chosen plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// [`PLAN_FORMAT`].
    pub format: u64,
    /// The model as it was named (a preset or a file).
    pub model: String,
    /// The model itself, as a model file.
    pub model_spec: ModelSpec,
    /// Ranks.
    pub p: usize,
    /// Chunks per rank.
    pub v: usize,
    /// Micro-batches per step.
    pub m: usize,
    /// Samples per step.
    pub batch: usize,
    /// Samples per micro-batch (`batch / (dp · m)`).
    pub microbatch: usize,
    /// Each stage's layers.
    pub partition: Vec<Range<usize>>,
    /// Each stage's recompute policy.
    pub policies: Vec<RecomputePolicy>,
    /// The schedule's kind.
    pub schedule: String,
    /// The schedule without `R`, as PyTorch-compatible CSV.
    pub csv: String,
    /// The unit of the predicted times.
    pub time_unit: String,
    /// Predicted step time (simulated makespan): under the plan's own stages' profile when
    /// they were measured, else under costs composed from per-layer costs.
    pub predicted_step: f64,
    /// The step time composed from per-layer costs, when the plan's stages were then measured
    /// and `predicted_step` is theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composed_step: Option<f64>,
    /// Predicted bubble rate.
    pub predicted_bubble: f64,
    /// Predicted peak held bytes per rank.
    pub predicted_peak_held_bytes: Vec<u64>,
    /// Static bytes per rank.
    pub static_bytes: Vec<u64>,
    /// The cap it was planned under, in bytes.
    pub memory_cap: u64,
    /// Data-parallel replicas it was planned for (`run --plan` needs the same `--dp`), each
    /// running `m` micro-batches of `microbatch` samples: `batch = dp · m · microbatch`.
    #[serde(default = "one")]
    pub dp: usize,
    /// The ZeRO stage it was planned for (`run --plan` needs the same `--zero`).
    #[serde(default)]
    pub zero: u8,
}

fn one() -> usize {
    1
}

impl PlanFile {
    /// The plan of `c` for `model` (named `name`), `batch` samples a step, under `cap`.
    /// `composed`: the step composed from per-layer costs, when `c`'s stages were measured.
    pub fn of(
        c: &Candidate,
        composed: Option<f64>,
        name: &str,
        model: &ModelSpec,
        batch: usize,
        cap: u64,
        unit: &str,
    ) -> Result<PlanFile> {
        Ok(PlanFile {
            format: PLAN_FORMAT,
            model: name.to_string(),
            model_spec: model.clone(),
            p: c.schedule.p,
            v: c.v,
            m: c.m,
            batch,
            microbatch: c.microbatch,
            partition: c.ranges.clone(),
            policies: c.policies.clone(),
            schedule: c.kind.name().to_string(),
            csv: to_csv(&c.schedule)?,
            time_unit: unit.to_string(),
            predicted_step: c.makespan,
            composed_step: composed,
            predicted_bubble: c.bubble,
            predicted_peak_held_bytes: c.peaks.clone(),
            static_bytes: c.static_bytes.clone(),
            memory_cap: cap,
            dp: c.dp.replicas,
            zero: u8::from(c.dp.sharded),
        })
    }

    /// Writes the plan as pretty JSON to `path`, through a temporary file renamed into place.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a plan always serialises");
        write_atomic(path, text.as_bytes())
    }

    /// Reads and checks a plan file.
    pub fn read(path: &Path) -> Result<PlanFile> {
        let text = read_text(path, 64 << 20, "cannot read the plan")?;
        let bad =
            |why: String| Error::Usage(format!("{}: {why}; write it again with `pipesched plan`", path.display()));
        let plan: PlanFile = serde_json::from_str(&text).map_err(|e| bad(format!("not a plan file ({e})")))?;
        if plan.format != PLAN_FORMAT {
            return Err(bad(format!("format {}, and this pipesched reads format {PLAN_FORMAT}", plan.format)));
        }
        let stages = plan.p.saturating_mul(plan.v);
        let n = plan.model_spec.num_layers();
        let mut next = 0;
        for r in &plan.partition {
            if r.start != next || r.is_empty() {
                return Err(bad(format!(
                    "its stages' layers {:?} are not contiguous non-empty ranges",
                    plan.partition
                )));
            }
            next = r.end;
        }
        if next != n || plan.partition.len() != stages || plan.policies.len() != stages {
            return Err(bad(format!(
                "{} stage ranges ending at layer {next} and {} policies, for p·v = {stages} stages of a model of {n} layers",
                plan.partition.len(),
                plan.policies.len()
            )));
        }
        if let Err(e) = pipesched_schedules::DataParallel::new(plan.dp, plan.zero == 1) {
            return Err(bad(format!("dp = {}, zero = {}: {e}", plan.dp, plan.zero)));
        }
        if plan.zero > 1 {
            return Err(bad(format!("zero = {}: the ZeRO stages are 0 and 1", plan.zero)));
        }
        let replicas = plan.dp;
        if plan.m == 0 || plan.microbatch.checked_mul(plan.m).and_then(|x| x.checked_mul(replicas)) != Some(plan.batch)
        {
            return Err(bad(format!(
                "{replicas} replica(s) of m = {} micro-batches of {} do not make its batch of {}",
                plan.m, plan.microbatch, plan.batch
            )));
        }
        let s = plan.schedule().map_err(|e| bad(e.to_string()))?;
        if (s.p, s.stages(), s.m) != (plan.p, stages, plan.m) {
            return Err(bad(format!(
                "its schedule has p = {}, {} stages and m = {}, the plan p = {}, {stages} stages and m = {}",
                s.p,
                s.stages(),
                s.m,
                plan.p,
                plan.m
            )));
        }
        Ok(plan)
    }

    /// The schedule, read from its CSV (validated).
    pub fn schedule(&self) -> Result<Schedule> {
        Ok(from_csv(&self.csv, &self.schedule)?)
    }

    /// Layers per stage.
    pub fn counts(&self) -> Vec<usize> {
        self.partition.iter().map(|r| r.len()).collect()
    }
}
