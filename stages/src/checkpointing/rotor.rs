//! The dynamic program of Beaumont, Eyraud-Dubois, Herrmann, Joly and Shilova ("Optimal
//! checkpointing for heterogeneous chains", the `rotor` algorithm): the least time to
//! back-propagate a [`Chain`] under a memory budget, and a [`Sequence`] that takes it, in the
//! memory model of `sequence.rs`.
//!
//! `T(s, e, m)` is the least time to back-propagate layers `s..e` starting with `a_s` and the
//! incoming gradient `δ_e` held (none when `e = L`: the last layer makes it from `a_L`), ending
//! with `δ_s` alone, when at most `m` slots are live at once — those two values included. With
//! `d_e` the bytes of `δ_e` (0 for `e = L`):
//!
//! ```text
//! T(i, i+1, m) = uf_i + ub_i                       if m ≥ both peaks of Fall(i), B(i)
//! T(s, e, m)   = min( uf_s + T(s+1, e, m − x_s − x̄_s) + ub_s,                    [Fall(s) … B(s)]
//!                     min_{s<j<e} Σ_{k=s}^{j−1} uf_k + T(j, e, m − x_s) + T(s, j, m) )
//!                                                  [Fck(s) F∅(s+1) … F∅(j−1), then j..e, then s..j]
//! ```
//!
//! each option only where the peaks of its own steps fit in `m` (infinite otherwise). Bytes are
//! discretised into slots of about `u = ⌈budget / slots⌉` bytes: every size is rounded *up* to whole
//! slots and the budget *down*, so a sequence that fits in the slots fits in the bytes — each
//! peak is a sum of sizes `Σ x ≤ u·Σ ⌈x/u⌉ ≤ u·⌊budget/u⌋ ≤ budget` — and the rounding can only
//! refuse a budget, never exceed one. `u` is also made a multiple of the greatest common divisor
//! of all sizes, so the program is exact whenever the budget holds at most `slots` of those
//! (always when `slots ≥ budget`).
//!
//! The program is optimal among *persistent* sequences, where a kept input stays until its own
//! backward (see `sequence.rs`): its tests compare it with an exhaustive search over all of
//! them, on random chains of up to 10 layers. A non-persistent sequence can do better — one that
//! lets an `F∅` consume a kept input and recomputes it later can fit a smaller budget (the test
//! `dropping_a_kept_input_can_save_memory` in `exhaustive.rs` has one) — and is not searched.
//!
//! Invariant: a returned [`Solution`] replays (see [`Sequence::replay`]) to exactly its `time`
//! (up to the order of float additions), persistent and within `budget` bytes.

use super::chain::Chain;
use super::sequence::{Sequence, Step};
use crate::error::{Error, Result};

/// The optimal strategy found for a budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// The least time (sum of step times).
    pub time: f64,
    /// Steps that take it.
    pub sequence: Sequence,
    /// Bytes per memory slot.
    pub slot_bytes: u64,
    /// Slots of the budget (`⌊budget / slot_bytes⌋`).
    pub slots: u64,
}

/// The sizes the program adds up, in one unit (bytes, or slots rounded up).
struct Sizes {
    /// `x_i`, `i` in `0..=L`.
    x: Vec<u64>,
    /// `x̄_i`.
    saved: Vec<u64>,
    /// Forward and backward overheads.
    ftmp: Vec<u64>,
    btmp: Vec<u64>,
}

impl Sizes {
    fn new(chain: &Chain, unit: u64) -> Sizes {
        let up = |b: u64| b.div_ceil(unit);
        let l = chain.layers();
        Sizes {
            x: (0..=l.len()).map(|i| up(chain.activation_bytes(i))).collect(),
            saved: l.iter().map(|c| up(c.saved_bytes)).collect(),
            ftmp: l.iter().map(|c| up(c.forward_overhead)).collect(),
            btmp: l.iter().map(|c| up(c.backward_overhead)).collect(),
        }
    }

    fn len(&self) -> usize {
        self.saved.len()
    }

    /// `d_e`: bytes of the incoming gradient of a sub-chain ending at `e`.
    fn grad(&self, e: usize) -> u64 {
        if e < self.len() {
            self.x[e]
        } else {
            0
        }
    }

    /// Peak of `Fall(s)` starting a sub-chain that ends at `e`.
    fn forward_all(&self, s: usize, e: usize) -> u64 {
        self.x[s] + self.grad(e) + self.x[s + 1] + self.saved[s] + self.ftmp[s]
    }

    /// Peak of `B(s)`.
    fn backward(&self, s: usize) -> u64 {
        2 * self.x[s] + self.x[s + 1] + self.saved[s] + self.btmp[s]
    }

