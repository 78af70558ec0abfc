//! `DataParallel`: a step's gradients summed over `D` pipeline replicas, as spans of the
//! simulated trace.
//!
//! Every replica runs the same schedule on its own micro-batches, so one simulated pipeline
//! stands for all of them; what data parallelism adds is, per stage, the sum of that stage's
//! gradients over the replicas before the optimizer step. The sum is the executor's (`--dp D`
//! across processes): it starts when the stage's last backward of the step (`B`, or `W` when
//! split) ends, runs on its rank's one communication thread — beside the compute, which goes on
//! with the cool-down — and the rank's sums run one after another, in the order they start. One
//! sum is a reduce-scatter then an all-gather: replica `r` owns slice `r` of the gradients
//! (`⌈b/D⌉` bytes or one value less), every replica sends each owner its slice, each owner adds
//! the `D` parts in replica order — element by element the bits of adding the whole gradients in
//! replica order, so they never depend on arrival order — and sends its summed slice to every
//! replica. Each phase, a replica sends its `(D − 1)` slices one after another, to the next
//! replicas in turn (so no owner gets every part at once), while it receives as many; with ZeRO
//! stage 1 there is no second phase, each replica keeping only the slice it updates. On a link
//! of latency `c` and bandwidth `B`, sending and receiving at once:
//!
//! ```text
//! t_sum(b) = k·(D − 1)·(c + ⌈b/D⌉/B),   k = 2 phases, or 1 with ZeRO-1
//! ```
//!
//! (`k·(D − 1)·c` when the bandwidth is unlimited): the `2(D − 1)/D · b` a ring all-reduce
//! moves per replica. Adding the parts is not costed. ZeRO-1's gather of the updated slices follows the
//! optimizer step and belongs to the next step's start, so it is not part of this step's spans.
//!
//! Invariant: a rank's sums never overlap and each starts no earlier than its stage's last
//! backward ends; with one replica there are none.

use serde::{Deserialize, Serialize};

use crate::action::Op;
use crate::cost::CostModel;
use crate::error::{Error, Result};
use crate::schedule::Placement;
use crate::trace::Trace;

/// Data parallelism over pipeline replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataParallel {
    /// Pipeline replicas `D` (1: no data parallelism).
    pub replicas: usize,
    /// ZeRO stage 1: each replica gets back only its `1/D` slice of the sum.
    pub sharded: bool,
}

/// One stage's gradient sum over the replicas, on its rank's communication thread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradientSum {
    /// The model stage whose gradients are summed.
    pub stage: usize,
    /// When it started: its stage's last backward of the step ended, and the rank's previous
    /// sum was done.
    pub start: f64,
    /// When every replica had its sum (or its slice of it).
    pub end: f64,
    /// Bytes of the stage's gradients.
    pub bytes: u64,
}

impl DataParallel {
    /// One pipeline, nothing summed.
    pub const NONE: DataParallel = DataParallel { replicas: 1, sharded: false };

    /// `D` replicas; `sharded` for ZeRO stage 1, which needs at least two.
    pub fn new(replicas: usize, sharded: bool) -> Result<DataParallel> {
        let refuse = |reason: &str| Err(Error::BadArgs { schedule: "data parallelism".into(), reason: reason.into() });
        if replicas == 0 {
            return refuse("it needs at least one replica (--dp 1 is none)");
        }
        if sharded && replicas < 2 {
            return refuse("--zero 1 shards the optimizer state across data-parallel replicas; add --dp D with D ≥ 2");
        }
        Ok(DataParallel { replicas, sharded })
    }

    /// Whether there is anything to sum.
    pub fn sums(&self) -> bool {
        self.replicas > 1
    }

    /// How long one sum of `bytes` of gradients takes over links of `costs`' latency and
    /// bandwidth (see the module doc); 0 with one replica.
    pub fn duration(&self, bytes: u64, costs: &CostModel) -> f64 {
        if !self.sums() {
            return 0.0;
        }
        let d = self.replicas as u64;
        let phases = if self.sharded { 1.0 } else { 2.0 };
        let slice = bytes.div_ceil(d) as f64;
        phases * (d - 1) as f64 * (costs.latency + costs.bandwidth.map_or(0.0, |b| slice / b))
    }

