//! What runs in the stages: a real model (a preset or model file, split into stages, with its
//! optimizer and task) or synthetic stages — built for a schedule, with recompute planned into
//! it, and profiled into a cost model. Shared by `pipesched run`, `pipesched profile` and the
//! benchmark.

use pipesched_schedules::{with_recompute, CostModel, Op, Schedule};
use pipesched_stages::{Device, ModelSpec, OptimizerSpec, Partition, Policies, Precision};

use crate::model::{Model, ModelOptions};
use crate::profile::{profile, ProfileOptions};
use crate::synthetic::{SyntheticSpec, SyntheticStage};
use crate::{Error, Result};

/// How to build the stages.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// A preset (`tiny`, `small`, `medium`), a TOML or JSON model file, or `synthetic:...`.
    pub model: String,
    /// Recompute policy: one for every stage, or a comma list, one per stage.
    pub recompute: String,
    /// `even`, `balanced`, or per-stage layer counts.
    pub partition: String,
    /// Rows per micro-batch (`None`: the model's own).
    pub batch: Option<usize>,
    /// `sgd` or `adam`.
    pub optimizer: String,
    /// Learning rate.
    pub lr: f32,
    /// Seed of the parameters, dropout masks and data.
    pub seed: u64,
    /// `cpu`, `cuda`, or one device per rank (`cuda:0,cuda:1`).
    pub devices: String,
    /// Format of the matrix products' operands and results: `f32`, `bf16` or `f16` (`None`: the
    /// model's own).
    pub precision: Option<String>,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            model: "small".into(),
            recompute: "none".into(),
            partition: "even".into(),
            batch: None,
            optimizer: "adam".into(),
            lr: 3e-4,
            seed: 0,
            devices: "cpu".into(),
            precision: None,
        }
    }
}

/// Stages built for a schedule, and the schedule they run (with `R` planned in where a policy
/// drops activations).
pub enum Workload {
    /// Synthetic stages.
    Synthetic {
        /// Their durations and bytes.
        spec: SyntheticSpec,
        /// One per model stage.
        stages: Vec<SyntheticStage>,
        /// The schedule with recompute planned.
        schedule: Schedule,
    },
    /// A real model.
    Real {
        /// The model.
        model: Model,
        /// The schedule with recompute planned.
        schedule: Schedule,
    },
}

impl WorkloadSpec {
    fn policies(&self) -> Result<Policies> {
        self.recompute.parse::<Policies>().map_err(|e| Error::Usage(format!("--recompute {}: {e}", self.recompute)))
    }

    /// The device of every rank: `cpu` for all, `cuda` round-robin over the visible GPUs, or an
    /// explicit list with one entry per rank. Every device is checked before anything runs.
    pub fn devices(&self, p: usize) -> Result<Vec<Device>> {
        let text = self.devices.trim();
        let list: Vec<Device> = match text {
            "cpu" => vec![Device::Cpu; p],
            "cuda" => {
                let report = pipesched_stages::cuda::probe();
                let gpus = report.visible.max(1);
                (0..p).map(|r| Device::Cuda(r % gpus)).collect()
            }
            _ => text
                .split(',')
                .map(|d| d.parse::<Device>().map_err(|e| Error::Usage(format!("--devices: {e}"))))
                .collect::<Result<_>>()?,
        };
        if list.len() != p {
            return Err(Error::Usage(format!(
                "--devices lists {} devices but there are p={p} ranks; give one per rank, or `cpu` / `cuda`",
                list.len()
            )));
        }
        for d in &list {
            d.check().map_err(|e| Error::Usage(format!("--devices: {e}")))?;
        }
        Ok(list)
    }

    /// Builds one stage per model stage of `base`.
    pub fn build(&self, base: &Schedule) -> Result<Workload> {
        let devices = self.devices(base.p)?;
        if let Some(text) = self.model.strip_prefix("synthetic:") {
            if devices.iter().any(|d| *d != Device::Cpu) {
                return Err(Error::Usage(
                    "--devices: synthetic stages sleep on the host and hold host memory; use --devices cpu".into(),
                ));
            }
            let spec = SyntheticSpec::parse(text)?.split(base.v);
            let flags: Vec<bool> = self
                .policies()?
                .for_stages(base.stages())
                .map_err(|e| Error::Usage(format!("--recompute: {e}")))?
                .into_iter()
                .map(|p| p.drops())
                .collect();
            let schedule = with_recompute(base, &flags)?;
            let stages = (0..base.stages()).map(|_| SyntheticStage::new(spec.clone())).collect();
            return Ok(Workload::Synthetic { spec, stages, schedule });
        }
        let mut spec =
            ModelSpec::load(&self.model).map_err(|e| Error::Usage(format!("--model {}: {e}", self.model)))?;
        spec.seed = self.seed;
        if let Some(p) = &self.precision {
            spec.precision = p.parse::<Precision>().map_err(|e| Error::Usage(format!("--precision: {e}")))?;
        }
        let batch = self.batch.unwrap_or(spec.batch);
        if batch == 0 {
            return Err(Error::Usage("--batch must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Usage(format!("--lr must be a positive number, got {}", self.lr)));
        }
        let optimizer = match self.optimizer.as_str() {
            "sgd" => OptimizerSpec::sgd(self.lr, 0.9),
            "adam" => OptimizerSpec::adam(self.lr),
            other => return Err(Error::Usage(format!("--optimizer {other}: choose sgd or adam"))),
        };
        let opts = ModelOptions {
            stages: base.stages(),
            partition: self.partition.parse::<Partition>().map_err(|e| Error::Usage(format!("--partition: {e}")))?,
            policies: self.policies()?,
            optimizer,
            batch,
            data_seed: self.seed,
            devices: (0..base.stages()).map(|k| devices[base.rank_of(k)]).collect(),
        };
        let model = Model::build(spec, &opts)?;
        let schedule = with_recompute(base, &model.recompute_flags())?;
        Ok(Workload::Real { model, schedule })
    }
}

/// How long profiling measures: 2 warm-up runs, then the median of `reps`.
fn profile_options(recompute: Vec<bool>, reps: usize) -> ProfileOptions {
    ProfileOptions { warmup: 2, reps, recompute }
}

/// Profiles a real model's stages (each run a fresh one-micro-batch step).
pub fn profile_model(schedule: &Schedule, model: &mut Model, reps: usize) -> Result<CostModel> {
    let opts = profile_options(model.recompute_flags(), reps);
    let (task, batch) = (model.task.clone(), model.batch);
    profile(schedule, &mut model.stages, &opts, |stage, run| stage.begin_step(&task, 1 << 40 | run as u64, 1, batch))
}

/// Profiles synthetic stages.
pub fn profile_synthetic(schedule: &Schedule, stages: &mut [SyntheticStage], reps: usize) -> Result<CostModel> {
    let flags = (0..schedule.stages())
        .map(|s| schedule.lanes[schedule.rank_of(s)].iter().any(|a| a.stage() == s && a.op == Op::R))
        .collect();
    profile(schedule, stages, &profile_options(flags, reps), |_, _| Ok(()))
}
