//! The search for the fastest plan under a memory cap: over micro-batch counts m (divisors of
//! the step's batch, m ≥ p), schedule kinds (every [`Kind::ALL`] that takes p and m, and `auto`
//! built under the cap), partitions (balanced by layer time, and even) and a recompute policy
//! per stage — every candidate validated and simulated with the cost model composed from
//! per-layer costs ([`LayerCosts::compose`]).
//!
//! Per family (kind × m × partition): every stage starts at `none`; while a rank's predicted
//! peak is over the cap, the stage on the worst rank whose next policy saves the most bytes
//! per micro-batch steps down its ladder (its policies ordered by the bytes `F` keeps, each
//! keeping strictly less than the one before, so dominated ones are skipped); once it fits,
//! single stages step back up while that fits and shortens the step. Each uniform policy is a
//! candidate too. `auto` gets the cap minus the static bytes and the bytes `R` re-creates as
//! its activation limit, and is rebuilt for each change of policies.
//!
//! Micro-batch size: per-layer costs are measured for one size (`rows`), or for several
//! ([`Request::measured`]: `plan` without a cost file profiles every candidate size). For a size
//! not measured
//! the per-micro-batch bytes (activations, inputs, outputs, what `W` needs, the loss's) scale
//! exactly with the rows — a layer's count is floats per row times rows — and parameters,
//! gradients and optimizer state do not; times scale linearly in rows, which leaves out any
//! fixed cost per op (so a smaller micro-batch than profiled is predicted somewhat too fast).
//!
//! What `optimal:B` stages hold inside their `I` is in the simulated peaks (the ledger's working
//! bytes), as in what `run` measures.
//!
//! Invariant: every candidate returned fits — its predicted peak held bytes are ≤ the cap on
//! every rank — and the list is ordered by predicted step time, then by peak.

use std::collections::HashMap;
use std::ops::Range;

use pipesched_schedules::{
    auto, with_recompute, CostModel, DataParallel, Kind, Objective, Schedule, StageCosts, Stats,
};
use pipesched_stages::{balanced_by_weight, LayerCosts, ModelSpec, Partition, RecomputePolicy};

use super::candidate::{simulate_step, Candidate, Point, Rejection};
use super::table::{policy_set, Table};
use crate::cost_file::CostFile;
use crate::replica_bytes::ReplicaBytes;
use crate::workload::Layout;
use crate::{units, Error, Result};

/// What to plan for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The model.
    pub model: &'a ModelSpec,
    /// Its per-layer costs (and the latency, bandwidth and time unit).
    pub costs: &'a CostFile,
    /// Ranks.
    pub p: usize,
    /// Samples per step (rows, or sequences for a model of sequences).
    pub batch: usize,
    /// Most held bytes per rank.
    pub cap: u64,
    /// Per-layer costs measured at other micro-batch sizes: a size found here (by its rows) is
    /// used as measured; any other is scaled from `costs`.
    pub measured: &'a [LayerCosts],
    /// Data-parallel replicas: each runs the plan on batch/D samples a step, every stage keeps
    /// its sum's buffer (and under ZeRO-1 its slice of the optimizer state), and the step ends
    /// when the last stage's sum over the replicas does.
    pub dp: DataParallel,
}

/// What the search found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every plan that fits, fastest first.
    pub plans: Vec<Candidate>,
    /// Families with no plan that fits, and why.
    pub rejected: Vec<Rejection>,
    /// Every simulated point, fitting or not.
    pub points: Vec<Point>,
    /// The costs' time unit.
    pub time_unit: String,
    /// Simulations run.
    pub simulations: usize,
}