    /// Peaks of the forwards `Fck(s) F∅(s+1) … F∅(j−1)` of a sub-chain ending at `e`, for each
    /// `j` in `s+1..e` (index `j − s − 1`).
    fn sweeps(&self, s: usize, e: usize) -> Vec<u64> {
        let base = self.x[s] + self.grad(e);
        let mut peak = self.x[s + 1] + self.ftmp[s];
        let mut out = Vec::with_capacity(e - s - 1);
        for j in s + 1..e {
            if j > s + 1 {
                let k = j - 1;
                peak = peak.max(self.x[k] + self.x[k + 1] + self.ftmp[k]);
            }
            out.push(base + peak);
        }
        out
    }
}

/// The least budget, in bytes, in which a persistent sequence back-propagates `chain`: the
/// min-max version of the program above, exact in bytes.
pub fn min_budget(chain: &Chain) -> u64 {
    let z = Sizes::new(chain, 1);
    let l = z.len();
    let mut p = vec![vec![u64::MAX; l + 1]; l + 1];
    for len in 1..=l {
        for s in 0..=l - len {
            let e = s + len;
            let mut best = z.forward_all(s, e).max(z.backward(s));
            if len > 1 {
                best = best.max(z.x[s] + z.saved[s] + p[s + 1][e]);
                for (j, sweep) in (s + 1..e).zip(z.sweeps(s, e)) {
                    best = best.min(sweep.max(z.x[s] + p[j][e]).max(p[s][j]));
                }
            }
            p[s][e] = best;
        }
    }
    p[0][l]
}

/// How a sub-chain is best split.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Choice {
    /// No sequence fits.
    Infeasible,
    /// `Fall(s)`, the rest, `B(s)` (the only choice for one layer).
    All,
    /// `Fck(s)` and forwards to a checkpoint at `j`.
    Checkpoint(usize),
}

impl Choice {
    /// As the table keeps it, in two bytes: 0, 1, or `j + 2`.
    fn code(self) -> u16 {
        match self {
            Choice::Infeasible => 0,
            Choice::All => 1,
            Choice::Checkpoint(j) => (j + 2) as u16,
        }
    }

    fn of(code: u16) -> Choice {
        match code {
            0 => Choice::Infeasible,
            1 => Choice::All,
            j => Choice::Checkpoint(j as usize - 2),
        }
    }
}

/// Most layers the table's two-byte choices can name.
const MAX_LAYERS: usize = u16::MAX as usize - 2;

/// Most entries (sub-chains × slots) a table may have: 10 bytes each.
const MAX_ENTRIES: usize = 1 << 28;

/// `T(s, e, m)` and its choice for every sub-chain `0 ≤ s < e ≤ L` (`e(e−1)/2 + s` in a
/// triangle) and every number of slots up to a budget.
struct Table {
    slots: usize,
    time: Vec<f64>,
    choice: Vec<u16>,
}

impl Table {
    fn at(&self, s: usize, e: usize, m: u64) -> usize {
        (e * (e - 1) / 2 + s) * (self.slots + 1) + m as usize
    }

    fn time(&self, s: usize, e: usize, m: u64) -> f64 {
        self.time[self.at(s, e, m)]
    }

    fn fill(chain: &Chain, z: &Sizes, slots: u64) -> Table {
        let l = z.len();
        let size = l * (l + 1) / 2 * (slots as usize + 1);
        let mut t = Table { slots: slots as usize, time: vec![f64::INFINITY; size], choice: vec![0; size] };
        let uf: Vec<f64> = chain.layers().iter().map(|c| c.forward).collect();
        let ub: Vec<f64> = chain.layers().iter().map(|c| c.backward).collect();
        for len in 1..=l {
            for s in 0..=l - len {
                let e = s + len;
                let own = z.forward_all(s, e).max(z.backward(s));
                let sweeps = if len > 1 { z.sweeps(s, e) } else { vec![] };
                for m in 0..=slots {
                    let mut best = (f64::INFINITY, Choice::Infeasible);
                    if m >= own {
                        let inner = match len {
                            1 => 0.0,
                            _ => m.checked_sub(z.x[s] + z.saved[s]).map_or(f64::INFINITY, |r| t.time(s + 1, e, r)),
                        };
                        best = (uf[s] + inner + ub[s], Choice::All);
                    }
                    if m >= z.x[s] {
                        let mut forwards = 0.0;
                        for (j, &sweep) in (s + 1..e).zip(&sweeps) {
                            forwards += uf[j - 1];
                            if m < sweep {
                                continue;
                            }
                            let time = forwards + t.time(j, e, m - z.x[s]) + t.time(s, j, m);
                            if time < best.0 {
                                best = (time, Choice::Checkpoint(j));
                            }
                        }
                    }
                    if best.0.is_finite() {
                        let at = t.at(s, e, m);
                        (t.time[at], t.choice[at]) = (best.0, best.1.code());
                    }
                }
            }
        }
        t
    }

