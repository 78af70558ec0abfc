//! [`OptimalPlan`]: what the `optimal:BYTES` recompute policy does on one stage — the stage's
//! layers as a [`Chain`], the fastest persistent sequence that back-propagates it within the
//! budget ([`solve`], the `rotor` program), and that sequence split into the stage's ops.
//!
//! **The chain.** Layer `i` of the stage, for a micro-batch of `rows` rows of `f32`:
//! `a_i` = its input (`input_width·rows·4` bytes: what a checkpoint of it keeps, and the size of
//! its gradient `δ_i`); `ā_i` = what its forward keeps for its backward under `none`
//! (`saved_per_row·rows·4`) less its input (at least 0) — plus, on the model's last layer, what
//! the loss keeps; `a_L` = the stage's output. Times are a proxy from shapes alone, the same
//! wherever a plan is made (a built stage, a spec, a cost file): per row, forward
//! `2·Σ in·out` over the layer's matrix products plus the floats it keeps, backward twice that.
//!
//! **The budget.** BYTES bounds the peak of the sequence's replay (`sequence.rs`) on that chain:
//! at every step, the bytes of the stage input and every checkpoint, the saved states, the
//! activation a forward makes, and the gradients a backward reads and writes. It leaves out
//! what `I` keeps for `W` (which grows as layers are back-propagated), parameters, and the
//! temporaries inside one layer's op. A budget below [`min_budget`] of the chain is an error
//! naming the least one.
//!
//! **The split into ops.** A sequence from `solve` starts with one forward sweep over every
//! layer that ends with `Fall(L−1) B(L−1)`: nothing is recomputed before the first backward.
//! `F` is that sweep: layer `i` keeps nothing (`F∅`), its input (`Fck`), or everything
//! (`Fall`); the last layer always keeps everything, and the loss runs in `F`. `I` runs every
//! step after the sweep in order — forwards from the kept inputs interleaved with the layers'
//! backwards — and keeps, as under every policy, what `W` needs. There is no `R`.
//!
//! **What the stage holds** (the ledger's count: tensors a micro-batch owns, not the gradient
//! flowing between layers): after `F`, [`OptimalPlan::kept`]; after each step of `I`, the kept
//! inputs and activations made, the saved states and what `W` needs of the layers already
//! back-propagated; its most over `I`, with the state `I` starts from, is
//! [`OptimalPlan::peak`]; after `I`, what `W` needs.
//!
//! Invariant: a plan's sequence replays on its chain within the budget (checked by `solve`),
//! and the stage's interpreter (`ops.rs`) runs exactly `F`'s sweep and then `backward`'s steps,
//! holding after each the bytes [`OptimalPlan::held_after`] says (tested in `ops.rs`).

use crate::bytes::Rows;
use crate::checkpointing::{min_budget, solve, Chain, ChainLayer, Step};
use crate::error::{Error, Result};

/// Most layers a stage under `optimal` may have: the program takes `O(L³·slots)` time.
pub const MAX_LAYERS: usize = 512;

/// Slots the program first discretises a budget into (the table has `L²/2·slots` entries).
const COARSE_SLOTS: u64 = 1 << 12;

/// Most table entries when the coarse slots refuse a feasible budget.
const MAX_ENTRIES: usize = 1 << 24;

/// What `F` keeps of one layer under `optimal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKeep {
    /// Nothing (`F∅`): `I` re-creates its input from an earlier kept one.
    Nothing,
    /// Its input (`Fck`).
    Input,
    /// Everything its backward needs (`Fall`).
    Everything,
}

/// The optimal sequence of one stage within a budget, split into `F` and `I`.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimalPlan {
    /// Per layer, what `F` keeps.
    pub keep: Vec<LayerKeep>,
    /// The steps `I` runs, in order, starting with the last layer's backward.
    pub backward: Vec<Step>,
    /// Bytes per unit of the stage's counts (4·rows for floats per row).
    unit_bytes: u64,
    /// Bytes `F` keeps.
    kept: u64,
    /// Bytes held after each step of `backward`.
    after: Vec<u64>,
    /// Peak bytes of the replay on the chain: what the budget bounds.
    chain_peak: u64,
}

