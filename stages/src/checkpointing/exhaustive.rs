//! Exhaustive search for tests: the fastest of *every* persistent sequence of the memory model
//! of `sequence.rs` that fits a budget — not only those the dynamic program builds — by
//! Dijkstra's algorithm over the states a sequence can reach.
//!
//! Persistent (see [`Replay::persistent`](super::Replay::persistent)): an input once kept (by
//! `Fck` or `Fall`, and the chain's input) stays until its layer's backward; no `F∅` consumes it.
//! Without that rule, sequences exist that beat the program: one that keeps `a_1`, computes
//! `ā_1` early, then drops `a_1` with an `F∅` and recomputes it later fits a chain in 9 bytes
//! where every persistent sequence needs 10 (the test `dropping_a_kept_input_can_save_memory`).
//!
//! A state is what is held: the set of activations `a_i`, which of them are kept, the set of
//! saved states `ā_i`, and the backward frontier `t` (so `δ_t`). Whether a step may run, its peak and the state after it
//! depend on the state alone, never on how it was reached, so keeping the fastest way into each
//! state loses no sequence: the search is exact. Every forward of a layer below the frontier
//! whose input is held and output is not, of each of the three kinds, and the next backward,
//! are tried (an `F∅` only on an input not kept); a step whose peak exceeds the budget is not.
//! States number at most `(L+1)·2^(3L+2)`; in a debug build a chain of 7 layers takes
//! 15–40 ms, 8 layers 15–130 ms, 9 layers 0.1–1.1 s and 10 layers 0.3–7 s (more the more the budget
//! exceeds the least), so the proptests in `rotor.rs` check many chains of up to 7 layers and a few
//! of 10.
//!
//! Invariant: the returned sequence replays (with [`Sequence::replay`]) to the returned time,
//! within the budget — the tests check it, so the search and the replay agree on the model.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::chain::Chain;
use super::sequence::{Sequence, Step};

/// A state: bit `i` of `activations` for `a_i`, of `saved` for `ā_i`; the frontier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    activations: u32,
    /// The kept inputs (`a_0`, and each input of an `Fck` or `Fall`), freed only by their `B`.
    kept: u32,
    saved: u32,
    frontier: usize,
}

/// A queue entry, ordered by time (least first).
#[derive(Debug, PartialEq)]
struct Entry(f64, State);

impl Eq for Entry {}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0)
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn bit(set: u32, i: usize) -> bool {
    set & (1 << i) != 0
}

/// Bytes held in `s`.
fn held(chain: &Chain, s: State) -> u64 {
    let l = chain.len();
    let a: u64 = (0..=l).filter(|&i| bit(s.activations, i)).map(|i| chain.activation_bytes(i)).sum();
    let b: u64 = (0..l).filter(|&i| bit(s.saved, i)).map(|i| chain.layer(i).saved_bytes).sum();
    let d = if s.frontier < l { chain.activation_bytes(s.frontier) } else { 0 };
    a + b + d
}

/// The steps that can run from `s`, each with its peak bytes and the state after it.
fn moves(chain: &Chain, s: State) -> Vec<(Step, u64, State)> {
    let l = chain.len();
    let now = held(chain, s);
    let mut out = Vec::new();
    let t = s.frontier;
    if t > 0 {
        let i = t - 1;
        if bit(s.activations, i) && bit(s.saved, i) && (t < l || bit(s.activations, l)) {
            let peak = now + chain.activation_bytes(i) + chain.layer(i).backward_overhead;
            let next = State {
                activations: s.activations & !(1 << i) & !(1 << l),
                kept: s.kept & !(1 << i),
                saved: s.saved & !(1 << i),
                frontier: i,
            };
            out.push((Step::Backward(i), peak, next));
        }
    }
    for i in 0..t {
        if !bit(s.activations, i) || bit(s.activations, i + 1) {
            continue;
        }
        let layer = chain.layer(i);
        let keep_output = i + 1 < t || i + 1 == l;
        let output = if keep_output { 1 << (i + 1) } else { 0 };
        let base = now + chain.activation_bytes(i + 1) + layer.forward_overhead;
        if !bit(s.kept, i) {
            out.push((Step::ForwardNone(i), base, State { activations: (s.activations | output) & !(1 << i), ..s }));
        }
        let kept = s.kept | (1 << i);
        out.push((Step::ForwardCheckpoint(i), base, State { activations: s.activations | output, kept, ..s }));
        if !bit(s.saved, i) {
            let saved = s.saved | (1 << i);
            let next = State { activations: s.activations | output, kept, saved, frontier: t };
            out.push((Step::ForwardAll(i), base + layer.saved_bytes, next));
        }
    }
    out
}

