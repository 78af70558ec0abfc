//! [`WorkloadSpec`]: everything that says which stages to build — the model (a preset, a model
//! file or synthetic stages), how its layers are split, the batch, the optimizer, the seed, the
//! devices and the products' precision — as typed values, and the two things done with it:
//! [`WorkloadSpec::check`] (can this layout and these policies be built? cheap, allocates no
//! stage) and [`WorkloadSpec::build`], which first checks what the stages will allocate for a
//! [`Demand`] against the memory budget.
//!
//! Invariant: `build` succeeds only where `check` does, so a configuration that `check` refuses
//! is refused before anything is allocated; so is one whose estimate exceeds the budget.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use pipesched_schedules::{DataParallel, Schedule};
use pipesched_stages::{
    microbatches_in_flight, Corpus, Load, LossScale, ModelSpec, OptimizerSpec, ParamsFile, Partition, Policies,
};

use super::{Devices, Layout, RealWorkload, RunPlan, SyntheticWorkload, Workload};
use crate::budget::{self, Available, Estimate, Part};
use crate::exec::Transport;
use crate::model::{Model, ModelOptions};
use crate::replica_bytes::ReplicaBytes;
use crate::synthetic::SyntheticSpec;
use crate::{Error, Result};

/// Which model: a preset or model file (read and validated when parsed), or synthetic stages.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    /// As written on the command line.
    text: String,
    /// What it names.
    pub source: ModelSource,
}

/// What a [`ModelChoice`] names.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A model: layers, widths, task.
    Model(ModelSpec),
    /// Synthetic stages: their times and bytes per rank.
    Synthetic(SyntheticSpec),
}

impl ModelChoice {
    /// The model `spec`, written as `text` (how the command line or a plan file named it).
    pub fn of_spec(text: impl Into<String>, spec: ModelSpec) -> ModelChoice {
        ModelChoice { text: text.into(), source: ModelSource::Model(spec) }
    }

    /// Whether these are synthetic stages.
    pub fn is_synthetic(&self) -> bool {
        matches!(self.source, ModelSource::Synthetic(_))
    }

    /// Rows per sample: the sequence length of a model of sequences, 1 otherwise (synthetic
    /// stages included).
    pub fn seq(&self) -> usize {
        match &self.source {
            ModelSource::Model(spec) => spec.seq(),
            ModelSource::Synthetic(_) => 1,
        }
    }
}

impl FromStr for ModelChoice {
    type Err = Error;

    /// `tiny`, `small`, `medium`, a `.toml` or `.json` model file, or
    /// `synthetic:F=..,I=..,W=..[,R=..][,mem=..][,wmem=..][,msg=..]`.
    fn from_str(s: &str) -> Result<ModelChoice> {
        let text = s.trim().to_string();
        let source = match text.strip_prefix("synthetic:") {
            Some(body) => ModelSource::Synthetic(body.parse()?),
            None => ModelSource::Model(ModelSpec::load(&text)?),
        };
        Ok(ModelChoice { text, source })
    }
}

impl fmt::Display for ModelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What running the stages will hold at once, for the memory budget: `m` micro-batches a step, at
/// most `in_flight[s]` of them kept by stage `s` at once, whether every step is also run on the
/// sequential reference, and the executor's own records: `actions` a step (before recompute is
/// planned), kept for `steps` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// Micro-batches per step.
    pub m: usize,
    /// The most micro-batches each model stage keeps at once.
    pub in_flight: Vec<usize>,
    /// Whether `--verify` runs the sequential reference beside the pipeline.
    pub verify: bool,
    /// Actions of one step, before recompute is planned.
    pub actions: usize,
    /// Steps whose traces are kept.
    pub steps: usize,
    /// Per model stage, the most weight versions it stashes at once in a run on stale weights
    /// ([`Updates::peak_stashed`](pipesched_schedules::Updates::peak_stashed); empty: none).
    pub stashed: Vec<u32>,
}

impl Demand {
    /// `steps` steps of `schedule` (recompute does not change what a stage holds at once).
    pub fn of(schedule: &Schedule, verify: bool, steps: usize) -> Demand {
        Demand {
            m: schedule.m,
            in_flight: microbatches_in_flight(schedule),
            verify,
            actions: schedule.num_actions(),
            steps,
            stashed: Vec::new(),
        }
    }