/// The micro-batch counts to try: the divisors m ≥ p of `batch`.
pub fn microbatch_counts(p: usize, batch: usize) -> Result<Vec<usize>> {
    let ms: Vec<usize> = (p..=batch).filter(|m| batch % m == 0).collect();
    if ms.is_empty() {
        return Err(Error::NoPlan(format!(
            "--batch {batch} has no divisor m ≥ p = {p}: a step of {batch} samples does not split into at least {p} equal micro-batches, so no rank would get one each; give a batch with a divisor ≥ {p} (e.g. {})",
            p.max(1) * batch.div_ceil(p.max(1)).max(1)
        )));
    }
    Ok(ms)
}

/// The samples each of `dp`'s replicas runs a step of `batch`: batch/D, or an error when D
/// does not divide it.
pub fn replica_batch(batch: usize, dp: DataParallel) -> Result<usize> {
    let d = dp.replicas.max(1);
    if batch % d != 0 {
        return Err(Error::Usage(format!(
            "--batch {batch} does not split over --dp {d} replicas: each runs batch/D samples a step; give a batch divisible by {d}"
        )));
    }
    Ok(batch / d)
}

/// `costs` for micro-batches of `rows` rows: per-micro-batch bytes scaled exactly with the
/// rows, static bytes unchanged, times linearly.
pub fn scaled(costs: &LayerCosts, rows: usize) -> LayerCosts {
    if rows == costs.rows {
        return costs.clone();
    }
    let (old, new) = (costs.rows as u128, rows as u128);
    // Each count is floats per row × rows × 4, so it divides by the profiled rows; a file
    // edited by hand may not, and is rounded up.
    let b = |x: u64| u64::try_from((x as u128 * new).div_ceil(old)).unwrap_or(u64::MAX);
    let t = |x: f64| x * rows as f64 / costs.rows as f64;
    let mut out = costs.clone();
    out.rows = rows;
    for l in &mut out.layers {
        let (tm, by) = (&mut l.times, &mut l.bytes);
        (tm.f, tm.i, tm.w, tm.r) = (t(tm.f), t(tm.i), t(tm.w), t(tm.r));
        tm.restore = tm.restore.map(t);
        (by.act_bytes, by.input_bytes, by.output_bytes, by.w_bytes) =
            (b(by.act_bytes), b(by.input_bytes), b(by.output_bytes), b(by.w_bytes));
        by.selective_bytes = by.selective_bytes.map(b);
    }
    let loss = &mut out.loss;
    (loss.f, loss.i) = (t(loss.f), t(loss.i));
    (loss.saved_bytes, loss.target_bytes) = (b(loss.saved_bytes), b(loss.target_bytes));
    out
}

/// Named partitions: how each was found, and each stage's layers.
type Splits = Vec<(&'static str, Vec<Range<usize>>)>;

/// The partitions into `stages` stages to try: balanced by layer time (F + I + W), then the
/// even split when it differs.
fn partitions(model: &ModelSpec, costs: &LayerCosts, stages: usize) -> Result<Splits> {
    // Times in units of 1e-6 of the cost file's unit (ns for a file in ms), as integers.
    let weights: Vec<u64> =
        costs.layers.iter().map(|l| ((l.times.f + l.times.i + l.times.w) * 1e6).round().max(0.0) as u64).collect();
    let counts = balanced_by_weight(&weights, stages)?;
    let mut start = 0;
    let balanced: Vec<Range<usize>> = counts
        .iter()
        .map(|c| {
            start += c;
            start - c..start
        })
        .collect();
    let even = Partition::Even.ranges(model, stages)?;
    let mut out = vec![("balanced", balanced)];
    if out[0].1 != even {
        out.push(("even", even));
    }
    Ok(out)
}

/// One family's fixed parts: kind, layout, partition, its cost table.
struct Family<'a> {
    kind: Kind,
    layout: Layout,
    m: usize,
    microbatch: usize,
    split: &'static str,
    ranges: &'a [Range<usize>],
    table: &'a Table,
    /// The generated schedule (`None` for `auto`, built per assignment).
    base: Option<&'a Schedule>,
    statics: Vec<u64>,
    /// Each stage's gradient bytes summed over the replicas (empty without).
    sum_bytes: Vec<u64>,
}