    /// The sums of the step `trace` ran, per rank in the order they run, under `costs`'s link,
    /// the gradients being `grad_bytes` (see [`stage_grad_bytes`](Self::stage_grad_bytes)):
    /// each stage's sum starts when its last `B` or `W` ends. Empty lists with one replica.
    pub fn spans(&self, trace: &Trace, costs: &CostModel, grad_bytes: &[u64]) -> Result<Vec<Vec<GradientSum>>> {
        let mut out = vec![Vec::new(); trace.ranks.len()];
        if !self.sums() {
            return Ok(out);
        }
        let stage_bytes = self.stage_grad_bytes(trace.placement, trace.p, trace.v, grad_bytes)?;
        let grad_bytes = &stage_bytes;
        for (rank, sums) in trace.ranks.iter().zip(&mut out) {
            // The end of each stage's last backward on this rank, in the order they end.
            let mut last: Vec<(usize, f64)> = Vec::new();
            for span in rank.spans().filter(|s| matches!(s.action.op, Op::B | Op::W)) {
                let stage = span.action.stage();
                match last.iter_mut().find(|(s, _)| *s == stage) {
                    Some(entry) => entry.1 = entry.1.max(span.end),
                    None => last.push((stage, span.end)),
                }
            }
            last.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            let mut free = 0.0f64;
            for (stage, ready) in last {
                let bytes = grad_bytes.get(stage).copied().unwrap_or(0);
                let start = ready.max(free);
                let end = start + self.duration(bytes, costs);
                free = end;
                sums.push(GradientSum { stage, start, end, bytes });
            }
        }
        Ok(out)
    }
}

impl DataParallel {
    /// Each model stage's gradient bytes, from `given`: one value for every rank, one per rank,
    /// or one per stage (`p·v`); a rank's bytes are split over its `v` chunks as evenly as
    /// bytes go, the remainder on the first chunks (as [`CostModel`]'s per-rank costs are).
    /// An error when there are none, or when the count fits none of these.
    pub fn stage_grad_bytes(&self, placement: Placement, p: usize, v: usize, given: &[u64]) -> Result<Vec<u64>> {
        let stages = p * v;
        let split = |bytes: u64, chunk: usize| bytes / v as u64 + u64::from((chunk as u64) < bytes % v as u64);
        let out: Vec<u64> = match given.len() {
            n if n == stages => given.to_vec(),
            1 => (0..stages).map(|s| split(given[0], placement.chunk_of(s, p))).collect(),
            n if n == p => (0..stages).map(|s| split(given[placement.rank_of(s, p)], placement.chunk_of(s, p))).collect(),
            n if n > 0 => {
                return Err(Error::Cost(format!(
                    "{n} gradient byte counts for p={p}, v={v}: give one for every rank, one per rank ({p}) or one per stage ({stages})"
                )))
            }
            _ => vec![],
        };
        if out.iter().all(|&b| b == 0) {
            return Err(Error::Cost(format!(
                "summing gradients over {} replicas needs the stages' gradient bytes: `--mem G=BYTES` (per rank), or a cost file from `profile`",
                self.replicas
            )));
        }
        Ok(out)
    }
}