    /// The steps of the best sequence for `s..e` under `m` slots, appended to `out`.
    fn steps(&self, z: &Sizes, s: usize, e: usize, m: u64, out: &mut Vec<Step>) {
        match Choice::of(self.choice[self.at(s, e, m)]) {
            Choice::Infeasible => unreachable!("steps are only asked of feasible entries"),
            Choice::All => {
                out.push(Step::ForwardAll(s));
                if e > s + 1 {
                    self.steps(z, s + 1, e, m - z.x[s] - z.saved[s], out);
                }
                out.push(Step::Backward(s));
            }
            Choice::Checkpoint(j) => {
                out.push(Step::ForwardCheckpoint(s));
                out.extend((s + 1..j).map(Step::ForwardNone));
                self.steps(z, j, e, m - z.x[s], out);
                self.steps(z, s, j, m, out);
            }
        }
    }
}

/// Bytes per slot for `budget` in about `slots` slots: a multiple of the greatest common divisor
/// `g` of all the chain's sizes, so that sizes sharing a factor lose nothing to rounding (the
/// program is exact when `budget / g ≤ slots`).
fn slot_bytes(chain: &Chain, budget: u64, slots: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let sizes =
        chain.layers().iter().flat_map(|l| [l.input_bytes, l.saved_bytes, l.forward_overhead, l.backward_overhead]);
    let g = sizes.chain([chain.activation_bytes(chain.len())]).fold(0, gcd).max(1);
    g * budget.div_ceil(g).div_ceil(slots.max(1)).max(1)
}