/// The searcher's state: the request, what was found.
struct Search<'a> {
    req: Request<'a>,
    plans: Vec<Candidate>,
    points: Vec<Point>,
    simulations: usize,
}

/// One evaluation: the schedule without `R` and its stats, or why there is none.
type Evaluated = std::result::Result<(Schedule, Stats), String>;

impl Search<'_> {
    /// The cost model of `fam` with stage `s` under ladder rung `pos[s]`.
    fn costs(&self, fam: &Family, pos: &[usize]) -> CostModel {
        let stages = pos.iter().enumerate().map(|(s, &k)| fam.table.costs[fam.table.ladder[s][k]][s].clone()).collect();
        let file = &self.req.costs.model;
        CostModel {
            costs: StageCosts::Stages(stages),
            latency: file.latency,
            bandwidth: file.bandwidth,
            static_bytes: fam.statics.clone(),
            host_link: file.host_link,
            time_unit: file.time_unit.clone(),
        }
    }

    fn policies(&self, fam: &Family, pos: &[usize]) -> Vec<RecomputePolicy> {
        pos.iter().enumerate().map(|(s, &k)| fam.table.policies[fam.table.ladder[s][k]][s]).collect()
    }

    /// Simulates `fam` under `pos`; a fitting one becomes a candidate.
    fn evaluate(&mut self, fam: &Family, pos: &[usize]) -> Evaluated {
        let costs = self.costs(fam, pos);
        let policies = self.policies(fam, pos);
        let base = match fam.base {
            Some(b) => b.clone(),
            None => {
                let StageCosts::Stages(stages) = &costs.costs else { unreachable!("composed per stage") };
                let p = fam.layout.p;
                let mut limit = u64::MAX;
                for (r, &stat) in fam.statics.iter().enumerate() {
                    let recreated = (0..stages.len())
                        .filter(|&s| fam.layout.rank_of(s) == r)
                        .map(|s| stages[s].recompute_bytes)
                        .max();
                    let room = self.req.cap.checked_sub(stat).and_then(|x| x.checked_sub(recreated.unwrap_or(0)));
                    limit = limit.min(room.unwrap_or(0));
                }
                auto(p, fam.m, &costs, limit, Objective::Makespan).map_err(|e| e.to_string())?
            }
        };
        let flags: Vec<bool> = policies.iter().map(|p| p.drops()).collect();
        let planned = with_recompute(&base, &flags).map_err(|e| e.to_string())?;
        // Held bytes as `run` measures them, `optimal`'s recomputation inside its `I` included
        // (the ledger's working bytes).
        let (step, mut stats) =
            simulate_step(&planned, &costs, self.req.dp, &fam.sum_bytes).map_err(|e| e.to_string())?;
        // The search climbs on the step, the sums over replicas included (the compute's
        // makespan without replicas).
        stats.makespan = step;
        self.simulations += 1;
        let peak = stats.peak_held_bytes.iter().copied().max().unwrap_or(0);
        self.points.push(Point { makespan: step, peak });
        if peak <= self.req.cap {
            let c = Candidate {
                kind: fam.kind,
                v: fam.layout.v,
                m: fam.m,
                microbatch: fam.microbatch,
                split: fam.split,
                ranges: fam.ranges.to_vec(),
                policies,
                makespan: step,
                bubble: stats.bubble_rate,
                peaks: stats.peak_held_bytes.clone(),
                static_bytes: fam.statics.clone(),
                schedule: base.clone(),
                dp: self.req.dp,
                sum_bytes: fam.sum_bytes.clone(),
            };
            if !self.plans.iter().any(|o| o.same_plan(&c)) {
                self.plans.push(c);
            }
        }
        Ok((base, stats))
    }

    /// The worst rank over the cap and by how much, if any.
    fn over(&self, stats: &Stats) -> Option<(usize, u64)> {
        let cap = self.req.cap;
        stats
            .peak_held_bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b > cap)
            .max_by_key(|(_, &b)| b)
            .map(|(r, &b)| (r, b - cap))
    }

    /// The stage on rank `r` whose next rung saves the most bytes, if any can step down.
    fn step_down(&self, fam: &Family, pos: &[usize], r: usize) -> Option<usize> {
        let t = fam.table;
        (0..pos.len()).filter(|&s| fam.layout.rank_of(s) == r && pos[s] + 1 < t.ladder[s].len()).max_by_key(|&s| {
            let (a, b) = (t.ladder[s][pos[s]], t.ladder[s][pos[s] + 1]);
            t.costs[a][s].act_bytes - t.costs[b][s].act_bytes
        })
    }

    /// Searches one family; `Some(reason)` when nothing of it fits.
    fn family(&mut self, fam: &Family) -> Option<String> {
        let stages = fam.ranges.len();
        let before = self.plans.len();
        let is_auto = fam.base.is_none();
        // The uniform columns (one rung index per column of the table, where a stage has it).
        if !is_auto {
            for k in 1..fam.table.policies.len() {
                if (0..stages).all(|s| fam.table.ladder[s].contains(&k)) {
                    let pos: Vec<usize> =
                        (0..stages).map(|s| fam.table.ladder[s].iter().position(|&x| x == k).unwrap_or(0)).collect();
                    let _ = self.evaluate(fam, &pos);
                }
            }
        }
        let mut pos = vec![0usize; stages];
        let mut fitted: Option<f64> = None;
        let mut last = String::new();
        loop {
            let worst = match self.evaluate(fam, &pos) {
                Ok((_, stats)) => match self.over(&stats) {
                    None => {
                        fitted = Some(stats.makespan);
                        break;
                    }
                    Some((r, by)) => {
                        last = format!(
                            "over the cap by {} on rank {r} (peak {}) with policies {}",
                            units::bytes(by),
                            units::bytes(stats.peak_held_bytes[r]),
                            Candidate::policy_list(&self.policies(fam, &pos))
                        );
                        r
                    }
                },
                Err(e) if is_auto => {
                    // The limit is below one micro-batch somewhere: keep less on the rank
                    // that keeps most.
                    last = e;
                    let costs = self.costs(fam, &pos);
                    let StageCosts::Stages(st) = &costs.costs else { unreachable!("composed per stage") };
                    let s = (0..stages)
                        .filter(|&s| pos[s] + 1 < fam.table.ladder[s].len())
                        .max_by_key(|&s| st[s].act_bytes);
                    match s {
                        Some(s) => fam.layout.rank_of(s),
                        None => break,
                    }
                }
                Err(e) => return Some(e),
            };
            match self.step_down(fam, &pos, worst) {
                Some(s) => pos[s] += 1,
                None => {
                    last.push_str(&format!("; every stage on rank {worst} already keeps the least it can"));
                    break;
                }
            }
        }
        if let (Some(mut best), false) = (fitted, is_auto) {
            // Step single stages back up while that still fits and is faster.
            loop {
                let mut improved: Option<(usize, f64)> = None;
                for s in 0..stages {
                    if pos[s] == 0 {
                        continue;
                    }
                    pos[s] -= 1;
                    if let Ok((_, st)) = self.evaluate(fam, &pos) {
                        if self.over(&st).is_none() && st.makespan < improved.map_or(best, |(_, t)| t) {
                            improved = Some((s, st.makespan));
                        }
                    }
                    pos[s] += 1;
                }
                match improved {
                    Some((s, t)) => {
                        pos[s] -= 1;
                        best = t;
                    }
                    None => break,
                }
            }
        }
        (self.plans.len() == before && fitted.is_none()).then_some(last)
    }
}

