//! Per-layer costs: what one layer of a model costs for one micro-batch — the times of its `F`,
//! `I`, `W` and `R`, and the bytes its own accounting gives — and a stage's cost composed from
//! them, for any partition into contiguous layer ranges and any recompute policy, without
//! profiling again.
//!
//! Invariant: the bytes of a composed stage are worked out by the same rule as a built stage's
//! (`bytes::held`, fed the layers' byte counts instead of their floats per row), so for the
//! partition and policies a model was profiled under they equal the stage profile's bytes
//! exactly. Times add up layer by layer: the sum leaves out what a stage does between its layers
//! (copying checkpoints, moving its input), which the stage profile includes.

use std::ops::Range;

use pipesched_schedules::StageCost;
use serde::{Deserialize, Serialize};

use crate::bytes::{held, model_input_units, optimal_plan, rows, LossRows, Rows, StageRows};
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::loss::LossKind;
use crate::optim::OptimizerSpec;
use crate::partition::StageSpec;
use crate::policy::Kept;
use crate::precision::Precision;
use crate::spec::ModelSpec;
use crate::stage::Stage;

/// Times of one layer's ops on one micro-batch, in the cost model's time unit.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LayerTimes {
    /// The forward, keeping what policy `none` keeps.
    pub f: f64,
    /// The input-gradient backward.
    pub i: f64,
    /// The weight-gradient backward.
    pub w: f64,
    /// Re-running the forward from the layer's input (`R` under `full`, `every:K`, `sqrt`).
    pub r: f64,
    /// `R` under `selective`: re-creating what the selective forward dropped; only for a layer
    /// with a selective form (the others' `R` does nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<f64>,
}

/// Bytes of one layer: per micro-batch, what each phase holds; and its static bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LayerBytes {
    /// Kept by `F` for the backward under policy `none`.
    pub act_bytes: u64,
    /// The layer's input: what a checkpoint before it keeps, and the gradient `I` sends back.
    pub input_bytes: u64,
    /// The layer's output: what it sends on.
    pub output_bytes: u64,
    /// Kept by `F` under `selective`, for a layer with a selective form (one that keeps less
    /// than under `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selective_bytes: Option<u64>,
    /// Kept from `I` until `W`.
    pub w_bytes: u64,
    /// The parameters.
    pub param_bytes: u64,
    /// The gradient buffers.
    pub grad_bytes: u64,
    /// The optimizer's state.
    pub optimizer_bytes: u64,
}

impl LayerBytes {
    /// Parameters, gradients and optimizer state.
    pub fn static_bytes(&self) -> u64 {
        self.param_bytes.saturating_add(self.grad_bytes).saturating_add(self.optimizer_bytes)
    }
}

/// One layer's costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    /// Its kind, as a model file names it (`linear`, `block`, `attention`, ...).
    pub kind: String,
    /// Times.
    #[serde(flatten)]
    pub times: LayerTimes,
    /// Bytes.
    #[serde(flatten)]
    pub bytes: LayerBytes,
}

/// The loss at the end of the model: its times and bytes for one micro-batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossCost {
    /// Which loss.
    pub kind: LossKind,
    /// Its forward (part of the last stage's `F`, and of its `R` under a checkpointing policy).
    pub f: f64,
    /// Its backward (part of the last stage's `I`).
    pub i: f64,
    /// Kept by its forward for its backward.
    pub saved_bytes: u64,
    /// The target, which a checkpointed last stage keeps.
    pub target_bytes: u64,
}

/// Every layer of a model, in model order, for micro-batches of `rows` rows, and its loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerCosts {
    /// The model's name.
    pub model_name: String,
    /// Rows per micro-batch the costs are for.
    pub rows: usize,
    /// Per layer.
    pub layers: Vec<LayerCost>,
    /// The loss.
    pub loss: LossCost,
}

/// Stages composed of per-layer costs.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposedStages {
    /// Per stage: times and bytes per micro-batch.
    pub costs: Vec<StageCost>,
    /// Per stage: parameters, gradients and optimizer state.
    pub static_bytes: Vec<u64>,
}

