//! Interleaved zero bubble: the order of PyTorch's `ScheduleInterleavedZeroBubble`
//! (`torch.distributed.pipelining`), which PyTorch describes as the ZB-1p schedule of Qi, Wan,
//! Huang, Lin, "Zero Bubble Pipeline Parallelism" (ICLR 2024), on interleaved 1F1B's loop
//! placement: `v` chunks per rank, the backward split into `I` (input gradient, on the critical
//! path) and `W` (weight gradient, deferred to fill bubbles).
//!
//! Every rank's action order is PyTorch's, action for action (its generator only adds idle slots
//! around these, which a lane does not carry), so a CSV exported from either reads the same.

use super::{check_pm, finish};
use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// Interleaved zero bubble with `v ≥ 2` chunks per rank (stage `s` on rank `s mod p`).
///
/// The `m` micro-batches go in `k = max(1, m div p)` rounds of `g = m / k` (so `g = p` when `p`
/// divides `m`, and `g = m` when `m < p`); `k` must divide `m`, as PyTorch requires. Work is
/// counted in virtual micro-batches `t = 0 … m·v−1`: forward `t` runs chunk `(t div g) mod v` on
/// micro-batch `(t div g·v)·g + t mod g`; backward `t` runs chunk `v−1−((t div g) mod v)` on the
/// same micro-batch index. Rank `r` warms up with `min((v−1)·g + p−1−r, m·v)` forwards (interleaved
/// 1F1B with `g = p` takes `2(p−1−r) + (v−1)·p`), then for each backward `t`: the next forward if
/// any remain, `I(t)`, and, once `t ≥ r`, `W(t−r)`; then the remaining `W`s in order. With
/// `v = 1` this is ZB-H1. `interleaved_zb(2, 2, 4)` (stages 0 and 2 on rank 0, 1 and 3 on rank 1):
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15   16   17   18   19   20   21   22   23   24
/// rank 0  0F0  0F1  2F0  2F1    .  2I0  2W0  0F2  2I1  2W1  0F3  0I0  0W0  2F2  0I1  0W1  2F3  2I2  2W2  2I3  2W3  0I2  0W2  0I3  0W3
/// rank 1    .  1F0  1F1  3F0  3I0  3F1  3I1  3W0  1F2  1I0  3W1  1F3  1I1  1W0  3F2  3I2  1W1  3F3  3I3  3W2  1I2  3W3  1I3  1W2  1W3
/// ```
pub fn interleaved_zb(p: usize, v: usize, m: usize) -> Result<Schedule> {
    check_pm("interleaved-zb", p, v, m)?;
    let bad = |reason: String| Err(Error::BadArgs { schedule: "interleaved-zb".into(), reason });
    if v < 2 {
        return bad(format!(
            "it needs at least 2 chunks per rank (got v={v}); with one chunk its order is ZB-H1's, use the zb-h1 schedule"
        ));
    }
    let rounds = (m / p).max(1);
    if m % rounds != 0 {
        let fits = |n: usize| n % (n / p).max(1) == 0;
        let lower = (1..m).rev().find(|&n| fits(n)).unwrap_or(p);
        let upper = (m + 1..).find(|&n| fits(n)).unwrap_or(m);
        return bad(format!(
            "like PyTorch's ScheduleInterleavedZeroBubble it runs the micro-batches in max(1, m div p) rounds of equal size, and m={m} does not split into {rounds} rounds (p={p}); try m={lower} or m={upper}"
        ));
    }
    let g = m / rounds;
    let total = m * v;
    let mb = |t: usize| (t / (g * v)) * g + t % g;
    let forward_chunk = |t: usize| (t / g) % v;
    let lanes = (0..p)
        .map(|r| {
            let f = |t: usize| Action::new(forward_chunk(t) * p + r, Op::F, mb(t));
            let back = |t: usize, op: Op| Action::new((v - 1 - forward_chunk(t)) * p + r, op, mb(t));
            let warm = ((v - 1) * g + p - 1 - r).min(total);
            // F, I and W of every virtual micro-batch, in one allocation.
            let mut lane = Vec::with_capacity(3 * total);
            lane.extend((0..warm).map(f));
            for t in 0..total {
                if warm + t < total {
                    lane.push(f(warm + t));
                }
                lane.push(back(t, Op::I));
                if t >= r {
                    lane.push(back(t - r, Op::W));
                }
            }
            lane.extend((total.saturating_sub(r)..total).map(|t| back(t, Op::W)));
            lane
        })
        .collect();
    finish("interleaved-zb", p, v, m, lanes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{simulate, validate, CostModel, StageCosts, Stats};

    #[test]
    fn doc_picture_is_the_output() {
        let src = include_str!("interleaved_zb.rs");
        assert_eq!(interleaved_zb(2, 2, 4).unwrap().grid(), super::super::doc_picture(src, 0));
    }

    /// Each rank's lane as action strings.
    fn lanes(p: usize, v: usize, m: usize) -> Vec<String> {
        let s = interleaved_zb(p, v, m).unwrap();
        s.lanes.iter().map(|l| l.iter().map(Action::to_string).collect::<Vec<_>>().join(" ")).collect()
    }

    /// The orders PyTorch's `ScheduleInterleavedZeroBubble` generates (its compute actions with
    /// the idle slots left out, `I` for its backward-input action), computed from its generator.
    #[test]
    fn the_order_is_pytorchs() {
        assert_eq!(
            lanes(2, 2, 4),
            [
                "0F0 0F1 2F0 2F1 2I0 2W0 0F2 2I1 2W1 0F3 0I0 0W0 2F2 0I1 0W1 2F3 2I2 2W2 2I3 2W3 0I2 0W2 0I3 0W3",
                "1F0 1F1 3F0 3I0 3F1 3I1 3W0 1F2 1I0 3W1 1F3 1I1 1W0 3F2 3I2 1W1 3F3 3I3 3W2 1I2 3W3 1I3 1W2 1W3",
            ]
        );
        assert_eq!(
            lanes(4, 2, 8),
            [
                "0F0 0F1 0F2 0F3 4F0 4F1 4F2 4F3 4I0 4W0 0F4 4I1 4W1 0F5 4I2 4W2 0F6 4I3 4W3 0F7 0I0 0W0 \
                 4F4 0I1 0W1 4F5 0I2 0W2 4F6 0I3 0W3 4F7 4I4 4W4 4I5 4W5 4I6 4W6 4I7 4W7 0I4 0W4 0I5 0W5 0I6 0W6 0I7 0W7",
                "1F0 1F1 1F2 1F3 5F0 5F1 5F2 5I0 5F3 5I1 5W0 1F4 5I2 5W1 1F5 5I3 5W2 1F6 1I0 5W3 1F7 1I1 1W0 \
                 5F4 1I2 1W1 5F5 1I3 1W2 5F6 5I4 1W3 5F7 5I5 5W4 5I6 5W5 5I7 5W6 1I4 5W7 1I5 1W4 1I6 1W5 1I7 1W6 1W7",
                "2F0 2F1 2F2 2F3 6F0 6F1 6I0 6F2 6I1 6F3 6I2 6W0 2F4 6I3 6W1 2F5 2I0 6W2 2F6 2I1 6W3 2F7 2I2 2W0 \
                 6F4 2I3 2W1 6F5 6I4 2W2 6F6 6I5 2W3 6F7 6I6 6W4 6I7 6W5 2I4 6W6 2I5 6W7 2I6 2W4 2I7 2W5 2W6 2W7",
                "3F0 3F1 3F2 3F3 7F0 7I0 7F1 7I1 7F2 7I2 7F3 7I3 7W0 3F4 3I0 7W1 3F5 3I1 7W2 3F6 3I2 7W3 3F7 3I3 \
                 3W0 7F4 7I4 3W1 7F5 7I5 3W2 7F6 7I6 3W3 7F7 7I7 7W4 3I4 7W5 3I5 7W6 3I6 7W7 3I7 3W4 3W5 3W6 3W7",
            ]
        );
        // m < p: one round of m micro-batches.
        assert_eq!(
            lanes(3, 3, 3),
            [
                "0F0 0F1 0F2 3F0 3F1 3F2 6F0 6F1 6F2 6I0 6W0 6I1 6W1 6I2 6W2 3I0 3W0 3I1 3W1 3I2 3W2 0I0 0W0 0I1 0W1 0I2 0W2",
                "1F0 1F1 1F2 4F0 4F1 4F2 7F0 7F1 7I0 7F2 7I1 7W0 7I2 7W1 4I0 7W2 4I1 4W0 4I2 4W1 1I0 4W2 1I1 1W0 1I2 1W1 1W2",
                "2F0 2F1 2F2 5F0 5F1 5F2 8F0 8I0 8F1 8I1 8F2 8I2 8W0 5I0 8W1 5I1 8W2 5I2 5W0 2I0 5W1 2I1 5W2 2I2 2W0 2W1 2W2",
            ]
        );
    }

    #[test]
    fn every_small_case_validates_or_is_refused_as_pytorch_refuses() {
        for p in 1..=8 {
            for v in 2..=4 {
                for m in 1..=4 * p + 3 {
                    let rounds = (m / p).max(1);
                    match interleaved_zb(p, v, m) {
                        Ok(s) => {
                            assert_eq!(m % rounds, 0, "p={p} v={v} m={m}");
                            validate(&s).unwrap_or_else(|e| panic!("p={p} v={v} m={m}: {e}"));
                            assert_eq!(s.num_actions(), 3 * p * v * m);
                        }
                        Err(e) => assert_ne!(m % rounds, 0, "p={p} v={v} m={m}: {e}"),
                    }
                }
            }
        }
    }

    #[test]
    fn m_must_split_into_equal_rounds() {
        // 9 micro-batches on 4 ranks: 2 rounds, which 9 does not split into.
        let e = interleaved_zb(4, 2, 9).unwrap_err().to_string();
        assert!(e.contains("2 rounds") && e.contains("m=8 or m=10"), "{e}");
        let e = interleaved_zb(4, 1, 8).unwrap_err().to_string();
        assert!(e.contains("zb-h1"), "{e}");
    }

    /// Unit per-rank costs (each chunk costs `1/v`), no latency.
    fn stats(s: &Schedule, act_bytes: u64, w_bytes: u64) -> Stats {
        let mut model = CostModel::per_rank(1.0, 1.0, 1.0);
        if let StageCosts::PerRank(c) = &mut model.costs {
            c.act_bytes = act_bytes;
            c.w_bytes = w_bytes;
        }
        Stats::of(&simulate(s, &model).unwrap())
    }

    /// With unit per-rank costs the makespan is `3m + (p−1)/v`: the `W`s in the bubbles cut
    /// interleaved 1F1B's `3m + 3(p−1)/v` to a third, as ZB-H1 cuts 1F1B's.
    #[test]
    fn makespan_is_a_third_of_interleaved_1f1bs_bubble_over_the_work() {
        let cases = [(2, 2, 4, 12.5, 13.5), (4, 2, 8, 25.5, 28.5), (4, 4, 16, 48.75, 50.25), (8, 2, 24, 75.5, 82.5)];
        for (p, v, m, zb, one) in cases {
            let z = stats(&interleaved_zb(p, v, m).unwrap(), 0, 0).makespan;
            let i = stats(&crate::interleaved(p, v, m).unwrap(), 0, 0).makespan;
            assert_eq!((z, i), (zb, one), "p={p} v={v} m={m}");
        }
        for p in 1..=6 {
            for v in 2..=4 {
                for m in [p, 2 * p, 3 * p] {
                    let z = stats(&interleaved_zb(p, v, m).unwrap(), 0, 0).makespan;
                    let i = stats(&crate::interleaved(p, v, m).unwrap(), 0, 0).makespan;
                    let bubble = (p - 1) as f64 / v as f64;
                    assert!((z - 3.0 * m as f64 - bubble).abs() < 1e-9, "p={p} v={v} m={m}: {z}");
                    assert!(z <= i + 1e-9, "p={p} v={v} m={m}: {z} > {i}");
                }
            }
        }
    }

    /// Fewer forwards in flight than interleaved 1F1B: rank `r` peaks at `(v−1)·p + p−r` chunk
    /// activations (`M_act / v` each) where interleaved 1F1B holds `(v−1)·p + 2(p−r)−1`, plus
    /// the `M_w / v` of the `I`s whose `W` is still pending.
    #[test]
    fn peak_activations_are_below_interleaved_1f1bs() {
        let chunk = 1u64 << 20;
        for (p, v, m) in [(2, 2, 4), (4, 2, 8), (4, 2, 16), (4, 3, 12), (8, 2, 24)] {
            let z = stats(&interleaved_zb(p, v, m).unwrap(), v as u64 * chunk, 0).peak_held_bytes;
            let i = stats(&crate::interleaved(p, v, m).unwrap(), v as u64 * chunk, 0).peak_held_bytes;
            for r in 0..p {
                assert_eq!(z[r], ((v - 1) * p + p - r) as u64 * chunk, "p={p} v={v} m={m} rank {r}");
                assert_eq!(i[r], ((v - 1) * p + 2 * (p - r) - 1) as u64 * chunk, "p={p} v={v} m={m} rank {r}");
            }
        }
    }
}