    /// A run's demand: its whole schedule as one step, and the versions its stages stash.
    pub fn of_run(plan: &RunPlan, verify: bool) -> Demand {
        let stages = plan.schedule.stages();
        Demand {
            stashed: (0..stages).map(|s| plan.updates.peak_stashed(s)).collect(),
            ..Demand::of(&plan.schedule, verify, 1)
        }
    }

    /// Profiling `stages` stages: one micro-batch at a time, no step kept.
    pub fn profiling(stages: usize) -> Demand {
        Demand { m: 1, in_flight: vec![1; stages], verify: false, actions: 0, steps: 0, stashed: Vec::new() }
    }
}

/// How to build the stages.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// The model or synthetic stages.
    pub model: ModelChoice,
    /// How layers are split into stages.
    pub partition: Partition,
    /// Samples per micro-batch: rows, or sequences for a model of sequences (`None`: the
    /// model's own).
    pub batch: Option<usize>,
    /// The text a model of tokens trains on (`None`: the corpus generated from the seed).
    pub data: Option<Arc<Corpus>>,
    /// The optimizer applied after each step.
    pub optimizer: OptimizerSpec,
    /// Seed of the parameters, dropout masks and data.
    pub seed: u64,
    /// Where the ranks run.
    pub devices: Devices,
    /// Parameters to start from instead of the seed's draws (`--init-params`).
    pub init: Option<Arc<ParamsFile>>,
    /// The loss scaling to train with (`None`: the precision's own).
    pub loss_scale: Option<LossScale>,
}

impl WorkloadSpec {
    /// Whether stages of this spec can be built for `layout` under `policies`: one policy for all
    /// stages or one per stage, and (for a model) at least one layer per stage as the partition
    /// says. Devices are not probed here.
    pub fn check(&self, layout: &Layout, policies: &Policies) -> Result<()> {
        let per_stage = policies.for_stages(layout.stages())?;
        match &self.model.source {
            ModelSource::Synthetic(_) => {
                if !self.devices.all_cpu() {
                    return Err(Error::Config(
                        "--devices: synthetic stages wait on the host and hold host memory; use --devices cpu".into(),
                    ));
                }
            }
            ModelSource::Model(spec) => {
                spec.stage_specs(layout.stages(), &self.partition, &Policies(per_stage))?;
                match &self.data {
                    Some(text) if !spec.reads_tokens() => {
                        return Err(Error::Config(format!(
                            "--data {}: model {} reads rows, not text; give a model that starts with an embedding (gpt-tiny, gpt-small, gpt-medium)",
                            text.name(),
                            spec.name
                        )))
                    }
                    Some(text) => text.check_seq(spec.seq())?,
                    None => {}
                }
            }
        }
        if let (Some(file), ModelSource::Synthetic(_)) = (&self.init, &self.model.source) {
            return Err(Error::Config(format!(
                "--init-params {}: synthetic stages have no parameters; give a real model",
                file.origin()
            )));
        }
        if let (Some(text), ModelSource::Synthetic(_)) = (&self.data, &self.model.source) {
            return Err(Error::Config(format!(
                "--data {}: synthetic stages read no data; give a model of tokens (gpt-tiny, gpt-small, gpt-medium)",
                text.name()
            )));
        }
        Ok(())
    }

    /// What building for `layout` under `policies` and running `demand` will allocate in host
    /// memory; `None` when the stages sit on GPUs, whose memory this estimate does not describe.
    /// Every stage counts (one process holding them all); [`WorkloadSpec::build`] estimates the
    /// stages a process holds.
    pub fn estimate(&self, layout: &Layout, policies: &Policies, demand: &Demand) -> Result<Option<Estimate>> {
        self.estimate_held(layout, policies, demand, &Transport::InProcess)
    }

