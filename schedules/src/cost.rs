//! `CostModel`: how long each op takes and how many bytes it keeps, per model stage.
//!
//! Costs are given either per model stage, or "per rank" — the work of 1/p of the model, which a
//! schedule with `v` chunks per rank splits evenly (each chunk costs `t/v`, and gets `bytes/v`,
//! the remainder going to the first chunks so totals stay exact). See DESIGN.md.
//!
//! A message between ranks takes the latency `c`, plus — when a bandwidth `B` is given — its
//! bytes over `B`: the producing stage's `fwd_msg_bytes` for an activation, `bwd_msg_bytes` for
//! a gradient ([`CostModel::message_delays`]). Between stages of one rank it takes nothing.
//!
//! An offload (`O`) or reload (`L`) moves the stage's `act_bytes` across the rank's
//! [`HostLink`]; a schedule with them needs the model to have one ([`CostModel::transfer_time`]).

use serde::{Deserialize, Serialize};

use crate::action::Op;
use crate::error::{Error, Result};
use crate::host_link::HostLink;
use crate::schedule::Schedule;

/// Costs of one model stage (or, in the per-rank shorthand, of one rank's share of the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCost {
    /// Forward time `t_F`.
    pub f: f64,
    /// Input-gradient backward time `t_I`.
    pub i: f64,
    /// Weight-gradient backward time `t_W`. A full backward takes `t_I + t_W`.
    pub w: f64,
    /// Recompute time `t_R`; `t_F` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<f64>,
    /// Bytes `F` keeps for the backward of one micro-batch (`M_act`, under the stage's recompute policy).
    #[serde(default)]
    pub act_bytes: u64,
    /// Bytes `R` re-creates for one micro-batch (what the recompute policy dropped).
    #[serde(default)]
    pub recompute_bytes: u64,
    /// Bytes kept from `I` until `W` for one micro-batch (`M_w`).
    #[serde(default)]
    pub w_bytes: u64,
    /// Bytes of the activation `F` sends to the next stage, per micro-batch.
    #[serde(default)]
    pub fwd_msg_bytes: u64,
    /// Bytes of the input gradient `I` or `B` sends to the previous stage, per micro-batch.
    #[serde(default)]
    pub bwd_msg_bytes: u64,
}

impl StageCost {
    /// Times only, no bytes.
    pub fn times(f: f64, i: f64, w: f64) -> StageCost {
        StageCost { f, i, w, r: None, act_bytes: 0, recompute_bytes: 0, w_bytes: 0, fwd_msg_bytes: 0, bwd_msg_bytes: 0 }
    }

    /// `t_R`: the recompute time, `t_F` unless given.
    pub fn t_r(&self) -> f64 {
        self.r.unwrap_or(self.f)
    }

    /// Split one rank's costs into chunk `chunk` of `v` (times `t/v`, kept bytes `bytes/v` with
    /// the remainder on the first chunks; every chunk sends whole messages).
    fn chunk(&self, chunk: usize, v: usize) -> StageCost {
        let vf = v as f64;
        let share = |b: u64| b / v as u64 + u64::from((chunk as u64) < b % v as u64);
        StageCost {
            f: self.f / vf,
            i: self.i / vf,
            w: self.w / vf,
            r: self.r.map(|r| r / vf),
            act_bytes: share(self.act_bytes),
            recompute_bytes: share(self.recompute_bytes),
            w_bytes: share(self.w_bytes),
            fwd_msg_bytes: self.fwd_msg_bytes,
            bwd_msg_bytes: self.bwd_msg_bytes,
        }
    }
}

/// Per-stage costs, or the per-rank shorthand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageCosts {
    /// One rank's share of the model (1/p of it), split evenly over the `v` chunks of a rank.
    PerRank(StageCost),
    /// One entry per model stage, `S = p·v` of them.
    Stages(Vec<StageCost>),
}

