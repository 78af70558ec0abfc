//! The usual fixed checkpointing strategies as [`Sequence`]s, and [`compare`], which sets them
//! beside the optimum of `rotor.rs` at the same budgets, as rows of a table.
//!
//! - store all: `Fall` every layer, then every `B` — `L` forwards, the most memory;
//! - recompute all: keep only the chain's input; before each layer's backward, run the forward
//!   from the input up to it (`Fck(0) F∅ … Fall(i) B(i)`) — `L(L+1)/2` forwards;
//! - [`segmented`] with levels `[K]`: keep the input of every K-th layer (`every:K`; `√n` is
//!   `K = ⌈√L⌉`, Chen et al. 2016), then, segment by segment from the last, re-run the
//!   segment storing all and back-propagate it; the last segment stores all at once, so each
//!   layer but the last segment's runs forward twice;
//! - levels `[K₁, K₂]`: the same with segments of `K₁ = ⌈L^(2/3)⌉` layers, each re-run keeping
//!   every `K₂ = ⌈L^(1/3)⌉`-th input and recursing — the two-level `L^(1/3)` scheme.
//!
//! Invariant: every sequence built here replays without error on its chain (tested for random
//! chains and levels), and every number in a [`Row`] is what its replay measured.

use super::chain::Chain;
use super::rotor::{min_budget, solve};
use super::sequence::{Sequence, Step};
use crate::error::Result;

/// The sequence that keeps the input of every `levels[0]`-th layer, re-runs each segment with
/// the checkpoints of `levels[1..]`, and so on; with no levels, store all. Levels of 0 count as 1.
pub fn segmented(chain: &Chain, levels: &[usize]) -> Sequence {
    let mut out = Vec::new();
    segment(0, chain.len(), levels, &mut out);
    Sequence(out)
}

/// Back-propagates `s..e` from `a_s` (and `δ_e`), appending the steps to `out`.
fn segment(s: usize, e: usize, levels: &[usize], out: &mut Vec<Step>) {
    let Some((&k, rest)) = levels.split_first() else {
        out.extend((s..e).map(Step::ForwardAll));
        out.extend((s..e).rev().map(Step::Backward));
        return;
    };
    let starts: Vec<usize> = (s..e).step_by(k.max(1)).collect();
    let last = *starts.last().expect("a segment of at least one layer");
    out.extend((s..last).map(|i| if starts.contains(&i) { Step::ForwardCheckpoint(i) } else { Step::ForwardNone(i) }));
    segment(last, e, rest, out);
    for w in starts.windows(2).rev() {
        segment(w[0], w[1], rest, out);
    }
}

/// The sequence that keeps only the chain's input and runs the forward from it before each
/// layer's backward.
pub fn recompute_all(chain: &Chain) -> Sequence {
    let mut out = Vec::new();
    for i in (0..chain.len()).rev() {
        if i > 0 {
            out.push(Step::ForwardCheckpoint(0));
            out.extend((1..i).map(Step::ForwardNone));
        }
        out.push(Step::ForwardAll(i));
        out.push(Step::Backward(i));
    }
    Sequence(out)
}

/// One strategy's measured cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The strategy (`store all`, `every:2`, `optimal ≤ peak of √n`, …).
    pub strategy: String,
    /// The budget the strategy was given (optimal rows only), in bytes.
    pub budget: Option<u64>,
    /// Time of its sequence.
    pub time: f64,
    /// Most bytes live at once.
    pub peak_bytes: u64,
    /// Forward steps run.
    pub forwards: usize,
    /// Bytes per memory slot of the program (optimal rows only).
    pub slot_bytes: Option<u64>,
}

fn ceil_root(n: usize, p: f64) -> usize {
    ((n as f64).powf(p) - 1e-9).ceil().max(1.0) as usize
}