/// The chain of a stage of `layers` (counts in units of `unit_bytes` bytes, for micro-batches of
/// `rows` rows) in units of the greatest common divisor of its sizes, with that divisor (in
/// bytes), and each layer's sizes in bytes as the stage holds them. The same chain whatever
/// unit the counts come in, so a built stage, a spec and a cost file plan alike.
fn chain(layers: &[Rows], loss_saved: Option<usize>, unit_bytes: u64, rows: usize) -> Result<(Chain, u64, Vec<Sizes>)> {
    let n = layers.len();
    if n == 0 || n > MAX_LAYERS {
        return Err(Error::Policy(format!(
            "optimal: a stage of {n} layers; the program plans stages of 1 to {MAX_LAYERS} layers — split the model into more stages"
        )));
    }
    let overflow = || Error::Policy("optimal: the stage's byte counts overflow 64 bits; use a smaller batch".into());
    let bytes = |units: usize| (units as u64).checked_mul(unit_bytes.max(1)).ok_or_else(overflow);
    let mut sizes = Vec::with_capacity(n);
    for (i, l) in layers.iter().enumerate() {
        let mut saved = l.saved.ok_or_else(overflow)?;
        if i + 1 == n {
            saved = saved.checked_add(loss_saved.unwrap_or(0)).ok_or_else(overflow)?;
        }
        sizes.push(Sizes { input: bytes(l.input)?, saved: bytes(saved)?, w: bytes(l.w.ok_or_else(overflow)?)? });
    }
    let output = bytes(layers[n - 1].output)?;
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = sizes.iter().flat_map(|s| [s.input, s.saved.saturating_sub(s.input)]).fold(output, gcd).max(1);
    let per_row = 4.0 * rows.max(1) as f64;
    let chain_layers = layers
        .iter()
        .zip(&sizes)
        .map(|(l, s)| {
            let forward = 2.0 * l.maps as f64 + s.saved as f64 / per_row;
            ChainLayer {
                forward,
                backward: 2.0 * forward,
                input_bytes: s.input / g,
                saved_bytes: s.saved.saturating_sub(s.input) / g,
                forward_overhead: 0,
                backward_overhead: 0,
            }
        })
        .collect();
    Ok((Chain::new(chain_layers, output / g)?, g, sizes))
}

/// One layer as the plan sees it, in units.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    input: u64,
    saved: u64,
    w: u64,
}

impl OptimalPlan {
    /// The plan for a stage of `layers` (counts in units of `unit_bytes` bytes), with `loss_saved`
    /// units of loss state on the model's last stage, within `budget` bytes. An error for a
    /// budget below the least one (naming it, in bytes), for too many layers, or for counts
    /// that overflow.
    pub(crate) fn new(
        layers: &[Rows],
        loss_saved: Option<usize>,
        unit_bytes: u64,
        rows: usize,
        budget: u64,
    ) -> Result<OptimalPlan> {
        let (chain, g, sizes) = chain(layers, loss_saved, unit_bytes, rows)?;
        let n = sizes.len();
        let overflow =
            || Error::Policy("optimal: the stage's byte counts overflow 64 bits; use a smaller batch".into());
        let budget_units = budget / g;
        let least = min_budget(&chain);
        if budget_units < least {
            let least_bytes = least.checked_mul(g).ok_or_else(overflow)?;
            return Err(Error::Budget {
                budget,
                reason: format!(
                    "optimal:{budget}B is below the least budget of this stage, {least_bytes} bytes per micro-batch of {rows} rows \
                     (one layer's input, output, saved state and gradients at once, with the checkpoints before it); \
                     give at least optimal:{least_bytes}B"
                ),
            });
        }
        // Coarse slots first (fast); finer ones when rounding to them refuses a feasible budget.
        let fine = (MAX_ENTRIES / (n * (n + 1) / 2)).max(1) as u64;
        let solution = match solve(&chain, budget_units, budget_units.min(COARSE_SLOTS)) {
            Err(Error::Budget { .. }) if budget_units > COARSE_SLOTS => {
                solve(&chain, budget_units, budget_units.min(fine))?
            }
            other => other?,
        };
        let replay = solution.sequence.replay(&chain)?;
        let steps = solution.sequence.0;
        let first_b = steps
            .iter()
            .position(|s| matches!(s, Step::Backward(_)))
            .ok_or_else(|| Error::Policy("optimal: the checkpointing sequence has no backward".into()))?;
        let mut keep = vec![LayerKeep::Nothing; n];
        for s in &steps[..first_b] {
            keep[s.layer()] = match s {
                Step::ForwardNone(_) => LayerKeep::Nothing,
                Step::ForwardCheckpoint(_) => LayerKeep::Input,
                _ => LayerKeep::Everything,
            };
        }
        let mut plan = OptimalPlan {
            keep,
            backward: steps[first_b..].to_vec(),
            unit_bytes: unit_bytes.max(1),
            kept: 0,
            after: vec![],
            chain_peak: replay.peak_bytes.checked_mul(g).ok_or_else(overflow)?,
        };
        plan.account(&sizes).ok_or_else(overflow)?;
        Ok(plan)
    }