/// Profiled layers as the byte rule reads them: counts in bytes.
impl StageRows for [LayerCost] {
    fn sum(&self, step: usize, f: fn(&Rows) -> Option<usize>) -> Option<usize> {
        self.iter().step_by(step.max(1)).try_fold(0usize, |t, l| t.checked_add(f(&l.bytes.rows()?)?))
    }
    fn ends(&self) -> Option<(Rows, Rows)> {
        Some((self.first()?.bytes.rows()?, self.last()?.bytes.rows()?))
    }
    fn each(&self) -> Option<Vec<Rows>> {
        self.iter().map(|l| l.bytes.rows()).collect()
    }
}

/// A stage's profiled layers as the byte rule reads them, with the model's shapes for
/// `optimal`'s time proxy (a profile has no shapes; the proxy must be the one a built stage
/// uses, so both choose the same sequence).
struct Profiled<'a> {
    costs: &'a [LayerCost],
    model: &'a ModelSpec,
    start: usize,
}

impl StageRows for Profiled<'_> {
    fn sum(&self, step: usize, f: fn(&Rows) -> Option<usize>) -> Option<usize> {
        self.costs.sum(step, f)
    }
    fn ends(&self) -> Option<(Rows, Rows)> {
        self.costs.ends()
    }
    fn each(&self) -> Option<Vec<Rows>> {
        let maps = |k: usize| Some(self.model.layer(self.start + k)?.maps_per_row_in(self.model));
        self.costs.iter().enumerate().map(|(k, l)| Some(Rows { maps: maps(k)?, ..l.bytes.rows()? })).collect()
    }
}

impl LayerBytes {
    /// The layer as the byte rule sees it, in bytes; `None` if a count exceeds a `usize`.
    fn rows(&self) -> Option<Rows> {
        let u = |b: u64| usize::try_from(b).ok();
        Some(Rows {
            input: u(self.input_bytes)?,
            output: u(self.output_bytes)?,
            saved: Some(u(self.act_bytes)?),
            w: Some(u(self.w_bytes)?),
            selective: Some(u(self.selective_bytes.unwrap_or(self.act_bytes))?),
            maps: 0,
        })
    }

    /// `layer`'s bytes for one micro-batch of `batch` rows, from its counts of floats per row,
    /// and `statics` (its parameters, gradients and optimizer state); `None` on overflow.
    fn of(layer: &dyn Layer, batch: usize, statics: [u64; 3], input_units: usize) -> Option<LayerBytes> {
        let mut r = rows(layer);
        r.input = r.input.checked_mul(input_units)?;
        let scale = (batch as u64).checked_mul(Precision::of_storage(layer.storage()).stored_bytes())?;
        let b = |floats: usize| (floats as u64).checked_mul(scale);
        let (saved, selective) = (r.saved?, r.selective?);
        Some(LayerBytes {
            act_bytes: b(saved)?,
            input_bytes: b(r.input)?,
            output_bytes: b(r.output)?,
            selective_bytes: if selective < saved { Some(b(selective)?) } else { None },
            w_bytes: b(r.w?)?,
            param_bytes: statics[0],
            grad_bytes: statics[1],
            optimizer_bytes: statics[2],
        })
    }
}

impl Stage {
    /// Every layer's bytes for one micro-batch of `batch` rows (saturating at `u64::MAX`), from
    /// the counts the stage's own predictions are made of, with its parameters, its gradient
    /// buffers and the state `optimizer` keeps for them.
    pub fn layer_bytes(&self, batch: usize, optimizer: &OptimizerSpec) -> Vec<LayerBytes> {
        let mut grads = self.grads().into_iter();
        self.layers()
            .iter()
            .enumerate()
            .map(|(k, l)| {
                let params: u64 = l.params().iter().chain(&l.frozen()).map(|p| p.bytes()).sum();
                let grads: u64 = grads.by_ref().take(l.params().len()).map(|g| g.bytes()).sum();
                let count: u64 = l.params().iter().map(|p| p.len() as u64).sum();
                let statics = [params, grads, optimizer.state_bytes(count, self.storage())];
                let input_units = if k == 0 { model_input_units(self.is_first(), self.storage()) } else { 1 };
                LayerBytes::of(l.as_ref(), batch, statics, input_units).unwrap_or(LayerBytes {
                    act_bytes: u64::MAX,
                    input_bytes: u64::MAX,
                    output_bytes: u64::MAX,
                    selective_bytes: None,
                    w_bytes: u64::MAX,
                    param_bytes: statics[0],
                    grad_bytes: statics[1],
                    optimizer_bytes: statics[2],
                })
            })
            .collect()
    }