/// Time and memory costs of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// The op costs.
    #[serde(flatten)]
    pub costs: StageCosts,
    /// Cross-rank latency `c`: delays the consumer, occupies neither device.
    #[serde(default)]
    pub latency: f64,
    /// Cross-rank bandwidth `B`, in bytes per time unit of the model: a message of `b` bytes
    /// between ranks takes `c + b/B`. `None` (absent): unlimited, every message takes `c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<f64>,
    /// Static bytes (parameters, gradients, optimizer state): none, one value for every rank, or one per rank.
    #[serde(default)]
    pub static_bytes: Vec<u64>,
    /// The device ↔ host link offload and reload actions cross; `None`: the model has none, and
    /// a schedule that offloads is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_link: Option<HostLink>,
    /// Unit of every time in the model (`ms` for profiled costs); shown on charts.
    #[serde(default = "default_unit")]
    pub time_unit: String,
}

fn default_unit() -> String {
    "units".into()
}

impl CostModel {
    /// Uniform per-rank costs, no latency, no bytes.
    pub fn per_rank(f: f64, i: f64, w: f64) -> CostModel {
        CostModel {
            costs: StageCosts::PerRank(StageCost::times(f, i, w)),
            latency: 0.0,
            bandwidth: None,
            static_bytes: vec![],
            host_link: None,
            time_unit: default_unit(),
        }
    }

    /// A per-stage model for memory predictions: each stage's bytes from `stages` (its cost's
    /// byte fields; its times are placeholders), no latency, an unlimited link, and each stage's
    /// static bytes (the second of its pair) counted on rank `rank_of(stage)` of `p`, and an
    /// [`untimed`](HostLink::untimed) host link, so a schedule that offloads moves its bytes.
    pub fn of_bytes(stages: Vec<(StageCost, u64)>, p: usize, rank_of: impl Fn(usize) -> usize) -> CostModel {
        let mut static_bytes = vec![0u64; p];
        for (s, (_, bytes)) in stages.iter().enumerate() {
            if let Some(rank) = static_bytes.get_mut(rank_of(s)) {
                *rank = rank.saturating_add(*bytes);
            }
        }
        CostModel {
            costs: StageCosts::Stages(stages.into_iter().map(|(c, _)| c).collect()),
            latency: 0.0,
            bandwidth: None,
            static_bytes,
            host_link: Some(HostLink::untimed()),
            time_unit: "ms".into(),
        }
    }

    /// Whether any stage keeps, re-creates or sends bytes, or any rank has static bytes: whether
    /// a simulation under this model has a memory curve worth drawing.
    pub fn has_bytes(&self) -> bool {
        let stage = |c: &StageCost| {
            c.act_bytes > 0 || c.recompute_bytes > 0 || c.w_bytes > 0 || c.fwd_msg_bytes > 0 || c.bwd_msg_bytes > 0
        };
        self.static_bytes.iter().any(|&b| b > 0)
            || match &self.costs {
                StageCosts::PerRank(c) => stage(c),
                StageCosts::Stages(list) => list.iter().any(stage),
            }
    }

    /// The same with cross-rank latency `c`.
    pub fn with_latency(mut self, c: f64) -> CostModel {
        self.latency = c;
        self
    }

    /// The same with cross-rank bandwidth `B` (bytes per time unit).
    pub fn with_bandwidth(mut self, bandwidth: f64) -> CostModel {
        self.bandwidth = Some(bandwidth);
        self
    }

    /// The same with the device ↔ host link `link` for offload and reload.
    pub fn with_host_link(mut self, link: HostLink) -> CostModel {
        self.host_link = Some(link);
        self
    }

    /// How long the offload or reload `op` of a micro-batch on a stage of costs `stage` takes: its
    /// kept bytes (`act_bytes`) over the host link. An error if the model has no host link, or if
    /// the stage keeps nothing to move (`stage_index` names it).
    pub fn transfer_time(&self, op: Op, stage_index: usize, stage: &StageCost) -> Result<f64> {
        let Some(link) = self.host_link else {
            return Err(Error::Cost(format!(
                "the schedule offloads activations (stage {stage_index} has {} actions), but the cost model has no host link to time them; give --host-bandwidth BYTES_PER_S (or \"host_link\": {{\"bandwidth\": ..}} in the cost file)",
                op.letter()
            )));
        };
        if stage.act_bytes == 0 {
            return Err(Error::Cost(format!(
                "stage {stage_index} offloads, but keeps nothing for its backward (act_bytes = 0): there is nothing to move; leave stage {stage_index} out of --offload, or give its act_bytes"
            )));
        }
        link.check()?;
        Ok(link.time(stage.act_bytes))
    }

