//! What runs in the stages, behind one trait: [`Workload`] — a real model (a preset or model
//! file, split into stages, with its optimizer and task) or synthetic stages that wait and hold
//! bytes. A [`WorkloadSpec`] builds one for a [`Layout`] (p ranks, v chunks each, a placement)
//! and a recompute policy per stage; then `plan` puts recompute into a schedule, `run_step` and
//! `optimizer_step` train, `profile` measures a cost model and `predicted` gives the bytes the
//! stages' own accounting predicts. `pipesched run`, `pipesched profile` and the benchmark (its
//! sweep and its GPU table) drive every workload through this trait and nothing else.
//!
//! Invariant: a workload holds the layout's `p·v` model stages in model order (with ranks as
//! processes, only its own rank's: then every process makes every call, in the same order,
//! since the calls that cross stages are collective), each with one recompute policy, and runs only schedules of that layout with `R` planned for exactly the
//! stages whose policy drops activations (`plan` makes them so).

mod devices;
mod real;
mod run_plan;
mod spec;
mod synthetic;

pub use devices::Devices;
pub use real::{profile_model, profile_model_layers, RealWorkload};
pub use run_plan::{Asynchrony, RunOutcome, RunPlan};
pub use spec::{Demand, ModelChoice, ModelSource, WorkloadSpec};
pub use synthetic::SyntheticWorkload;

use pipesched_schedules::{with_recompute, CostModel, Placement, Schedule, Trace};
use std::path::Path;

use pipesched_stages::{Device, GemmShape, Precision, RecomputePolicy};
use serde::{Deserialize, Serialize};

use crate::cost_file::CostFile;
use crate::exec::ExecOptions;
use crate::inference::Inference;
use crate::model::Verification;
use crate::{Error, Result};

/// Where the model stages sit: `p` ranks with `v` chunks each (`p·v` stages), placed by
/// `placement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Layout {
    /// Ranks.
    pub p: usize,
    /// Model chunks per rank.
    pub v: usize,
    /// Which rank holds which stage.
    pub placement: Placement,
}

impl Layout {
    /// `p` ranks, `v` chunks each, stage `s` on rank `s mod p`.
    pub fn looped(p: usize, v: usize) -> Layout {
        Layout::new(p, v, Placement::Loop)
    }

    /// `p` ranks, `v` chunks each, placed by `placement` (named as a schedule names it:
    /// [`Placement::among`]).
    pub fn new(p: usize, v: usize, placement: Placement) -> Layout {
        Layout { p, v, placement: placement.among(p) }
    }

    /// Number of model stages, `p·v`.
    pub fn stages(&self) -> usize {
        self.p * self.v
    }

    /// The rank holding `stage`.
    pub fn rank_of(&self, stage: usize) -> usize {
        self.placement.rank_of(stage, self.p)
    }
}

impl From<&Schedule> for Layout {
    fn from(s: &Schedule) -> Layout {
        Layout { p: s.p, v: s.v, placement: s.placement }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p={}, v={} ({} stages, {} placement)", self.p, self.v, self.stages(), self.placement)
    }
}

/// One step through the pipeline.
pub struct Step {
    /// What the executor measured.
    pub trace: Trace,
    /// The mean loss over the micro-batches (real models).
    pub loss: Option<f32>,
    /// How the step compares with the sequential reference, when asked for.
    pub verification: Option<Verification>,
    /// With data parallelism: when the step ended, its sums over the replicas included
    /// ([`Trace::step_end`](pipesched_schedules::Trace::step_end)), in the trace's ms.
    pub sums_done_ms: Option<f64>,
}

/// The matrix products of one stage's `F`, `I` and `W` for one micro-batch.
#[derive(Debug, Clone)]
pub struct StageProducts {
    /// Model stage.
    pub stage: usize,
    /// Where it runs.
    pub device: Device,
    /// The products' operand format.
    pub precision: Precision,
    /// The products of `F`, `I` and `W`.
    pub ops: [Vec<GemmShape>; 3],
}

/// A validation loss and what it can be compared with.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Validation {
    /// Mean loss over the held-out micro-batches.
    pub loss: f32,
    /// The data's entropy in nats per token, where known (the generated text).
    pub entropy: Option<f64>,
    /// The least mean loss reachable on windows of the model's sequence length, where known.
    pub floor: Option<f64>,
}

impl std::fmt::Display for Validation {
    /// `1.3328 (7.5 % above the floor of 1.2400 nats per token for windows of this length; the
    /// text's entropy is 1.2080)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4}", self.loss)?;
        if !self.loss.is_finite() {
            return Ok(());
        }
        if let (Some(floor), Some(h)) = (self.floor, self.entropy) {
            let above = 100.0 * (self.loss as f64 / floor - 1.0);
            let side = if above < 0.0 { "below" } else { "above" };
            write!(
                f,
                " ({:.1} % {side} the floor of {floor:.4} nats per token for windows of this length; the text's entropy is {h:.4})",
                above.abs()
            )?;
        }
        Ok(())
    }
}

/// What an optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// The parameters were updated; `scale` is the loss scale the next step runs with, under
    /// dynamic loss scaling (`mixed-f16`), else `None`.
    Applied {
        /// The next step's loss scale, if it changes with overflows.
        scale: Option<f32>,
    },
    /// A gradient overflowed under dynamic loss scaling: the update was skipped on every stage
    /// and the loss scale halved to `scale`.
    Skipped {
        /// The halved scale.
        scale: f32,
    },
}