    /// The loss's bytes for one micro-batch of `batch` rows, on the last stage.
    pub fn loss_bytes(&self, batch: usize) -> Option<(u64, u64)> {
        let precision = self.storage();
        let l = LossRows::of(self.loss_kind()?, self.output_width(), precision);
        let b = |units: usize| (units as u64).checked_mul(batch as u64)?.checked_mul(precision.stored_bytes());
        Some((b(l.saved)?, b(l.target)?))
    }
}

impl LayerCosts {
    /// An error unless these costs are `model`'s: as many layers, of the same kinds and
    /// parameter counts, in the same order, and the same loss.
    pub fn check_model(&self, model: &ModelSpec) -> Result<()> {
        let refuse = |why: String| {
            Err(Error::Costs(format!(
                "the per-layer costs were profiled for model {:?}, but {why}; profile {} to compose its stages",
                self.model_name, model.name
            )))
        };
        let n = model.num_layers();
        if self.layers.len() != n {
            return refuse(format!("they have {} layers and {} has {n}", self.layers.len(), model.name));
        }
        if self.loss.kind != model.loss {
            return refuse(format!("they end in a {:?} loss and {} in {:?}", self.loss.kind, model.name, model.loss));
        }
        for ((k, cost), spec) in self.layers.iter().enumerate().zip(model.all_layers()) {
            if cost.kind != spec.kind() {
                return refuse(format!("their layer {k} is a {} and {}'s a {}", cost.kind, model.name, spec.kind()));
            }
            let count = spec.param_counts(model.lora.as_ref()).and_then(|c| c.total()).unwrap_or(u64::MAX);
            // As the model stores them: 2 bytes each under mixed precision.
            let params = count.saturating_mul(model.precision.stored_bytes());
            if cost.bytes.param_bytes != params {
                return refuse(format!(
                    "their layer {k} ({}) has {} bytes of parameters and {}'s {params}",
                    cost.kind, cost.bytes.param_bytes, model.name
                ));
            }
        }
        Ok(())
    }

    /// The cost of every stage of `specs` — contiguous layer ranges covering `model` in order,
    /// each with its recompute policy — composed of these per-layer costs: times added layer by
    /// layer (and the loss's on the last stage), bytes by the stages' own rule. An error if the
    /// costs are another model's or the stages do not cover the model.
    pub fn compose(&self, model: &ModelSpec, specs: &[StageSpec]) -> Result<ComposedStages> {
        self.check_model(model)?;
        let n = self.layers.len();
        let mut next = 0;
        for (k, spec) in specs.iter().enumerate() {
            if spec.layers.start != next || spec.layers.is_empty() || spec.layers.end > n {
                return Err(Error::Partition(format!(
                    "stage {k} has layers {:?}; the stages must be non-empty ranges of layers 0..{n} in order, each starting where the one before ended (at {next})",
                    spec.layers
                )));
            }
            next = spec.layers.end;
        }
        if next != n {
            return Err(Error::Partition(format!(
                "the stages end at layer {next}, but {} has {n} layers; the last stage must end the model",
                model.name
            )));
        }
        let mut out = ComposedStages { costs: Vec::with_capacity(specs.len()), static_bytes: vec![] };
        for spec in specs {
            if let crate::RecomputePolicy::Optimal(budget) = spec.policy {
                let loss = (spec.layers.end == n).then_some(self.loss_rows()).flatten();
                optimal_plan(&self.profiled(model, spec), budget, loss, 1, self.rows, 1)
                    .map_err(|e| Error::Policy(format!("stage {} (layers {:?}): {e}", spec.index, spec.layers)))?;
            }
            let (cost, statics) = self.stage(model, spec).ok_or_else(|| Error::Size {
                what: format!("the bytes of stage {} (layers {:?})", spec.index, spec.layers),
                hint: "the per-layer costs hold counts that overflow 64 bits; profile again".into(),
            })?;
            out.costs.push(cost);
            out.static_bytes.push(statics);
        }
        Ok(out)
    }

