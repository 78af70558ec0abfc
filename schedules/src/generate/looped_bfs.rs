//! Looped BFS (Lamy-Poirier, "Breadth-First Pipeline Parallelism", MLSys 2023; PyTorch's
//! `ScheduleLoopedBFS`): `v` chunks per rank in loop placement, each rank running all the
//! forwards of one chunk before the next chunk's — breadth first over micro-batches — then the
//! backwards the same way from its last chunk. It keeps every micro-batch's activations until the
//! backward (GPipe's memory), in exchange for fewer, longer runs of one chunk.
//!
//! PyTorch runs each chunk's backwards latest micro-batch first; here they run in micro-batch
//! order, which a stage's gradients are summed in (the bitwise contract): in the other order a
//! stage would hold `m − 1` micro-batches' gradients until the first one's came. With equal
//! costs the makespan is the same.

use super::{check_pm, finish};
use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// Looped BFS with `v` chunks per rank (stage `s` on rank `s mod p`) and any `m`: rank `r` runs
/// `F(s, 0) … F(s, m−1)` for each of its stages `s = r, r+p, …` in turn, then
/// `B(s, 0) … B(s, m−1)` for each of them from the last. `looped_bfs(2, 2, 2)` (stages 0 and 2
/// on rank 0, 1 and 3 on rank 1):
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9
/// rank 0  0F0  0F1  2F0  2F1    .    .  2B0  2B1  0B0  0B1
/// rank 1    .  1F0  1F1  3F0  3F1  3B0  3B1  1B0  1B1    .
/// ```
pub fn looped_bfs(p: usize, v: usize, m: usize) -> Result<Schedule> {
    check_pm("looped-bfs", p, v, m)?;
    if v < 2 {
        return Err(Error::BadArgs {
            schedule: "looped-bfs".into(),
            reason: format!("looped BFS loops over at least 2 chunks per rank (got v={v}); with one chunk it is GPipe"),
        });
    }
    let lanes = (0..p)
        .map(|r| {
            let stages: Vec<usize> = (0..v).map(|c| c * p + r).collect();
            let forwards = stages.iter().flat_map(|&s| (0..m).map(move |j| Action::new(s, Op::F, j)));
            let backwards = stages.iter().rev().flat_map(|&s| (0..m).map(move |j| Action::new(s, Op::B, j)));
            forwards.chain(backwards).collect()
        })
        .collect();
    finish("looped-bfs", p, v, m, lanes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{simulate, CostModel, Stats};

    #[test]
    fn doc_picture_is_the_output() {
        let src = include_str!("looped_bfs.rs");
        assert_eq!(looped_bfs(2, 2, 2).unwrap().grid(), super::super::doc_picture(src, 0));
    }

    /// Unit per-rank costs split over 2 chunks (F = I = W = 0.5 a chunk): PyTorch's order gives
    /// 57 and 165 time units of per-chunk unit costs at p = 4, m = 8 and p = 8, m = 24, that is
    /// 28.5 and 82.5 here — and so does this one.
    #[test]
    fn makespans_at_unit_costs() {
        let model = CostModel::per_rank(1.0, 1.0, 1.0);
        let makespan = |p, m| Stats::of(&simulate(&looped_bfs(p, 2, m).unwrap(), &model).unwrap()).makespan;
        assert_eq!(makespan(4, 8), 28.5);
        assert_eq!(makespan(8, 24), 82.5);
    }

    #[test]
    fn one_chunk_is_refused() {
        let e = looped_bfs(2, 1, 4).unwrap_err().to_string();
        assert!(e.contains("at least 2 chunks"), "{e}");
    }
}