    /// [`WorkloadSpec::estimate`] for the stages `transport` gives this process; the sequential
    /// reference of `--verify` (the whole model) counts on the root only.
    fn estimate_held(
        &self,
        layout: &Layout,
        policies: &Policies,
        demand: &Demand,
        transport: &Transport,
    ) -> Result<Option<Estimate>> {
        if !self.devices.all_cpu() {
            return Ok(None);
        }
        let per_stage = Policies(policies.for_stages(layout.stages())?);
        // Recompute adds at most one action per (stage, micro-batch).
        let recompute =
            if per_stage.0.iter().any(|p| p.drops()) { layout.stages().saturating_mul(demand.m) } else { 0 };
        let executor =
            budget::executor(demand.actions.saturating_add(recompute), demand.steps, layout.stages(), demand.m);
        // This process's stages, and how many micro-batches each holds at once (a list of
        // another length is left whole, for the footprint to refuse).
        let held = transport.held(layout.stages(), |s| layout.rank_of(s));
        let in_flight: Vec<usize> = if demand.in_flight.len() == layout.stages() {
            held.iter().map(|&k| demand.in_flight[k]).collect()
        } else {
            demand.in_flight.clone()
        };
        Ok(Some(match &self.model.source {
            ModelSource::Synthetic(spec) => {
                let s = spec.split(layout.v);
                budget::synthetic(s.act_bytes, s.w_bytes, s.msg_bytes, demand.m, &in_flight).with(executor)
            }
            ModelSource::Model(spec) => {
                let all = spec.stage_specs(layout.stages(), &self.partition, &per_stage)?;
                let specs: Vec<_> = held.iter().map(|&k| all[k].clone()).collect();
                let batch = spec.rows(self.batch.unwrap_or(spec.batch)).unwrap_or(usize::MAX);
                let load = Load { batch, microbatches: demand.m, in_flight };
                let footprint = spec.footprint(&specs, &self.optimizer, &load)?;
                // Each stashed version is a copy of its stage's parameters.
                let stash = held.iter().zip(&footprint.stages).fold(0u64, |t, (&k, s)| {
                    let n = u64::from(demand.stashed.get(k).copied().unwrap_or(0));
                    t.saturating_add(n.saturating_mul(s.params))
                });
                let stash = Part {
                    name: "weight versions stashed for stale backwards",
                    bytes: stash,
                    remedies: &["--async 2bw (one version stashed per stage) or --no-barrier (none)", "more ranks"],
                };
                // With replicas, each stage's sum buffer (the optimizer state is counted whole:
                // an upper bound under ZeRO-1).
                let dp = DataParallel::new(transport.replicas(), false)?;
                let mut sums = 0u64;
                for &k in &held {
                    let trained = all[k].param_counts(spec).trained;
                    sums =
                        sums.saturating_add(ReplicaBytes::of(trained, &self.optimizer, spec.precision, dp)?.sum_buffer);
                }
                let sums = Part {
                    name: "buffers the gradients are summed over the replicas in",
                    bytes: sums,
                    remedies: &["more ranks", "fewer layers per stage"],
                };
                let estimate = Estimate::of_model(spec, &load, &footprint).with(executor).with(stash).with(sums);
                if demand.verify && transport.is_root() {
                    let whole = Load { batch, microbatches: demand.m, in_flight: demand.in_flight.clone() };
                    let footprint = spec.footprint(&all, &self.optimizer, &whole)?;
                    let mut estimate = estimate.with_reference(&footprint);
                    if !demand.stashed.is_empty() {
                        // A run's reference also keeps a copy of every optimizer's state, the
                        // newest weights of every stage, and the versions its stages stash.
                        let bytes = footprint.stages.iter().enumerate().fold(0u64, |t, (k, f)| {
                            let copies = 1 + u64::from(demand.stashed.get(k).copied().unwrap_or(0));
                            t.saturating_add(f.optimizer).saturating_add(f.params.saturating_mul(copies))
                        });
                        estimate = estimate.with(Part {
                            name: "the run's sequential reference: optimizer copies and weight versions",
                            bytes,
                            remedies: &["drop --verify", "fewer steps"],
                        });
                    }
                    if transport.is_processes() {
                        estimate.with_gathered_reference(&footprint, transport.replicas())
                    } else {
                        estimate
                    }
                } else {
                    estimate
                }
            }
        }))
    }