    /// The least BYTES `optimal:BYTES` takes on stage `spec` of `model` (whatever its own
    /// policy), in micro-batches of these costs' rows.
    pub fn optimal_least_budget(&self, model: &ModelSpec, spec: &StageSpec) -> Result<u64> {
        self.check_model(model)?;
        if spec.layers.is_empty() || spec.layers.end > self.layers.len() {
            return Err(Error::Partition(format!(
                "stage {} has layers {:?}, outside the model's 0..{}",
                spec.index,
                spec.layers,
                self.layers.len()
            )));
        }
        let loss = if spec.layers.end == self.layers.len() { self.loss_rows() } else { None };
        let each = self.profiled(model, spec).each().ok_or_else(|| Error::Size {
            what: format!("the bytes of stage {}", spec.index),
            hint: "profile again".into(),
        })?;
        crate::optimal::OptimalPlan::least(&each, loss.map(|l| l.saved), 1, self.rows)
    }

    /// The loss as the byte rule reads it, in bytes; `None` if a count exceeds a `usize`.
    fn loss_rows(&self) -> Option<LossRows> {
        Some(LossRows {
            saved: usize::try_from(self.loss.saved_bytes).ok()?,
            target: usize::try_from(self.loss.target_bytes).ok()?,
        })
    }

    /// Stage `spec`'s profiled layers, with `model`'s shapes for `optimal`'s time proxy.
    fn profiled<'a>(&'a self, model: &'a ModelSpec, spec: &StageSpec) -> Profiled<'a> {
        Profiled { costs: &self.layers[spec.layers.clone()], model, start: spec.layers.start }
    }

    /// One stage's cost and static bytes; `None` on overflow (or an `optimal` budget the stage
    /// cannot meet, which `compose` reports first).
    fn stage(&self, model: &ModelSpec, spec: &StageSpec) -> Option<(StageCost, u64)> {
        let range: Range<usize> = spec.layers.clone();
        let layers = &self.layers[range.clone()];
        let last = range.end == self.layers.len();
        let loss = if last { Some(self.loss_rows()?) } else { None };
        let profiled = self.profiled(model, spec);
        let bytes = held(&profiled, spec.policy, range.start == 0, loss, 1, self.rows, 1)?.scaled(1)?;
        let sum = |t: fn(&LayerTimes) -> f64| layers.iter().map(|l| t(&l.times)).sum::<f64>();
        let loss_f = if last { self.loss.f } else { 0.0 };
        let f = sum(|t| t.f) + loss_f;
        // Under `optimal`, `I` runs the sequence's forwards after `F`'s sweep: each `Fall` costs
        // a forward keeping what `none` keeps, each other forward a re-run keeping nothing.
        let mut interleaved = 0.0;
        let r = match spec.policy.kept(layers.len()) {
            Kept::Everything => f,
            Kept::Selective => sum(|t| t.restore.unwrap_or(0.0)),
            Kept::Inputs(_) => sum(|t| t.r) + loss_f,
            Kept::Optimal(budget) => {
                let plan = optimal_plan(&profiled, budget, loss, 1, self.rows, 1).ok()?;
                let t = |(i, all): (usize, bool)| if all { layers[i].times.f } else { layers[i].times.r };
                interleaved = plan.recomputed().into_iter().map(t).sum();
                0.0
            }
        };
        let cost = StageCost {
            r: Some(r),
            i: sum(|t| t.i) + if last { self.loss.i } else { 0.0 } + interleaved,
            ..bytes.cost(f, 0.0, sum(|t| t.w))
        };
        let statics = layers.iter().try_fold(0u64, |t, l| t.checked_add(l.bytes.static_bytes()))?;
        Some((cost, statics))
    }