    /// The least budget, in bytes, of a stage of `layers` (see [`new`](OptimalPlan::new)).
    pub(crate) fn least(layers: &[Rows], loss_saved: Option<usize>, unit_bytes: u64, rows: usize) -> Result<u64> {
        let (chain, g, _) = chain(layers, loss_saved, unit_bytes, rows)?;
        min_budget(&chain).checked_mul(g).ok_or_else(|| {
            Error::Policy("optimal: the stage's least budget overflows 64 bits; use a smaller batch".into())
        })
    }

    /// Works out `kept` and `after` by replaying the split on what the stage holds: kept inputs
    /// and activations made (`a`), saved states (`s`), what `W` needs (`w`).
    fn account(&mut self, sizes: &[Sizes]) -> Option<()> {
        let n = sizes.len();
        let (mut a, mut s, mut w) = (vec![false; n + 1], vec![false; n], vec![false; n]);
        for (i, k) in self.keep.iter().enumerate() {
            match k {
                LayerKeep::Input => a[i] = true,
                LayerKeep::Everything => s[i] = true,
                LayerKeep::Nothing => {}
            }
        }
        let held = |a: &[bool], s: &[bool], w: &[bool]| -> Option<u64> {
            let mut t = 0u64;
            for i in 0..n {
                t = t.checked_add(if a[i] { sizes[i].input } else { 0 })?;
                t = t.checked_add(if s[i] { sizes[i].saved } else { 0 })?;
                t = t.checked_add(if w[i] { sizes[i].w } else { 0 })?;
            }
            Some(t)
        };
        self.kept = held(&a, &s, &w)?;
        let mut frontier = n;
        for step in &self.backward {
            match *step {
                Step::ForwardCheckpoint(i) => a[i + 1] = i + 1 < frontier,
                Step::ForwardNone(i) => {
                    a[i] = false;
                    a[i + 1] = i + 1 < frontier;
                }
                Step::ForwardAll(i) => {
                    a[i] = false;
                    s[i] = true;
                    a[i + 1] = i + 1 < frontier;
                }
                Step::Backward(i) => {
                    s[i] = false;
                    w[i] = true;
                    frontier = i;
                }
            }
            self.after.push(held(&a, &s, &w)?);
        }
        Some(())
    }

    /// Bytes `F` keeps of one micro-batch.
    pub fn kept(&self) -> u64 {
        self.kept
    }

    /// Bytes the micro-batch holds after each step of [`backward`](OptimalPlan::backward).
    pub fn held_after(&self) -> &[u64] {
        &self.after
    }

    /// The most bytes the micro-batch holds from the start of `I` to its end, between steps.
    pub fn peak(&self) -> u64 {
        self.after.iter().copied().fold(self.kept, u64::max)
    }

    /// [`kept`](OptimalPlan::kept) in units of the stage's counts (exact: a sum of them).
    pub(crate) fn kept_units(&self) -> u64 {
        self.kept / self.unit_bytes
    }

    /// [`peak`](OptimalPlan::peak) in units of the stage's counts.
    pub(crate) fn peak_units(&self) -> u64 {
        self.peak() / self.unit_bytes
    }