/// The least time of any persistent sequence that back-propagates `chain` within `budget`
/// bytes, with one such sequence; `None` if none fits.
pub fn fastest(chain: &Chain, budget: u64) -> Option<(f64, Sequence)> {
    assert!(chain.len() < 31, "exhaustive search is for small chains");
    let start = State { activations: 1, kept: 1, saved: 0, frontier: chain.len() };
    if held(chain, start) > budget {
        return None;
    }
    let mut best: HashMap<State, f64> = HashMap::from([(start, 0.0)]);
    let mut from: HashMap<State, (State, Step)> = HashMap::new();
    let mut queue = BinaryHeap::from([Entry(0.0, start)]);
    while let Some(Entry(time, s)) = queue.pop() {
        if best.get(&s).is_some_and(|&b| b < time) {
            continue;
        }
        if s.frontier == 0 {
            let mut steps = Vec::new();
            let mut at = s;
            while let Some(&(prev, step)) = from.get(&at) {
                steps.push(step);
                at = prev;
            }
            steps.reverse();
            return Some((time, Sequence(steps)));
        }
        for (step, peak, next) in moves(chain, s) {
            if peak > budget {
                continue;
            }
            let cost = match step {
                Step::Backward(i) => chain.layer(i).backward,
                _ => chain.layer(step.layer()).forward,
            };
            let t = time + cost;
            if best.get(&next).is_none_or(|&b| t < b) {
                best.insert(next, t);
                from.insert(next, (s, step));
                queue.push(Entry(t, next));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpointing::ChainLayer;

    #[test]
    fn the_search_replays_and_trades_time_for_memory() {
        let layer =
            |x| ChainLayer { forward: 1.0, backward: 1.0, input_bytes: x, saved_bytes: 3, ..Default::default() };
        let chain = Chain::new(vec![layer(1), layer(2), layer(1), layer(2)], 1).unwrap();
        let mut last = f64::INFINITY;
        for budget in 0..40 {
            if let Some((time, seq)) = fastest(&chain, budget) {
                let r = seq.replay(&chain).unwrap();
                assert!(r.time == time && r.peak_bytes <= budget, "{budget}: {seq} {r:?}");
                assert!(time <= last);
                last = time;
            }
        }
        assert_eq!(last, chain.compute_time(), "enough memory stores everything");
    }

    #[test]
    fn dropping_a_kept_input_can_save_memory() {
        use crate::checkpointing::min_budget;
        use Step::*;
        let layer = |x, ft| ChainLayer { input_bytes: x, forward_overhead: ft, ..Default::default() };
        let chain = Chain::new(vec![layer(1, 0), layer(2, 2), layer(3, 0), layer(1, 0)], 1).unwrap();
        assert_eq!(min_budget(&chain), 10);
        assert_eq!(fastest(&chain, 9), None);
        assert_eq!(fastest(&chain, 10).map(|f| f.0), Some(0.0));
        // Keep a1, make ā1 while a1 is at hand, then let F∅1 consume a1 (after dropping a2 with
        // a wasted F∅2) and remake it from a0 for B1: the forward of layer 1, with its overhead,
        // then never runs beside a2 and δ2.
        let s = Sequence(vec![
            ForwardCheckpoint(0),
            ForwardCheckpoint(1),
            ForwardAll(2),
            ForwardAll(3),
            Backward(3),
            ForwardNone(2),
            ForwardAll(1),
            ForwardNone(2),
            ForwardNone(1),
            Backward(2),
            ForwardAll(0),
            Backward(1),
            Backward(0),
        ]);
        let r = s.replay(&chain).unwrap();
        assert_eq!((r.peak_bytes, r.persistent), (9, false));
    }
}