impl Default for DataParallel {
    fn default() -> Self {
        DataParallel::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{interleaved, one_f_one_b, simulate, simulate_data_parallel, Stats};

    fn costs() -> CostModel {
        CostModel::per_rank(1.0, 1.0, 1.0).with_latency(0.5).with_bandwidth(100.0)
    }

    fn dp(d: usize) -> DataParallel {
        DataParallel::new(d, false).unwrap()
    }

    #[test]
    fn a_sum_takes_two_phases_of_d_minus_one_slices() {
        let c = costs();
        // D = 4, b = 1000: 2·3·(0.5 + 250/100) = 18; ZeRO-1, one phase: 3·(0.5 + 250/100) = 9.
        assert_eq!(dp(4).duration(1000, &c), 18.0);
        assert_eq!(DataParallel::new(4, true).unwrap().duration(1000, &c), 9.0);
        // ⌈1001/4⌉ = 251 bytes a slice.
        assert_eq!(DataParallel::new(4, true).unwrap().duration(1001, &c), 3.0 * (0.5 + 251.0 / 100.0));
        assert_eq!(dp(3).duration(1001, &c), 2.0 * 2.0 * (0.5 + 334.0 / 100.0));
        assert_eq!(DataParallel::NONE.duration(1000, &c), 0.0);
        // No latency, no bandwidth: free.
        assert_eq!(dp(2).duration(1000, &CostModel::per_rank(1.0, 1.0, 1.0)), 0.0);
        assert!(DataParallel::new(1, true).is_err() && DataParallel::new(0, false).is_err());
    }

    #[test]
    fn each_stage_sums_after_its_last_backward_and_the_first_rank_ends_the_step() {
        // 1F1B p = 4, m = 8, F = I = W = 1 (B = 2): each rank's sum (D = 2, 800 bytes:
        // 2·(0.5 + 400/100) = 9) starts when its last B ends, and rank 0's, the last, ends the step.
        let s = one_f_one_b(4, 8).unwrap();
        let trace = simulate_data_parallel(&s, &costs(), dp(2), &[800]).unwrap();
        let plain = simulate(&s, &costs()).unwrap();
        assert_eq!(Stats::of(&trace), Stats::of(&plain), "the sums leave the compute and its stats alone");
        for (r, rank) in trace.ranks.iter().enumerate() {
            let last_b = rank.spans().filter(|x| x.action.op == Op::B).map(|x| x.end).fold(0.0, f64::max);
            assert_eq!(trace.sums[r], vec![GradientSum { stage: r, start: last_b, end: last_b + 9.0, bytes: 800 }]);
        }
        // Rank 0's last backward ends the compute (41: 33 plus sixteen latencies on the path).
        let makespan = Stats::of(&plain).makespan;
        assert_eq!(makespan, 41.0);
        assert_eq!(trace.step_end(), makespan + 9.0);
        assert_eq!(plain.step_end(), makespan);
        assert!(plain.sums.is_empty());
    }

    #[test]
    fn a_ranks_sums_queue_on_its_communication_thread() {
        // Interleaved p = 2, v = 2: each rank holds two stages of 600 bytes (1200 split over
        // its chunks); D = 3: 2·2·(0.5 + 200/100) = 10 per sum, the second waiting for the first.
        let s = interleaved(2, 2, 4).unwrap();
        let trace = simulate_data_parallel(&s, &costs(), dp(3), &[1200]).unwrap();
        for (r, sums) in trace.sums.iter().enumerate() {
            assert_eq!(sums.len(), 2);
            assert!(sums.iter().all(|x| x.end - x.start == 10.0 && x.bytes == 600 && x.stage % 2 == r));
            assert!(sums[1].start >= sums[0].end);
        }
    }

    #[test]
    fn gradient_bytes_are_given_per_rank_or_per_stage() {
        let d = dp(2);
        let (l, v) = (Placement::Loop, Placement::V);
        assert_eq!(d.stage_grad_bytes(l, 2, 2, &[7]).unwrap(), vec![4, 4, 3, 3]);
        assert_eq!(d.stage_grad_bytes(l, 2, 2, &[7, 10]).unwrap(), vec![4, 5, 3, 5]);
        // V: stages 0, 1 on ranks 0, 1, then 2, 3 on ranks 1, 0.
        assert_eq!(d.stage_grad_bytes(v, 2, 2, &[7, 10]).unwrap(), vec![4, 5, 5, 3]);
        assert_eq!(d.stage_grad_bytes(l, 2, 2, &[1, 2, 3, 4]).unwrap(), vec![1, 2, 3, 4]);
        let e = d.stage_grad_bytes(l, 2, 2, &[1, 2, 3]).unwrap_err().to_string();
        assert!(e.contains("3 gradient byte counts") && e.contains("one per stage (4)"), "{e}");
        let e = simulate_data_parallel(&one_f_one_b(2, 2).unwrap(), &costs(), d, &[]).unwrap_err().to_string();
        assert!(e.contains("--mem G="), "{e}");
        // One replica needs none.
        assert!(simulate_data_parallel(&one_f_one_b(2, 2).unwrap(), &costs(), DataParallel::NONE, &[]).is_ok());
    }
}