/// Rows for store all, recompute all, `every:2`, `√n`, two levels, then the optimum (with
/// sizes in about `slots` slots) at the least feasible budget and at the peak of each fixed
/// strategy. An optimal row for a budget the slots cannot reach is left out.
pub fn compare(chain: &Chain, slots: u64) -> Result<Vec<Row>> {
    let l = chain.len();
    let (sqrt, outer, inner) = (ceil_root(l, 0.5), ceil_root(l, 2.0 / 3.0), ceil_root(l, 1.0 / 3.0));
    let fixed = [
        ("store all".to_string(), segmented(chain, &[])),
        ("recompute all".to_string(), recompute_all(chain)),
        ("every:2".to_string(), segmented(chain, &[2])),
        (format!("√n (every:{sqrt})"), segmented(chain, &[sqrt])),
        (format!("two-level ({outer}, {inner})"), segmented(chain, &[outer, inner])),
    ];
    let mut rows = Vec::new();
    let mut budgets = vec![("least".to_string(), min_budget(chain))];
    for (name, sequence) in fixed {
        let r = sequence.replay(chain)?;
        budgets.push((format!("peak of {name}"), r.peak_bytes));
        rows.push(Row {
            strategy: name,
            budget: None,
            time: r.time,
            peak_bytes: r.peak_bytes,
            forwards: r.forwards,
            slot_bytes: None,
        });
    }
    for (name, budget) in budgets {
        let Ok(solution) = solve(chain, budget, slots) else { continue };
        let r = solution.sequence.replay(chain)?;
        rows.push(Row {
            strategy: format!("optimal ≤ {name}"),
            budget: Some(budget),
            time: r.time,
            peak_bytes: r.peak_bytes,
            forwards: r.forwards,
            slot_bytes: Some(solution.slot_bytes),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpointing::ChainLayer;
    use proptest::prelude::*;

    fn unit_chain(n: usize) -> Chain {
        let layer = ChainLayer { forward: 1.0, backward: 2.0, input_bytes: 1, saved_bytes: 4, ..Default::default() };
        Chain::uniform(layer, n).unwrap()
    }

    #[test]
    fn the_fixed_strategies_run_their_forwards() {
        let c = unit_chain(9);
        let forwards = |s: Sequence| s.replay(&c).unwrap().forwards;
        assert_eq!(forwards(segmented(&c, &[])), 9);
        assert_eq!(forwards(recompute_all(&c)), 45);
        // every:3: 6 layers before the last segment run twice.
        assert_eq!(forwards(segmented(&c, &[3])), 15);
        assert_eq!(
            segmented(&c, &[3]).to_string().split(' ').take(7).collect::<Vec<_>>().join(" "),
            "Fck0 F∅1 F∅2 Fck3 F∅4 F∅5 Fall6"
        );
        assert_eq!(segmented(&c, &[1]).replay(&c).unwrap().forwards, 17);
    }

    #[test]
    fn the_table_orders_time_against_memory() {
        let c = unit_chain(16);
        let rows = compare(&c, 1000).unwrap();
        let row = |name: &str| rows.iter().find(|r| r.strategy == name).unwrap().clone();
        let (all, none, sqrt) = (row("store all"), row("recompute all"), row("√n (every:4)"));
        assert_eq!((all.time, all.forwards), (48.0, 16));
        assert_eq!(none.forwards, 136);
        assert!(none.peak_bytes < sqrt.peak_bytes && sqrt.peak_bytes < all.peak_bytes);
        assert!(rows.iter().any(|r| r.strategy.starts_with("two-level (7, 3)")));
        // The optimum at a fixed strategy's peak is never slower than it.
        for r in rows.iter().filter(|r| r.budget.is_some()) {
            assert!(r.peak_bytes <= r.budget.unwrap(), "{r:?}");
            let base = r.strategy.strip_prefix("optimal ≤ peak of ");
            if let Some(base) = base {
                assert!(r.time <= row(base).time, "{r:?}");
            }
        }
        assert_eq!(row("optimal ≤ peak of store all").time, 48.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every fixed strategy is a valid sequence, and at its own peak the optimum (with
        /// exact slots) is at least as fast.
        #[test]
        fn fixed_strategies_replay_and_lose_to_the_optimum(
            sizes in prop::collection::vec((1u64..8, 0u64..12, 0u32..5), 1..12),
            levels in prop::collection::vec(1usize..5, 0..3),
        ) {
            let layers = sizes.iter().map(|&(x, xb, f)| ChainLayer {
                forward: f as f64, backward: 1.0, input_bytes: x, saved_bytes: xb, ..Default::default()
            }).collect();
            let chain = Chain::new(layers, 3).unwrap();
            for seq in [segmented(&chain, &levels), recompute_all(&chain)] {
                let r = seq.replay(&chain).unwrap();
                let best = solve(&chain, r.peak_bytes, r.peak_bytes).unwrap();
                prop_assert!(best.time <= r.time, "{} beats the optimum {}", seq, best.sequence);
            }
        }
    }
}