    /// An error naming the first layer (or the loss) with a time that is not a finite number
    /// ≥ 0.
    pub fn check_times(&self) -> Result<()> {
        let bad = |t: f64| !t.is_finite() || t < 0.0;
        for (k, l) in self.layers.iter().enumerate() {
            let t = l.times;
            if [t.f, t.i, t.w, t.r, t.restore.unwrap_or(0.0)].into_iter().any(bad) {
                return Err(Error::Costs(format!(
                    "layer {k} ({}) has times {t:?}; every time must be a finite number ≥ 0",
                    l.kind
                )));
            }
        }
        if bad(self.loss.f) || bad(self.loss.i) {
            return Err(Error::Costs(format!(
                "the loss has times f = {}, i = {}; every time must be a finite number ≥ 0",
                self.loss.f, self.loss.i
            )));
        }
        if self.layers.is_empty() {
            return Err(Error::Costs("the per-layer costs list no layer; list every layer of the model".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Partition, Policies};

    /// `model`'s per-layer costs with zero times, from a one-stage build.
    fn costs(model: &ModelSpec, batch: usize) -> LayerCosts {
        let opt = OptimizerSpec::adam(1e-3);
        let specs = model.stage_specs(1, &Partition::Even, &Policies::all(Default::default())).unwrap();
        let stage = Stage::new(model, &specs[0]).unwrap();
        let (saved_bytes, target_bytes) = stage.loss_bytes(batch).unwrap();
        let layers = stage
            .layer_bytes(batch, &opt)
            .into_iter()
            .zip(stage.layers())
            .map(|(bytes, l)| LayerCost { kind: l.kind().into(), times: LayerTimes::default(), bytes })
            .collect();
        let loss = LossCost { kind: model.loss, f: 0.0, i: 0.0, saved_bytes, target_bytes };
        LayerCosts { model_name: model.name.clone(), rows: batch, layers, loss }
    }

    #[test]
    fn composed_bytes_are_the_stages_own_for_any_partition_and_policy() {
        let opt = OptimizerSpec::adam(1e-3);
        for model in [ModelSpec::tiny(), ModelSpec::small(), ModelSpec::gpt_tiny()] {
            let lc = costs(&model, 7);
            for policy in ["none", "full", "every:2", "sqrt", "selective", "full,none", "selective,every:3"] {
                for n in [1, 2, 3] {
                    let Ok(specs) = model.stage_specs(n, &Partition::Even, &policy.parse().unwrap()) else { continue };
                    let got = lc.compose(&model, &specs).unwrap();
                    for (k, spec) in specs.iter().enumerate() {
                        let want = spec.predicted_bytes(&model, 7);
                        let c = &got.costs[k];
                        let have = StageBytes {
                            act_bytes: c.act_bytes,
                            recompute_bytes: c.recompute_bytes,
                            w_bytes: c.w_bytes,
                            fwd_msg_bytes: c.fwd_msg_bytes,
                            bwd_msg_bytes: c.bwd_msg_bytes,
                        };
                        assert_eq!(have, want, "{} {policy} {n} stage {k}", model.name);
                        let stage = Stage::new(&model, spec).unwrap();
                        assert_eq!(got.static_bytes[k], stage.static_bytes(&opt), "{} stage {k}", model.name);
                    }
                }
            }
        }
    }

    #[test]
    fn times_add_up_by_policy() {
        let model = ModelSpec::gpt_tiny();
        let mut lc = costs(&model, 16);
        for (k, l) in lc.layers.iter_mut().enumerate() {
            let x = (k + 1) as f64;
            l.times =
                LayerTimes { f: x, i: 2.0 * x, w: 3.0 * x, r: 4.0 * x, restore: l.bytes.selective_bytes.map(|_| 0.5) };
        }
        lc.loss.f = 100.0;
        lc.loss.i = 200.0;
        let n = lc.layers.len();
        let compose = |policy: &str| {
            let specs =
                vec![StageSpec { index: 0, layers: 0..n, policy: policy.parse().unwrap(), device: Default::default() }];
            lc.compose(&model, &specs).unwrap().costs[0].clone()
        };
        let tri = (n * (n + 1) / 2) as f64;
        let none = compose("none");
        assert_eq!((none.f, none.i, none.w, none.t_r()), (tri + 100.0, 2.0 * tri + 200.0, 3.0 * tri, tri + 100.0));
        assert_eq!(compose("full").t_r(), 4.0 * tri + 100.0);
        let attention = model.all_layers().iter().filter(|l| l.kind() == "attention").count();
        assert!(attention > 0);
        assert_eq!(compose("selective").t_r(), 0.5 * attention as f64);
    }

    /// `optimal` composed from per-layer costs: the bytes of the built stage's own plan, and `I`
    /// taking the forwards that plan re-runs (`f` for a `Fall`, `r` for the others).
    #[test]
    fn optimal_composes_to_the_built_stages_plan() {
        for model in [ModelSpec::tiny(), ModelSpec::gpt_tiny()] {
            let rows = model.rows(model.batch).unwrap();
            let mut lc = costs(&model, rows);
            for (k, l) in lc.layers.iter_mut().enumerate() {
                l.times = LayerTimes { f: 1.0 + k as f64, i: 0.5, w: 0.25, r: 10.0 * (1.0 + k as f64), restore: None };
            }
            for n in [1, 2] {
                let plain = model.stage_specs(n, &Partition::Even, &Policies::all(Default::default())).unwrap();
                let least: Vec<u64> = plain.iter().map(|s| lc.optimal_least_budget(&model, s).unwrap()).collect();
                let most = *least.iter().max().unwrap();
                for budget in [most, 2 * most, 1 << 40] {
                    let policy = crate::RecomputePolicy::Optimal(budget);
                    let specs = model.stage_specs(n, &Partition::Even, &Policies::all(policy)).unwrap();
                    let got = lc.compose(&model, &specs).unwrap();
                    for (k, spec) in specs.iter().enumerate() {
                        let mut stage = Stage::new(&model, spec).unwrap();
                        let plan = stage.optimal_plan(rows).unwrap();
                        let c = &got.costs[k];
                        let want = stage.predicted_bytes(rows);
                        assert_eq!(
                            (c.act_bytes, c.recompute_bytes, c.w_bytes),
                            (want.act_bytes, want.recompute_bytes, want.w_bytes)
                        );
                        assert_eq!(c.act_bytes, plan.kept());
                        assert_eq!(c.act_bytes + c.recompute_bytes, plan.peak());
                        let layers = &lc.layers[spec.layers.clone()];
                        let rerun: f64 = plan
                            .recomputed()
                            .iter()
                            .map(|&(i, all)| if all { layers[i].times.f } else { layers[i].times.r })
                            .sum();
                        let last = spec.layers.end == lc.layers.len();
                        assert_eq!(c.i, 0.5 * layers.len() as f64 + if last { lc.loss.i } else { 0.0 } + rerun);
                        assert_eq!(c.t_r(), 0.0, "no R under optimal");
                        if budget == 1 << 40 {
                            assert_eq!(rerun, 0.0);
                        }
                    }
                }
                let specs = model
                    .stage_specs(n, &Partition::Even, &Policies::all(crate::RecomputePolicy::Optimal(most - 1)))
                    .unwrap();
                let e = lc.compose(&model, &specs).unwrap_err().to_string();
                assert!(e.contains(&format!("give at least optimal:{most}B")), "{e}");
            }
        }
    }

    #[test]
    fn another_models_costs_are_refused() {
        let tiny = costs(&ModelSpec::tiny(), 4);
        let one =
            |model: &ModelSpec| model.stage_specs(1, &Partition::Even, &Policies::all(Default::default())).unwrap();
        let small = ModelSpec::small();
        let e = tiny.compose(&small, &one(&small)).unwrap_err().to_string();
        assert!(e.contains("profiled for model \"tiny\"") && e.contains("profile small"), "{e}");
        let gpt = ModelSpec::gpt_tiny();
        let e = tiny.compose(&gpt, &one(&gpt)).unwrap_err().to_string();
        assert!(e.contains("tiny"), "{e}");
        let wider = ModelSpec::tiny().with_mlp(|s| s.hidden += 8).unwrap();
        let e = tiny.compose(&wider, &one(&wider)).unwrap_err().to_string();
        assert!(e.contains("bytes of parameters"), "{e}");
        let tiny_model = ModelSpec::tiny();
        let mut specs = one(&tiny_model);
        specs[0].layers.end -= 1;
        let e = tiny.compose(&tiny_model, &specs).unwrap_err().to_string();
        assert!(e.contains("the last stage must end the model"), "{e}");
    }

    use crate::StageBytes;
}