    /// Parses a cost model from JSON (`{"per_rank": {...}}` or `{"stages": [...]}`, plus
    /// optional `latency`, `bandwidth`, `host_link`, `static_bytes`, `time_unit`).
    pub fn from_json(text: &str) -> Result<CostModel> {
        let model: CostModel = serde_json::from_str(text).map_err(|e| {
            Error::Cost(format!(
                "{e}. Expected {{\"per_rank\": {{\"f\": .., \"i\": .., \"w\": ..}}}} or {{\"stages\": [{{\"f\": .., \"i\": .., \"w\": ..}}, ...]}}, optionally with \"latency\", \"bandwidth\", \"static_bytes\", \"time_unit\""
            ))
        })?;
        model.check_values()?;
        Ok(model)
    }

    /// The cost model as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a cost model always serialises")
    }

    fn check_values(&self) -> Result<()> {
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !ok(self.latency) {
            return Err(Error::Cost(format!("latency must be a finite number ≥ 0, got {}", self.latency)));
        }
        if let Some(link) = &self.host_link {
            link.check()?;
        }
        if let Some(b) = self.bandwidth.filter(|b| !(b.is_finite() && *b > 0.0)) {
            return Err(Error::Cost(format!(
                "bandwidth must be a finite number > 0 (bytes per time unit), got {b}; leave it out for an unlimited one"
            )));
        }
        let all: Vec<&StageCost> = match &self.costs {
            StageCosts::PerRank(c) => vec![c],
            StageCosts::Stages(v) => v.iter().collect(),
        };
        for (k, c) in all.iter().enumerate() {
            for (name, x) in [("f", c.f), ("i", c.i), ("w", c.w), ("r", c.t_r())] {
                if !ok(x) {
                    return Err(Error::Cost(format!("stage entry {k}: {name} must be a finite time ≥ 0, got {x}")));
                }
            }
        }
        Ok(())
    }

    /// The costs of every model stage of `schedule` (splitting the per-rank shorthand over its
    /// chunks, with `R`'s bytes only on the stages it recomputes), and the static bytes of every
    /// rank.
    pub fn resolve(&self, schedule: &Schedule) -> Result<(Vec<StageCost>, Vec<u64>)> {
        self.check_values()?;
        let (p, v) = (schedule.p, schedule.v);
        let stages = match &self.costs {
            StageCosts::PerRank(c) => {
                // A per-rank cost's `R` bytes are what the stages that recompute re-create: a
                // stage the schedule does not recompute re-creates nothing. (Only a model with
                // bytes pays for the flags, within the simulation's estimate of them.)
                let mut recomputes = vec![false; if c.recompute_bytes > 0 { schedule.stages() } else { 0 }];
                if !recomputes.is_empty() {
                    for a in schedule.actions().filter(|a| a.op == Op::R) {
                        recomputes[a.stage()] = true;
                    }
                }
                (0..schedule.stages())
                    .map(|s| {
                        let c = c.chunk(schedule.placement.chunk_of(s, p), v);
                        let recomputed = recomputes.get(s).copied().unwrap_or(false);
                        StageCost { recompute_bytes: if recomputed { c.recompute_bytes } else { 0 }, ..c }
                    })
                    .collect()
            }
            StageCosts::Stages(list) => {
                if list.len() != schedule.stages() {
                    return Err(Error::Cost(format!(
                        "the cost model lists {} stages but the schedule has {} (p={p}, v={v}); profile the same partition, or give per-rank costs",
                        list.len(),
                        schedule.stages()
                    )));
                }
                list.clone()
            }
        };
        let statics = match self.static_bytes.len() {
            0 => vec![0; p],
            1 => vec![self.static_bytes[0]; p],
            n if n == p => self.static_bytes.clone(),
            n => {
                return Err(Error::Cost(format!(
                    "static_bytes has {n} entries but the schedule has p={p} ranks; give one value, or one per rank"
                )))
            }
        };
        check_totals(schedule, &stages, &statics, self)?;
        Ok((stages, statics))
    }

    /// How long each message of `schedule` takes, by producing stage, under its resolved costs
    /// `stages` (from [`resolve`](Self::resolve)): `[activation, gradient]` — the activation stage
    /// `s` sends forward, the gradient it sends back. `c + b/B` to another rank (`c` when the
    /// bandwidth is unlimited); 0 to a stage on the same rank, and where there is no message (the
    /// last stage sends no activation, stage 0 no gradient).
    pub fn message_delays(&self, schedule: &Schedule, stages: &[StageCost]) -> Vec<[f64; 2]> {
        let apart = |a: usize, b: usize| schedule.rank_of(a) != schedule.rank_of(b);
        (0..stages.len())
            .map(|s| {
                let c = &stages[s];
                let fwd = s + 1 < stages.len() && apart(s, s + 1);
                let bwd = s > 0 && apart(s, s - 1);
                [
                    if fwd { self.message_time(c.fwd_msg_bytes) } else { 0.0 },
                    if bwd { self.message_time(c.bwd_msg_bytes) } else { 0.0 },
                ]
            })
            .collect()
    }

    /// How long a message of `bytes` takes between two ranks: `c + bytes/B`, or `c` when the
    /// bandwidth is unlimited.
    pub fn message_time(&self, bytes: u64) -> f64 {
        match self.bandwidth {
            Some(b) => self.latency + bytes as f64 / b,
            None => self.latency,
        }
    }
}