    /// Builds the stages for `layout` that `transport` gives this process (every one in
    /// process), stage `s` under policy `policies` (one for all, or one per stage), every rank
    /// on its device — after checking that running `demand` on them fits the memory budget.
    pub fn build(
        &self,
        layout: &Layout,
        policies: &Policies,
        demand: &Demand,
        transport: &Transport,
    ) -> Result<Box<dyn Workload>> {
        self.check(layout, policies)?;
        if let Some(estimate) = self.estimate_held(layout, policies, demand, transport)? {
            budget::check(&estimate, Available::probe().as_ref())?;
        }
        let per_stage = policies.for_stages(layout.stages())?;
        let devices = self.devices.resolve(layout.p)?;
        match &self.model.source {
            ModelSource::Synthetic(_) if transport.replicas() > 1 => Err(Error::Usage(
                "--dp: synthetic stages have no gradients to sum over replicas; give a real model".into(),
            )),
            ModelSource::Synthetic(spec) => {
                Ok(Box::new(SyntheticWorkload::new(spec, *layout, per_stage, transport.clone())?))
            }
            ModelSource::Model(spec) => {
                let mut spec = spec.clone();
                spec.seed = self.seed;
                let corpus = self.data.clone();
                let opts = ModelOptions {
                    stages: layout.stages(),
                    partition: self.partition.clone(),
                    policies: Policies(per_stage),
                    optimizer: self.optimizer,
                    batch: self.batch.unwrap_or(spec.batch),
                    data_seed: self.seed,
                    corpus,
                    devices: (0..layout.stages()).map(|k| devices[layout.rank_of(k)]).collect(),
                    held: Some(transport.held(layout.stages(), |s| layout.rank_of(s))),
                    init: self.init.clone(),
                };
                let mut model = Model::build(spec, &opts)?;
                if let Some(scale) = self.loss_scale {
                    model.set_loss_scale(scale)?;
                }
                let model = model.in_replicas(transport)?;
                Ok(Box::new(RealWorkload::new(model, *layout, transport.clone())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(model: &str) -> WorkloadSpec {
        WorkloadSpec {
            model: model.parse().unwrap(),
            partition: Partition::Even,
            batch: None,
            data: None,
            optimizer: OptimizerSpec::adam(1e-3),
            seed: 0,
            devices: Devices::Cpu,
            init: None,
            loss_scale: None,
        }
    }

    #[test]
    fn models_are_read_when_named() {
        assert!(!spec("tiny").model.is_synthetic());
        assert!(spec("synthetic:F=1ms").model.is_synthetic());
        assert_eq!(spec("synthetic:F=1ms").model.to_string(), "synthetic:F=1ms");
        let e = "nosuch".parse::<ModelChoice>().unwrap_err().to_string();
        assert!(e.contains("nosuch") && e.contains("tiny, small, medium"), "{e}");
        let e = "synthetic:F=1".parse::<ModelChoice>().unwrap_err().to_string();
        assert!(e.contains("give a unit"), "{e}");
    }

    #[test]
    fn check_refuses_what_build_would() {
        let tiny = spec("tiny"); // 6 layers
        let none = Policies::all(Default::default());
        assert!(tiny.check(&Layout::looped(2, 3), &none).is_ok());
        let e = tiny.check(&Layout::looped(4, 2), &none).unwrap_err();
        assert!(e.rules_out_configuration() && e.to_string().contains("8 stages"), "{e}");
        let here = Transport::InProcess;
        assert!(tiny.build(&Layout::looped(4, 2), &none, &Demand::profiling(8), &here).is_err());
        let e = tiny.check(&Layout::looped(2, 1), &"full,none,full".parse().unwrap()).unwrap_err();
        assert!(e.rules_out_configuration() && e.to_string().contains("3 policies"), "{e}");
        let w = tiny.build(&Layout::looped(2, 1), &"full,none".parse().unwrap(), &Demand::profiling(2), &here).unwrap();
        assert_eq!(w.policies().iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["full", "none"]);
        assert_eq!(w.rows(), Some(8));
    }
}