    /// Peak bytes of the sequence's replay on the stage's chain: what the budget bounds.
    pub fn chain_peak(&self) -> u64 {
        self.chain_peak
    }

    /// The layers (indices within the stage) `I` runs forward, in order, and whether each
    /// keeps everything (`Fall`) — the recomputation the sequence does beyond one forward.
    pub fn recomputed(&self) -> Vec<(usize, bool)> {
        self.backward
            .iter()
            .filter_map(|s| match *s {
                Step::ForwardNone(i) | Step::ForwardCheckpoint(i) => Some((i, false)),
                Step::ForwardAll(i) => Some((i, true)),
                Step::Backward(_) => None,
            })
            .collect()
    }

    /// The sequence as text: `F`'s sweep, then `I`'s steps (`Fck0 F∅1 Fall2 | B2 Fall1 B1 B0`).
    pub fn describe(&self) -> String {
        let sweep: Vec<String> = self
            .keep
            .iter()
            .enumerate()
            .map(|(i, k)| match k {
                LayerKeep::Nothing => Step::ForwardNone(i).to_string(),
                LayerKeep::Input => Step::ForwardCheckpoint(i).to_string(),
                LayerKeep::Everything => Step::ForwardAll(i).to_string(),
            })
            .collect();
        let rest: Vec<String> = self.backward.iter().map(Step::to_string).collect();
        format!("{} | {}", sweep.join(" "), rest.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(input: usize, saved: usize, w: usize, output: usize) -> Rows {
        Rows { input, output, saved: Some(saved), w: Some(w), selective: Some(saved), maps: input * output }
    }

    /// Four equal layers: input 2, saved 10 (input included), W needs 3, unit 4 bytes.
    fn four() -> Vec<Rows> {
        vec![rows(2, 10, 3, 2); 4]
    }

    #[test]
    fn a_generous_budget_keeps_everything_and_recomputes_nothing() {
        let plan = OptimalPlan::new(&four(), None, 4, 1, 1 << 20).unwrap();
        assert_eq!(plan.keep, vec![LayerKeep::Everything; 4]);
        assert!(plan.recomputed().is_empty());
        assert_eq!(plan.kept(), 4 * 40);
        // Each backward frees 10 units and adds 3: the peak is what F keeps.
        assert_eq!(plan.held_after(), [4 * 33, 4 * 26, 4 * 19, 4 * 12]);
        assert_eq!(plan.peak(), plan.kept());
        assert_eq!(plan.describe(), "Fall0 Fall1 Fall2 Fall3 | B3 B2 B1 B0");
    }

    #[test]
    fn the_least_budget_is_named_in_bytes() {
        let layers = four();
        let least = OptimalPlan::least(&layers, None, 4, 1).unwrap();
        let e = OptimalPlan::new(&layers, None, 4, 1, least - 1).unwrap_err().to_string();
        assert!(e.contains(&format!("give at least optimal:{least}B")), "{e}");
        let plan = OptimalPlan::new(&layers, None, 4, 1, least).unwrap();
        assert!(plan.chain_peak() <= least);
        assert!(!plan.recomputed().is_empty(), "{}", plan.describe());
        assert!(plan.kept() < 4 * 40);
    }

    #[test]
    fn every_budget_ends_with_what_w_needs() {
        let layers: Vec<Rows> = (0..6).map(|i| rows(2 + i % 3, 12 + 2 * i, 5, 2 + (i + 1) % 3)).collect();
        let least = OptimalPlan::least(&layers, Some(4), 4, 1).unwrap();
        for budget in (least..=least * 4).step_by(4 * 7) {
            let plan = OptimalPlan::new(&layers, Some(4), 4, 1, budget).unwrap();
            assert!(plan.chain_peak() <= budget);
            assert_eq!(*plan.keep.last().unwrap(), LayerKeep::Everything);
            assert_eq!(plan.backward[0], Step::Backward(5));
            // After I only what W needs is held.
            assert_eq!(*plan.held_after().last().unwrap(), 4 * 6 * 5);
        }
    }
}