/// The fastest persistent sequence that back-propagates `chain` within `budget` bytes, with sizes
/// discretised into about `slots` slots (see the module doc); time `O(L³·slots)`, memory
/// `O(L²·slots)`. An error naming the smallest feasible budget when `budget` is below it, or
/// asking for more slots when rounding up to slots is what makes the budget too small.
pub fn solve(chain: &Chain, budget: u64, slots: u64) -> Result<Solution> {
    let least = min_budget(chain);
    if budget < least {
        return Err(Error::Budget {
            budget,
            reason: format!(
                "every persistent sequence needs at least {least} bytes for this chain (one layer's input, output, \
                 gradients and saved state at once, with the checkpoints before it); give at least that"
            ),
        });
    }
    let l = chain.len();
    if l > MAX_LAYERS {
        return Err(Error::Chain(format!("{l} layers; the program takes at most {MAX_LAYERS}")));
    }
    let unit = slot_bytes(chain, budget, slots);
    let z = Sizes::new(chain, unit);
    let slots = budget / unit;
    if (l * (l + 1) / 2).saturating_mul(slots as usize + 1) > MAX_ENTRIES {
        return Err(Error::Budget {
            budget,
            reason: format!(
                "{slots} slots for {l} layers make a table of more than {MAX_ENTRIES} entries; ask for fewer slots"
            ),
        });
    }
    let table = Table::fill(chain, &z, slots);
    let time = table.time(0, l, slots);
    if !time.is_finite() {
        return Err(Error::Budget {
            budget,
            reason: format!(
                "it fits (the least is {least} bytes), but not once sizes are rounded up to slots of {unit} bytes; \
                 ask for more slots (at most one per byte: {budget})"
            ),
        });
    }
    let mut steps = Vec::with_capacity(4 * l);
    table.steps(&z, 0, l, slots, &mut steps);
    Ok(Solution { time, sequence: Sequence(steps), slot_bytes: unit, slots })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpointing::exhaustive::fastest;
    use crate::checkpointing::ChainLayer;
    use proptest::prelude::*;

    fn layer(forward: f64, backward: f64, input_bytes: u64, saved_bytes: u64) -> ChainLayer {
        ChainLayer { forward, backward, input_bytes, saved_bytes, ..Default::default() }
    }

    /// Checks `solution` against a replay of its own sequence.
    fn replays(chain: &Chain, budget: u64, solution: &Solution) {
        let r = solution.sequence.replay(chain).unwrap();
        assert!(r.persistent, "{}", solution.sequence);
        assert!(r.peak_bytes <= budget, "peak {} over budget {budget}: {}", r.peak_bytes, solution.sequence);
        assert!((r.time - solution.time).abs() <= 1e-9 * solution.time.max(1.0), "{r:?} vs {}", solution.time);
    }

    #[test]
    fn a_budget_below_the_least_names_it() {
        let chain = Chain::uniform(layer(1.0, 2.0, 10, 100), 4).unwrap();
        let least = min_budget(&chain);
        // One layer: input, output, ā, and δ both sides: 10 + 10 + 100 + 10 = 130, plus the
        // chain's input when that layer is not the first.
        assert_eq!(least, 140);
        let e = solve(&chain, least - 1, 1000).unwrap_err().to_string();
        assert!(e.contains("139 bytes") && e.contains("at least 140 bytes"), "{e}");
        let s = solve(&chain, least, 1000).unwrap();
        replays(&chain, least, &s);
        assert_eq!(s.sequence.replay(&chain).unwrap().peak_bytes, least);
    }

    #[test]
    fn coarse_slots_stay_within_the_budget_or_ask_for_more() {
        let chain = Chain::new((0..6).map(|i| layer(1.0 + i as f64, 2.0, 7 + 3 * i, 13 * i)).collect(), 5).unwrap();
        let least = min_budget(&chain);
        let e = solve(&chain, least, 3).unwrap_err().to_string();
        assert!(e.contains("ask for more slots"), "{e}");
        for budget in [least + 10, 2 * least, 5 * least] {
            for slots in [7, 20, 100, budget] {
                if let Ok(s) = solve(&chain, budget, slots) {
                    replays(&chain, budget, &s);
                }
            }
            // Exact slots never do worse than coarse ones.
            let exact = solve(&chain, budget, budget).unwrap().time;
            assert!(solve(&chain, budget, 20).map_or(true, |s| s.time >= exact));
        }
    }

    #[test]
    fn a_generous_budget_stores_everything() {
        let chain = Chain::uniform(layer(1.0, 2.0, 10, 100), 5).unwrap();
        let s = solve(&chain, 1 << 20, 1000).unwrap();
        assert_eq!(s.time, chain.compute_time());
        assert_eq!(s.sequence.to_string(), "Fall0 Fall1 Fall2 Fall3 Fall4 B4 B3 B2 B1 B0");
    }

    /// A chain of `layers` layers with integer times (so sums are exact) and small sizes.
    fn small_chain(layers: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Chain> {
        let layer = (0u32..6, 0u32..6, 1u64..6, 0u64..9, 0u64..3, 0u64..3);
        (prop::collection::vec(layer, layers), 1u64..6).prop_map(|(layers, out)| {
            let layers = layers
                .into_iter()
                .map(|(f, b, x, xb, ft, bt)| ChainLayer {
                    forward: f as f64,
                    backward: b as f64,
                    input_bytes: x,
                    saved_bytes: xb,
                    forward_overhead: ft,
                    backward_overhead: bt,
                })
                .collect();
            Chain::new(layers, out).unwrap()
        })
    }

    /// The program's optimum and least budget equal those of the exhaustive search over every
    /// persistent sequence, at `budget = least + extra`.
    fn matches_exhaustive_search(chain: &Chain, extra: u64) -> std::result::Result<(), TestCaseError> {
        let least = min_budget(chain);
        prop_assert_eq!(fastest(chain, least - 1).map(|f| f.0), None);
        let budget = least + extra;
        let (best, path) = fastest(chain, budget).expect("the least budget is feasible");
        let s = solve(chain, budget, budget).unwrap();
        prop_assert_eq!(s.time, best, "program {} vs search {}", s.sequence, path);
        replays(chain, budget, &s);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_program_matches_exhaustive_search(chain in small_chain(1..=7), extra in 0u64..40) {
            matches_exhaustive_search(&chain, extra)?;
        }

        /// Coarse slots: the sequence stays within the bytes, and replays to the claimed time.
        #[test]
        fn rounding_to_slots_never_exceeds_the_budget(
            chain in small_chain(1..=12),
            times in prop::collection::vec(0.0f64..10.0, 24),
            over in 1.0f64..3.0,
            slots in 3u64..60,
        ) {
            let layers = chain.layers().iter().enumerate().map(|(i, l)| ChainLayer {
                forward: times[2 * i],
                backward: times[2 * i + 1],
                input_bytes: 1000 * l.input_bytes + 7,
                saved_bytes: 1000 * l.saved_bytes + 3,
                ..*l
            }).collect();
            let chain = Chain::new(layers, 1234).unwrap();
            let budget = (min_budget(&chain) as f64 * over) as u64;
            match solve(&chain, budget, slots) {
                Ok(s) => replays(&chain, budget, &s),
                Err(e) => prop_assert!(e.to_string().contains("ask for more slots"), "{}", e),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4))]

        /// Ten layers: 0.3–7 s of exhaustive search per chain in a debug build.
        #[test]
        fn the_program_matches_exhaustive_search_on_ten_layers(chain in small_chain(10..=10), extra in 0u64..12) {
            matches_exhaustive_search(&chain, extra)?;
        }
    }
}
