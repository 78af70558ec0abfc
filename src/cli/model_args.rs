//! The model flags shared by `run` and `profile`, and building stages from them: a preset or
//! model file (real stages) or a `synthetic:` spec (sleeping stages).

use clap::Args;

use pipesched::model::{Model, ModelOptions};
use pipesched::profile::{profile, ProfileOptions};
use pipesched::synthetic::{SyntheticSpec, SyntheticStage};
use pipesched::{Error, Result};
use pipesched_schedules::{with_recompute, CostModel, Schedule};
use pipesched_stages::{ModelSpec, OptimizerSpec, Partition, Policies};

/// Which model, split how.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The model: a preset (tiny, small, medium), a TOML or JSON model file, or synthetic stages
    /// `synthetic:F=2ms,I=2ms,W=1ms[,R=..][,mem=..][,wmem=..][,msg=..]`.
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// Recompute policy: none, full, every:K, sqrt — one for every stage, or a comma list, one per stage.
    #[arg(long, default_value = "none", value_name = "POLICY")]
    pub recompute: String,
    /// How layers are split into stages: even, balanced (by parameter count), or counts like 3,4,4.
    #[arg(long, default_value = "even")]
    pub partition: String,
    /// Rows per micro-batch (default: the model's own).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Optimizer applied after each step.
    #[arg(long, default_value = "adam", value_parser = ["sgd", "adam"])]
    pub optimizer: String,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lr: f32,
    /// Seed of the parameters, dropout masks and data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Stages built from the flags, with the schedule they run (`R` inserted where a policy drops
/// activations).
pub enum Built {
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

impl ModelArgs {
    fn policies(&self) -> Result<Policies> {
        self.recompute.parse::<Policies>().map_err(|e| Error::Usage(format!("--recompute {}: {e}", self.recompute)))
    }

    /// Builds one stage per model stage of `base`.
    pub fn build(&self, base: &Schedule) -> Result<Built> {
        if let Some(text) = self.model.strip_prefix("synthetic:") {
            let spec = SyntheticSpec::parse(text)?;
            let flags: Vec<bool> = self
                .policies()?
                .for_stages(base.stages())
                .map_err(|e| Error::Usage(format!("--recompute: {e}")))?
                .into_iter()
                .map(|p| p.drops())
                .collect();
            let schedule = with_recompute(base, &flags)?;
            let stages = (0..base.stages()).map(|_| SyntheticStage::new(spec.clone())).collect();
            return Ok(Built::Synthetic { spec, stages, schedule });
        }
        let mut spec =
            ModelSpec::load(&self.model).map_err(|e| Error::Usage(format!("--model {}: {e}", self.model)))?;
        spec.seed = self.seed;
        let batch = self.batch.unwrap_or(spec.batch);
        if batch == 0 {
            return Err(Error::Usage("--batch must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Usage(format!("--lr must be a positive number, got {}", self.lr)));
        }
        let optimizer = match self.optimizer.as_str() {
            "sgd" => OptimizerSpec::sgd(self.lr, 0.9),
            _ => OptimizerSpec::adam(self.lr),
        };
        let opts = ModelOptions {
            stages: base.stages(),
            partition: self.partition.parse::<Partition>().map_err(|e| Error::Usage(format!("--partition: {e}")))?,
            policies: self.policies()?,
            optimizer,
            batch,
            data_seed: self.seed,
        };
        let model = Model::build(spec, &opts)?;
        let schedule = with_recompute(base, &model.recompute_flags())?;
        Ok(Built::Real { model, schedule })
    }
}

/// How long profiling measures: 2 warm-up runs, then the median of 7.
fn profile_options(recompute: Vec<bool>) -> ProfileOptions {
    ProfileOptions { warmup: 2, reps: 7, recompute }
}

/// Profiles a real model's stages (each run a fresh one-micro-batch step).
pub fn profile_model(schedule: &Schedule, model: &mut Model) -> Result<CostModel> {
    let opts = profile_options(model.recompute_flags());
    let (task, batch) = (model.task.clone(), model.batch);
    profile(schedule, &mut model.stages, &opts, |stage, run| stage.begin_step(&task, 1 << 40 | run as u64, 1, batch))
}

/// Profiles synthetic stages.
pub fn profile_synthetic(schedule: &Schedule, stages: &mut [SyntheticStage]) -> Result<CostModel> {
    let flags = (0..schedule.stages())
        .map(|s| {
            schedule.lanes[schedule.rank_of(s)].iter().any(|a| a.stage() == s && a.op == pipesched_schedules::Op::R)
        })
        .collect();
    profile(schedule, stages, &profile_options(flags), |_, _| Ok(()))
}