/// Searches every family for `req`: the plans that fit, fastest first, or an error when none
/// does (naming the least peak reached), the cap is below every split's static bytes, the
/// batch has no divisor m ≥ p, or the costs are another model's.
pub fn search(req: Request) -> Result<Outcome> {
    let Some(layers) = &req.costs.layers else {
        return Err(Error::Config(
            "the cost file has no per-layer costs to plan with; write one with `pipesched profile` on a real model, or leave --costs-file out to profile now".into(),
        ));
    };
    layers.check_model(req.model)?;
    let p = req.p;
    let batch = replica_batch(req.batch, req.dp)?;
    let ms = microbatch_counts(p, batch)?;
    let set = policy_set(req.model);
    let mut kinds: Vec<Kind> = Kind::ALL.to_vec();
    kinds.push(Kind::Auto);
    let n = req.model.num_layers();
    // Partitions per chunk count, found once: scaling times by rows changes no balance.
    let mut splits: HashMap<usize, std::result::Result<Splits, String>> = HashMap::new();
    for kind in &kinds {
        let v = kind.default_chunks();
        splits.entry(v).or_insert_with(|| {
            if p * v > n {
                Err(format!("{} stages (p·v = {p}·{v}) for a model of {n} layers", p * v))
            } else {
                partitions(req.model, layers, p * v).map_err(|e| e.to_string())
            }
        });
    }
    let mut search = Search { req, plans: vec![], points: vec![], simulations: 0 };
    let mut rejected = Vec::new();
    let mut least_static: Option<(u64, String)> = None;
    for &m in &ms {
        let microbatch = batch / m;
        let Some(rows) = req.model.rows(microbatch) else { continue };
        let layer_costs = match req.measured.iter().find(|c| c.rows == rows) {
            Some(c) => {
                c.check_model(req.model)?;
                c.clone()
            }
            None => scaled(layers, rows),
        };
        let mut tables: HashMap<(usize, usize), Table> = HashMap::new();
        for kind in &kinds {
            let v = kind.default_chunks();
            let family = format!("{kind} m={m}");
            let parts = match &splits[&v] {
                Ok(parts) => parts,
                Err(e) => {
                    rejected.push(Rejection { family, reason: e.clone() });
                    continue;
                }
            };
            let base = if *kind == Kind::Auto {
                None
            } else {
                match kind.generate(p, v, m) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        rejected.push(Rejection { family, reason: e.to_string() });
                        continue;
                    }
                }
            };
            let layout = Layout::new(p, v, kind.placement());
            for (k, (split, ranges)) in parts.iter().enumerate() {
                if let std::collections::hash_map::Entry::Vacant(e) = tables.entry((v, k)) {
                    e.insert(Table::new(req.model, &layer_costs, ranges, &set)?);
                }
                let table = &tables[&(v, k)];
                let (stage_statics, sum_bytes) = over_replicas(req.model, ranges, &table.statics, req.dp)?;
                let mut statics = vec![0u64; p];
                for (s, b) in stage_statics.iter().enumerate() {
                    statics[layout.rank_of(s)] = statics[layout.rank_of(s)].saturating_add(*b);
                }
                let family = format!("{kind} m={m} {split} {}", counts(ranges));
                let (r, most) = statics.iter().copied().enumerate().max_by_key(|x| x.1).unwrap_or((0, 0));
                if least_static.as_ref().is_none_or(|(b, _)| most < *b) {
                    least_static = Some((most, format!("rank {r} of {kind} with layers split {}", counts(ranges))));
                }
                if most > req.cap {
                    let reason = format!(
                        "the static bytes (parameters, gradients, optimizer state) of rank {r} are {}, over the cap by {}",
                        units::bytes(most),
                        units::bytes(most - req.cap)
                    );
                    rejected.push(Rejection { family, reason });
                    continue;
                }
                let fam = Family {
                    kind: *kind,
                    layout,
                    m,
                    microbatch,
                    split,
                    ranges,
                    table,
                    base: base.as_ref(),
                    statics,
                    sum_bytes,
                };
                if let Some(reason) = search.family(&fam) {
                    rejected.push(Rejection { family, reason });
                }
            }
        }
    }
    if let Some((least, at)) = least_static.as_ref().filter(|(b, _)| *b > req.cap) {
        return Err(Error::NoPlan(format!(
            "the memory cap {} ({} B) is below the static bytes (parameters, gradients, optimizer state) of every split: the least is {} ({least} B, {at}); raise the cap or use more ranks",
            units::bytes(req.cap),
            req.cap,
            units::bytes(*least)
        )));
    }
    let Search { mut plans, points, simulations, .. } = search;
    if plans.is_empty() {
        let least = points.iter().map(|p| p.peak).min();
        return Err(Error::NoPlan(match least {
            Some(b) => format!(
                "no plan fits under the memory cap {} ({} B): the smallest peak any candidate reached is {} ({b} B) on its busiest rank; raise the cap to at least that, or use more ranks",
                units::bytes(req.cap),
                req.cap,
                units::bytes(b)
            ),
            None => format!(
                "no candidate could be built for p = {p}: {}",
                rejected.iter().map(|r| format!("{}: {}", r.family, r.reason)).collect::<Vec<_>>().join("; ")
            ),
        }));
    }
    plans.sort_by(|a, b| a.makespan.total_cmp(&b.makespan).then(a.peak().cmp(&b.peak())));
    Ok(Outcome { plans, rejected, points, time_unit: req.costs.model.time_unit.clone(), simulations })
}