/// Refuses costs whose step would overflow: every time of the step must stay finite and every
/// rank's live bytes must fit in 64 bits. Checked on upper bounds — the sum of every action's
/// time and every message's time (`c + b/B`, as if each crossed ranks); static bytes plus, for
/// each (stage, micro-batch), everything its actions could hold at once — so the simulation can
/// run in plain arithmetic.
fn check_totals(schedule: &Schedule, stages: &[StageCost], statics: &[u64], model: &CostModel) -> Result<()> {
    let m = schedule.m as f64;
    let work: f64 = stages.iter().map(|c| m * (c.f + c.i + c.w + c.t_r())).sum();
    let messages: f64 =
        stages.iter().map(|c| m * (model.message_time(c.fwd_msg_bytes) + model.message_time(c.bwd_msg_bytes))).sum();
    if !(work + messages).is_finite() {
        let latency = model.latency;
        if let (true, true, Some(b)) =
            (work.is_finite(), (latency * 2.0 * m * stages.len() as f64).is_finite(), model.bandwidth)
        {
            let bytes = stages.iter().flat_map(|c| [c.fwd_msg_bytes, c.bwd_msg_bytes]).max().unwrap_or(0);
            return Err(Error::Cost(format!(
                "the step's message times overflow: messages of up to {bytes} bytes at bandwidth={b:e} bytes per time unit, over m={} micro-batches and {} stages, do not add up to a finite number; give a larger bandwidth (or a larger time unit)",
                schedule.m,
                stages.len()
            )));
        }
        let big = stages
            .iter()
            .flat_map(|c| [("f", c.f), ("i", c.i), ("w", c.w), ("r", c.t_r())])
            .chain([("latency", latency)])
            .reduce(|a, b| if b.1 > a.1 { b } else { a })
            .unwrap_or(("latency", latency));
        return Err(Error::Cost(format!(
            "the step's times overflow: with {}={:e} over m={} micro-batches and {} stages the total is not a finite number; give smaller times (or a larger time unit)",
            big.0,
            big.1,
            schedule.m,
            stages.len()
        )));
    }
    let mut bound: Vec<u128> = statics.iter().map(|&b| u128::from(b)).collect();
    for (s, c) in stages.iter().enumerate() {
        let per_mb = u128::from(c.act_bytes) + u128::from(c.recompute_bytes) + u128::from(c.w_bytes);
        bound[schedule.rank_of(s)] += per_mb * schedule.m as u128;
        // Messages in flight count on their consumer.
        let msgs = (u128::from(c.fwd_msg_bytes) + u128::from(c.bwd_msg_bytes)) * schedule.m as u128;
        for t in [s.checked_sub(1), Some(s + 1)].into_iter().flatten().filter(|&t| t < stages.len()) {
            bound[schedule.rank_of(t)] += msgs;
        }
    }
    if let Some((r, b)) = bound.iter().enumerate().find(|(_, &b)| b > u128::from(u64::MAX)) {
        return Err(Error::Cost(format!(
            "rank {r}'s bytes could reach {b}, more than 2^64: static_bytes or the per-micro-batch bytes (act_bytes, recompute_bytes, w_bytes, fwd_msg_bytes, bwd_msg_bytes) are too large"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_rank_splits_over_chunks_exactly() {
        let c =
            StageCost { f: 1.0, i: 2.0, w: 0.5, r: None, act_bytes: 7, w_bytes: 3, ..StageCost::times(1.0, 2.0, 0.5) };
        let parts: Vec<_> = (0..2).map(|k| c.chunk(k, 2)).collect();
        assert_eq!(parts[0].act_bytes + parts[1].act_bytes, 7);
        assert_eq!(parts[0].act_bytes, 4);
        assert_eq!(parts[1].w_bytes, 1);
        assert_eq!(parts[0].f, 0.5);
        assert_eq!(parts[1].t_r(), 0.5);
    }

    #[test]
    fn json_round_trip_both_forms() {
        let a = CostModel::per_rank(1.0, 1.0, 0.5).with_latency(0.1);
        assert_eq!(CostModel::from_json(&a.to_json()).unwrap(), a);
        let text =
            r#"{"stages": [{"f": 1, "i": 2, "w": 1, "act_bytes": 100}], "static_bytes": [5], "time_unit": "ms"}"#;
        let b = CostModel::from_json(text).unwrap();
        assert!(matches!(&b.costs, StageCosts::Stages(v) if v[0].act_bytes == 100));
        assert_eq!(b.time_unit, "ms");
    }

    #[test]
    fn json_times_round_trip_to_the_bit() {
        // Both are the shortest text of their f64; a parser that is not correctly rounded reads
        // them one unit in the last place off.
        let text = r#"{"per_rank": {"f": 9.580816018234577, "i": 3.605160514200624, "w": 1}}"#;
        let m = CostModel::from_json(text).unwrap();
        let StageCosts::PerRank(c) = &m.costs else { panic!("per rank") };
        assert_eq!((c.f.to_string(), c.i.to_string()), ("9.580816018234577".into(), "3.605160514200624".into()));
        assert_eq!(CostModel::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn refuses_totals_that_overflow() {
        let s = crate::Kind::OneFOneB.generate(2, 1, 4).unwrap();
        let huge = CostModel::per_rank(1e308, 1e308, 1e308);
        let e = huge.resolve(&s).unwrap_err().to_string();
        assert!(e.contains("overflow") && e.contains("f=1e308"), "{e}");
        let mut bytes = CostModel::per_rank(1.0, 1.0, 1.0);
        bytes.costs = StageCosts::PerRank(StageCost { act_bytes: u64::MAX / 2, ..StageCost::times(1.0, 1.0, 1.0) });
        let e = bytes.resolve(&s).unwrap_err().to_string();
        assert!(e.contains("more than 2^64"), "{e}");
        assert!(CostModel::per_rank(1e300, 1e300, 1e300).resolve(&s).is_ok());
    }

    #[test]
    fn rejects_bad_values() {
        assert!(CostModel::from_json(r#"{"per_rank": {"f": -1, "i": 1, "w": 1}}"#).is_err());
        assert!(CostModel::from_json(r#"{"per_rank": {"f": 1}}"#).unwrap_err().to_string().contains("missing field"));
        assert!(CostModel::from_json("{}").is_err());
    }

    #[test]
    fn bandwidth_is_optional_and_round_trips() {
        let none = CostModel::from_json(r#"{"per_rank": {"f": 1, "i": 1, "w": 1}, "latency": 0.5}"#).unwrap();
        assert_eq!(none.bandwidth, None);
        // Absent stays absent: files written before there was a bandwidth read and write the same.
        assert!(!none.to_json().contains("bandwidth"));
        let text = r#"{"per_rank": {"f": 1, "i": 1, "w": 1}, "latency": 0.5, "bandwidth": 2097152.5}"#;
        let some = CostModel::from_json(text).unwrap();
        assert_eq!(some.bandwidth, Some(2097152.5));
        assert_eq!(CostModel::from_json(&some.to_json()).unwrap(), some);
        assert_eq!(some, none.with_bandwidth(2097152.5));
    }

    #[test]
    fn rejects_a_bandwidth_that_is_not_finite_and_positive() {
        for b in ["0", "-1", "-0.0"] {
            let text = format!(r#"{{"per_rank": {{"f": 1, "i": 1, "w": 1}}, "bandwidth": {b}}}"#);
            let e = CostModel::from_json(&text).unwrap_err().to_string();
            assert!(e.contains("bandwidth must be a finite number > 0 (bytes per time unit), got"), "{b}: {e}");
        }
        let s = crate::Kind::OneFOneB.generate(2, 1, 4).unwrap();
        for b in [0.0, -2.0, f64::NAN, f64::INFINITY] {
            let e = CostModel::per_rank(1.0, 1.0, 1.0).with_bandwidth(b).resolve(&s).unwrap_err().to_string();
            assert!(
                e.contains(&format!("bandwidth must be a finite number > 0 (bytes per time unit), got {b}")),
                "{e}"
            );
        }
    }

    #[test]
    fn message_delays_are_latency_plus_bytes_over_bandwidth_across_ranks() {
        let model = |bandwidth: Option<f64>| CostModel {
            costs: StageCosts::PerRank(StageCost {
                fwd_msg_bytes: 1024,
                bwd_msg_bytes: 3072,
                ..StageCost::times(1.0, 1.0, 1.0)
            }),
            latency: 0.25,
            bandwidth,
            static_bytes: vec![],
            host_link: None,
            time_unit: default_unit(),
        };
        let s = crate::Kind::OneFOneB.generate(3, 1, 3).unwrap();
        let (stages, _) = model(Some(512.0)).resolve(&s).unwrap();
        // The last stage sends no activation, stage 0 no gradient.
        assert_eq!(model(Some(512.0)).message_delays(&s, &stages), [[2.25, 0.0], [2.25, 6.25], [0.0, 6.25]]);
        assert_eq!(model(None).message_delays(&s, &stages), [[0.25, 0.0], [0.25, 0.25], [0.0, 0.25]]);
        // ZB-V at p=2: stages 1 and 2 share rank 1, so what passes between them takes nothing.
        let v = crate::Kind::ZbV.generate(2, 2, 4).unwrap();
        let (stages, _) = model(Some(512.0)).resolve(&v).unwrap();
        assert_eq!(
            model(Some(512.0)).message_delays(&v, &stages),
            [[2.25, 0.0], [0.0, 6.25], [2.25, 0.0], [0.0, 6.25]]
        );
    }

    #[test]
    fn refuses_message_times_that_overflow() {
        let s = crate::Kind::OneFOneB.generate(2, 1, 4).unwrap();
        let mut model = CostModel::per_rank(1.0, 1.0, 1.0).with_bandwidth(1e-300);
        model.costs = StageCosts::PerRank(StageCost { fwd_msg_bytes: 1 << 40, ..StageCost::times(1.0, 1.0, 1.0) });
        let e = model.resolve(&s).unwrap_err().to_string();
        assert!(e.contains("message times overflow") && e.contains("bandwidth=1e-300"), "{e}");
        assert!(model.with_bandwidth(1e-3).resolve(&s).is_ok());
    }
}
