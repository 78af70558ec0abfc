//! The last step of [`auto`](super::auto): moving single weight-gradient passes one place along
//! their lane — a `W` after the `F` or `I` that follows it, or before the one that precedes it —
//! while that shortens the simulated objective and the lane stays within the memory limit.
//!
//! Invariant: only `W`s move, never past another `W` nor before their own `I`, so every lane keeps
//! its order of `F`s and `I`s — and with it the dependencies between ranks (a `W` sends nothing)
//! — and its `W`s stay in micro-batch order: a valid schedule stays valid.

use crate::action::{Action, Op};
use crate::cost::CostModel;
use crate::error::Result;
use crate::simulate::simulate_stats;

use super::finish;

/// An objective's value — (primary, tie-break) — and the lanes that reach it.
pub(super) type Scored = ((f64, f64), Vec<Vec<Action>>);

/// Improves `lanes` (of objective `here`, by `key` of makespan and steady period) by single moves
/// of a `W`, first improvement first, for at most `budget` simulations; `fits` says whether a lane
/// of rank `r` stays within the limit.
pub(super) fn polish(
    costs: &CostModel,
    m: usize,
    mut lanes: Vec<Vec<Action>>,
    mut here: (f64, f64),
    key: impl Fn(f64, f64) -> (f64, f64),
    fits: impl Fn(usize, &[Action]) -> bool,
    budget: usize,
) -> Result<Scored> {
    let p = lanes.len();
    let better = |a: (f64, f64), b: (f64, f64)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).is_lt();
    let mut spent = 0;
    let mut moved = true;
    while moved && spent < budget {
        moved = false;
        for r in 0..p {
            let mut k = 0;
            while k + 1 < lanes[r].len() && spent < budget {
                let (a, b) = (lanes[r][k], lanes[r][k + 1]);
                // Exactly one of the two is a W, and a W never passes its own I.
                let movable = (a.op == Op::W) != (b.op == Op::W) && !(a.op == Op::I && a.microbatch == b.microbatch);
                if movable {
                    lanes[r].swap(k, k + 1);
                    if fits(r, &lanes[r]) {
                        spent += 1;
                        let st = simulate_stats(&finish("auto", p, 1, m, lanes.clone())?, costs)?;
                        let got = key(st.makespan, st.steady_period);
                        if better(got, here) {
                            (here, moved) = (got, true);
                            k += 1;
                            continue;
                        }
                    }
                    lanes[r].swap(k, k + 1);
                }
                k += 1;
            }
        }
    }
    Ok((here, lanes))
}