/// Each stage's static bytes as replica 0 of `dp` — one pipeline's (`statics`, parameters,
/// gradients and optimizer object, with Adam as `plan` builds stages), the optimizer object
/// replaced by replica 0's ([`ReplicaBytes`]: its slice under ZeRO-1) and the sum's buffer added
/// — and each stage's gradient bytes summed over the replicas (empty with one).
fn over_replicas(
    model: &ModelSpec,
    ranges: &[Range<usize>],
    statics: &[u64],
    dp: DataParallel,
) -> Result<(Vec<u64>, Vec<u64>)> {
    if !dp.sums() {
        return Ok((statics.to_vec(), Vec::new()));
    }
    let adam = super::optimizer();
    let (mut out, mut sums) = (Vec::with_capacity(ranges.len()), Vec::with_capacity(ranges.len()));
    for (range, &whole) in ranges.iter().zip(statics) {
        let trained = model
            .param_counts(range)
            .ok_or_else(|| Error::Usage(format!("the parameters of layers {range:?} overflow 64 bits")))?
            .trained;
        let alone = ReplicaBytes::of(trained, &adam, model.precision, DataParallel::NONE)?;
        let replica = ReplicaBytes::of(trained, &adam, model.precision, dp)?;
        let pipeline = whole.checked_sub(alone.optimizer_held()).ok_or_else(|| {
            Error::Config(format!(
                "the cost file's static bytes of layers {range:?} ({whole} B) hold less than Adam's state for their {trained} trained parameters in {}; plan assumes Adam: profile with it",
                model.precision
            ))
        })?;
        out.push(pipeline + replica.optimizer_held() + replica.sum_buffer);
        sums.push(replica.sum_buffer);
    }
    Ok((out, sums))
}

