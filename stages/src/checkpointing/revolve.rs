//! Griewank and Walther's counts for a homogeneous chain (Revolve, ACM TOMS 2000), and the
//! chain and budget under which the dynamic program of `rotor.rs` reproduces them.
//!
//! Revolve reverses `l` steps of unit cost with `s` checkpoint slots (the initial state in one
//! of them) and a working state besides; the reversal of a step re-runs it once, recording, and
//! that recording run is part of the reverse step, not a forward step. The least number of
//! forward steps is `t·l − C(s+t, s+1)` with `t` the least integer such that `C(s+t, s) ≥ l`.
//!
//! The correspondence: in [`revolve_chain`] every activation and gradient has 1 byte, `ā` has
//! `X = s + 1` bytes, forwards take 1 and backwards 0, and the budget is
//! `s + 3 + X` bytes — `s` for the checkpoint slots and `3 + X` for what one reverse step holds
//! besides them: its input (the working state), its output (or incoming gradient), the gradient
//! it makes and `ā`. As `2X + 4 > s + 3 + X`, no `ā` can be held across another reverse step,
//! so `Fall` only ever runs just before its `B` — Revolve's recording run. Hence the program's
//! optimal time is Revolve's count plus `l` (the `l` recording runs), the correspondence the
//! tests check for every `l ≤ 30`, `s ≤ 5`.
//!
//! Invariant: [`revolve_forwards`] is the closed form, computed in exact integers.

use super::chain::{Chain, ChainLayer};

/// `C(n, k)`, saturating at `u64::MAX`.
fn binomial(n: u64, k: u64) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    (1..=k).fold(1u64, |c, i| {
        // c·(n−k+i)/i is exact at every step: it is C(n−k+i, i).
        c.checked_mul(n - k + i).map_or(u64::MAX, |p| p / i)
    })
}

/// The least number of forward steps that reverse `l ≥ 1` unit steps with `s ≥ 1` checkpoint
/// slots (recording runs excluded): `t·l − C(s+t, s+1)`, `t` least with `C(s+t, s) ≥ l`.
pub fn revolve_forwards(l: u64, s: u64) -> u64 {
    assert!(l >= 1 && s >= 1, "Revolve needs a step and a checkpoint slot");
    let mut t = 0;
    while binomial(s + t, s) < l {
        t += 1;
    }
    t * l - binomial(s + t, s + 1)
}

/// The homogeneous chain of `l` layers and the budget in bytes under which the program's
/// optimal time is `revolve_forwards(l, s) + l` (see the module doc).
pub fn revolve_chain(l: usize, s: u64) -> (Chain, u64) {
    let saved = s + 1;
    let layer = ChainLayer { forward: 1.0, backward: 0.0, input_bytes: 1, saved_bytes: saved, ..Default::default() };
    let chain = Chain::uniform(layer, l).expect("a chain of at least one layer with unit costs");
    (chain, s + 3 + saved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpointing::exhaustive::fastest;
    use crate::checkpointing::{solve, Step};

    #[test]
    fn the_closed_form_gives_the_known_counts() {
        assert_eq!(revolve_forwards(20, 3), 45); // t = 3: 60 − C(6, 4)
        assert_eq!(revolve_forwards(1, 1), 0);
        assert_eq!(revolve_forwards(3, 1), 3); // one slot: l(l−1)/2
        for l in 1..40 {
            assert_eq!(revolve_forwards(l, 1), l * (l - 1) / 2);
        }
        // Enough slots: each step forward once, but the last.
        assert_eq!(revolve_forwards(5, 10), 4);
        assert_eq!(binomial(10, 3), 120);
    }

    #[test]
    fn the_program_reproduces_revolve() {
        for s in 1..=5u64 {
            for l in 1..=30usize {
                let (chain, budget) = revolve_chain(l, s);
                let solution = solve(&chain, budget, budget).unwrap();
                let want = revolve_forwards(l as u64, s) + l as u64;
                assert_eq!(solution.time, want as f64, "l = {l}, s = {s}: {}", solution.sequence);
                let replay = solution.sequence.replay(&chain).unwrap();
                assert!(replay.peak_bytes <= budget && replay.forwards as u64 == want);
                // Every Fall is followed at once by its own backward: Revolve's recording run.
                let steps = &solution.sequence.0;
                for (k, step) in steps.iter().enumerate() {
                    if let Step::ForwardAll(i) = step {
                        assert_eq!(steps[k + 1], Step::Backward(*i), "l = {l}, s = {s}");
                    }
                }
            }
        }
        // One slot fewer costs more, once the chain is long enough to need them.
        let (chain, budget) = revolve_chain(20, 3);
        assert_eq!(solve(&chain, budget - 1, budget).unwrap().time, (revolve_forwards(20, 2) + 20) as f64);
    }

    #[test]
    fn no_sequence_beats_revolve() {
        for s in 1..=3u64 {
            for l in 1..=6usize {
                let (chain, budget) = revolve_chain(l, s);
                let (time, _) = fastest(&chain, budget).unwrap();
                assert_eq!(time, (revolve_forwards(l as u64, s) + l as u64) as f64, "l = {l}, s = {s}");
            }
        }
    }
}