impl Update {
    /// The loss scale after the step, under dynamic scaling.
    pub fn scale(&self) -> Option<f32> {
        match *self {
            Update::Applied { scale } => scale,
            Update::Skipped { scale } => Some(scale),
        }
    }
}

/// A model to run: its stages, built for one layout and one recompute policy per stage.
pub trait Workload {
    /// Where its stages sit.
    fn layout(&self) -> Layout;

    /// The recompute policy of each stage.
    fn policies(&self) -> &[RecomputePolicy];

    /// Rows per micro-batch; `None` for synthetic stages, which have no rows.
    fn rows(&self) -> Option<usize>;

    /// Runs step `step` through `schedule` (one that [`Workload::plan`] gave), leaving the
    /// gradients accumulated. With `verify`, also runs the step on the sequential reference and
    /// compares (real models only).
    fn run_step(&mut self, schedule: &Schedule, step: u64, opts: &ExecOptions, verify: bool) -> Result<Step>;

    /// Applies the optimizer to the accumulated gradients, and says what it did.
    fn optimizer_step(&mut self) -> Result<Update>;

    /// Runs `plan` (made of schedules [`Workload::plan`] gave) from step `first`: its steps as
    /// one schedule, each stage updating its weights inside it where the plan says. With
    /// `verify`, also runs it on the stale-weight sequential reference and compares (real
    /// models, ranks as threads).
    fn run(&mut self, plan: &RunPlan, first: u64, opts: &ExecOptions, verify: bool) -> Result<RunOutcome>;

    /// The loss on `batches` held-out micro-batches, forward only, dropout off, with the
    /// data's entropy where it is known; `None` for synthetic stages, which have no loss.
    fn validation(&mut self, _batches: usize) -> Result<Option<Validation>> {
        Ok(None)
    }

    /// The forward-only pass of the held-out micro-batches `0…m−1` through `schedule`
    /// ([`Model::infer`](crate::model::Model::infer)) and its bytes predicted from shapes
    /// ([`Model::inference_bytes`](crate::model::Model::inference_bytes)); refused for synthetic
    /// stages, which compute no loss.
    fn infer(&mut self, _schedule: &Schedule, _opts: &ExecOptions) -> Result<(Inference, CostModel)> {
        Err(Error::Usage("a forward-only pass computes losses; synthetic stages have none. Use a real model".into()))
    }

    /// Measures every stage's op times (2 warm-up runs, then the median of `reps`) and bytes: a
    /// per-stage cost model in milliseconds. Leaves gradients accumulated.
    fn profile(&mut self, reps: usize) -> Result<CostModel>;

    /// The bytes every stage keeps per micro-batch and the static bytes of every rank, from the
    /// stages' own accounting (times are placeholders of 1: for memory predictions).
    fn predicted(&self) -> Result<CostModel>;

    /// The bytes of one version of each stage's weights (0 for synthetic stages, which have
    /// none): what a stashed version holds.
    fn version_bytes(&self) -> Result<Vec<u64>> {
        Ok(vec![0; self.layout().stages()])
    }

    /// The bytes each stage's gradients send when summed over data-parallel replicas (0 for
    /// synthetic stages, which have none).
    fn sum_bytes(&self) -> Result<Vec<u64>> {
        Ok(vec![0; self.layout().stages()])
    }

    /// A digest of every stage's parameters (FNV-1a over their bits, stage by stage in model
    /// order): equal digests, equal parameters. `None` for synthetic stages, which have none.
    /// With ranks as processes every process calls it and gets it.
    fn parameter_digest(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Writes every stage's parameters to `path` as a parameters file
    /// ([`ParamsFile`](pipesched_stages::ParamsFile)); refused
    /// for synthetic stages, which have none. With ranks as processes every process calls it
    /// and rank 0 writes the file.
    fn save_params(&self, path: &Path) -> Result<()> {
        Err(Error::Usage(format!(
            "--save-params {}: synthetic stages have no parameters; give a real model",
            path.display()
        )))
    }

    /// The matrix products of every stage (none for synthetic stages).
    fn products(&self) -> Vec<StageProducts> {
        Vec::new()
    }

    /// `base` with `R` planned before the backward of every stage whose policy drops
    /// activations; refused if `base` has another layout than these stages.
    fn plan(&self, base: &Schedule) -> Result<Schedule> {
        let layout = Layout::from(base);
        if layout != self.layout() {
            return Err(Error::Config(format!(
                "the schedule {} has {layout}, but the stages were built for {}",
                base.name,
                self.layout()
            )));
        }
        let flags: Vec<bool> = self.policies().iter().map(|p| p.drops()).collect();
        Ok(with_recompute(base, &flags)?)
    }

    /// [`Workload::profile`], with the layout and policies it was measured under, and for a
    /// real model every layer's costs: what `pipesched profile` writes.
    fn profile_file(&mut self, reps: usize) -> Result<CostFile> {
        let model = self.profile(reps)?;
        Ok(CostFile {
            model,
            layout: Some(self.layout()),
            recompute: Some(self.policies().to_vec()),
            layers: None,
            grad_bytes: None,
        })
    }
}