/// Layers per stage, comma-separated.
fn counts(ranges: &[Range<usize>]) -> String {
    ranges.iter().map(|r| r.len().to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_stages::{LayerCost, LayerTimes, LossCost, OptimizerSpec, Policies, Stage};

    /// `model`'s per-layer costs for micro-batches of `batch` samples, bytes from a built stage,
    /// every time 1.
    fn costs(model: &ModelSpec, batch: usize) -> LayerCosts {
        let opt = OptimizerSpec::adam(3e-4);
        let specs = model.stage_specs(1, &Partition::Even, &Policies::all(Default::default())).unwrap();
        let stage = Stage::new(model, &specs[0]).unwrap();
        let rows = model.rows(batch).unwrap();
        let (saved_bytes, target_bytes) = stage.loss_bytes(rows).unwrap();
        let times = LayerTimes { f: 1.0, i: 1.0, w: 1.0, r: 1.0, restore: None };
        let layers = stage
            .layer_bytes(rows, &opt)
            .into_iter()
            .zip(stage.layers())
            .map(|(bytes, l)| LayerCost { kind: l.kind().into(), times, bytes })
            .collect();
        let loss = LossCost { kind: model.loss, f: 1.0, i: 1.0, saved_bytes, target_bytes };
        LayerCosts { model_name: model.name.clone(), rows, layers, loss }
    }

    #[test]
    fn bytes_scale_exactly_with_the_rows_and_times_linearly() {
        for model in [ModelSpec::tiny(), ModelSpec::gpt_tiny()] {
            let at7 = costs(&model, 7);
            for batch in [1, 3, 7, 12] {
                let want = costs(&model, batch);
                let got = scaled(&at7, model.rows(batch).unwrap());
                let bytes = |c: &LayerCosts| c.layers.iter().map(|l| l.bytes).collect::<Vec<_>>();
                assert_eq!(bytes(&got), bytes(&want), "{} at {batch}", model.name);
                assert_eq!(
                    (got.loss.saved_bytes, got.loss.target_bytes),
                    (want.loss.saved_bytes, want.loss.target_bytes)
                );
                assert_eq!(got.layers[0].times.f, batch as f64 / 7.0);
            }
        }
    }

    #[test]
    fn a_batch_needs_a_divisor_of_at_least_p() {
        assert_eq!(microbatch_counts(2, 12).unwrap(), vec![2, 3, 4, 6, 12]);
        assert_eq!(microbatch_counts(4, 4).unwrap(), vec![4]);
        let e = microbatch_counts(4, 3).unwrap_err().to_string();
        assert!(e.contains("--batch 3 has no divisor m ≥ p = 4"), "{e}");
        assert_eq!(microbatch_counts(4, 7).unwrap(), vec![7], "m = batch: one sample each");
    }

    #[test]
    fn every_plan_fits_and_the_fastest_comes_first() {
        let model = ModelSpec::tiny();
        let file = CostFile {
            model: CostModel::per_rank(1.0, 1.0, 1.0),
            layout: None,
            recompute: None,
            layers: Some(costs(&model, 8)),
            grad_bytes: None,
        };
        let free = search(Request {
            model: &model,
            costs: &file,
            p: 2,
            batch: 16,
            cap: u64::MAX,
            measured: &[],
            dp: DataParallel::NONE,
        })
        .unwrap();
        assert!(free.plans.windows(2).all(|w| w[0].makespan <= w[1].makespan));
        let none_1f1b = free
            .plans
            .iter()
            .filter(|c| c.kind == Kind::OneFOneB && c.policies.iter().all(|p| *p == RecomputePolicy::None))
            .map(|c| c.peak())
            .min()
            .unwrap();
        let cap = none_1f1b - 1;
        let tight = search(Request {
            model: &model,
            costs: &file,
            p: 2,
            batch: 16,
            cap,
            measured: &[],
            dp: DataParallel::NONE,
        })
        .unwrap();
        assert!(tight.plans.iter().all(|c| c.peaks.iter().all(|&b| b <= cap)));
        assert!(!tight
            .plans
            .iter()
            .any(|c| c.kind == Kind::OneFOneB && c.policies.iter().all(|p| *p == RecomputePolicy::None)));
        assert!(tight.rejected.iter().any(|r| r.reason.contains("over the cap by")), "{:?}", tight.rejected);
    }
}
