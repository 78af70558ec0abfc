//! [`Sequence`]: an order of forward and backward steps that back-propagates a [`Chain`], and
//! [`Sequence::replay`], which runs it on the chain's byte and time counts.
//!
//! The memory model (the one the dynamic program in `rotor.rs` and the exhaustive search in its
//! tests optimise over):
//!
//! - At the start `a_0` is held; nothing else.
//! - A forward of layer `i` needs `a_i` held and `a_{i+1}` not held, and `i` below the backward
//!   frontier `t` (layers `t..L` are back-propagated). It makes `a_{i+1}`: while it runs, its
//!   input, its output and `forward_overhead` are live; `Fall` also makes `ā_i`. Afterwards `F∅`
//!   frees `a_i`; `Fck` and `Fall` keep it. An output nothing can use any more (`a_t` once
//!   `δ_t` exists) is freed as soon as it is made.
//! - `B(i)` needs `i = t − 1`, `a_i`, `ā_i` and `δ_{i+1}` (for the last layer: `a_L`, turned
//!   into the loss gradient in place). While it runs `δ_i` and `backward_overhead` are live too;
//!   afterwards `a_i`, `ā_i` and `δ_{i+1}` are freed and `t = i`.
//! - A sequence is complete when `t = 0`: only `δ_0` is held.
//! - A sequence is *persistent* when no `F∅` runs on a kept input (the chain's input, or the
//!   input of an earlier `Fck`/`Fall` of the same layer not yet back-propagated): checkpoints
//!   then live until their backward. Replay accepts both kinds and says which it saw.
//!
//! Invariant: `replay` accepts a sequence only if every step has what it needs when it runs,
//! and then reports the exact sum of the step times and the exact largest number of bytes live
//! at once (a peak is taken during each step, with its temporaries).

use std::fmt;

use super::chain::Chain;
use crate::error::{Error, Result};

/// One step of a [`Sequence`]: a forward of one of three kinds, or a backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// `F∅(i)`: forward of layer `i`, freeing its input afterwards and saving nothing.
    ForwardNone(usize),
    /// `Fck(i)`: forward of layer `i`, keeping its input `a_i` (a checkpoint).
    ForwardCheckpoint(usize),
    /// `Fall(i)`: forward of layer `i`, keeping its input and everything its backward needs.
    ForwardAll(usize),
    /// `B(i)`: backward of layer `i`.
    Backward(usize),
}

impl Step {
    /// The layer the step runs.
    pub fn layer(self) -> usize {
        match self {
            Step::ForwardNone(i) | Step::ForwardCheckpoint(i) | Step::ForwardAll(i) | Step::Backward(i) => i,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::ForwardNone(i) => write!(f, "F∅{i}"),
            Step::ForwardCheckpoint(i) => write!(f, "Fck{i}"),
            Step::ForwardAll(i) => write!(f, "Fall{i}"),
            Step::Backward(i) => write!(f, "B{i}"),
        }
    }
}

/// Steps in the order they run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sequence(pub Vec<Step>);

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Step::to_string).collect();
        write!(f, "{}", parts.join(" "))
    }
}

/// What a replay measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replay {
    /// Sum of the times of the steps.
    pub time: f64,
    /// Most bytes live at once.
    pub peak_bytes: u64,
    /// Number of forward steps (of any kind).
    pub forwards: usize,
    /// Whether every kept input — the chain's input and each input of an `Fck` or `Fall` —
    /// stayed held until its layer's backward (no `F∅` consumed it). The optimal program of
    /// `rotor.rs` is optimal among persistent sequences.
    pub persistent: bool,
}

/// The values held at one point of a replay.
#[derive(Debug, Clone)]
struct Held {
    /// `a_i` held, for `i` in `0..=L`.
    activations: Vec<bool>,
    /// `a_i` kept (by `Fck`, `Fall`, or as the chain's input) and not yet back-propagated.
    kept: Vec<bool>,
    /// `ā_i` held, for `i` in `0..L`.
    saved: Vec<bool>,
    /// Layers `frontier..L` are back-propagated; `δ_frontier` is held when `frontier < L`.
    frontier: usize,
    /// Bytes of everything above.
    bytes: u64,
}

impl Sequence {
    /// Runs the steps on `chain`'s counts; an error naming the first step that lacks what it
    /// needs, or saying what is left when the sequence stops before `B(0)`.
    pub fn replay(&self, chain: &Chain) -> Result<Replay> {
        let l = chain.len();
        let mut held = Held {
            activations: (0..=l).map(|i| i == 0).collect(),
            kept: (0..=l).map(|i| i == 0).collect(),
            saved: vec![false; l],
            frontier: l,
            bytes: chain.activation_bytes(0),
        };
        let mut out = Replay { time: 0.0, peak_bytes: held.bytes, forwards: 0, persistent: true };
        for (index, &step) in self.0.iter().enumerate() {
            let bad = |reason: String| Error::Sequence { index, step: step.to_string(), reason };
            let i = step.layer();
            if i >= l {
                return Err(bad(format!("the chain has {l} layers")));
            }
            let layer = chain.layer(i);
            let x = |k| chain.activation_bytes(k);
            match step {
                Step::Backward(_) => {
                    if i + 1 != held.frontier {
                        return Err(bad(format!(
                            "the next backward is of layer {} (layers {}.. are done)",
                            held.frontier as isize - 1,
                            held.frontier
                        )));
                    }
                    if !held.activations[i] || !held.saved[i] {
                        return Err(bad(format!(
                            "needs a{i} and ā{i}; held: a{i} {}, ā{i} {}",
                            held.activations[i], held.saved[i]
                        )));
                    }
                    if i + 1 == l && !held.activations[l] {
                        return Err(bad(format!("needs the chain's output a{l}, which is not held")));
                    }
                    out.peak_bytes = out.peak_bytes.max(held.bytes + x(i) + layer.backward_overhead);
                    held.activations[i] = false;
                    held.kept[i] = false;
                    held.saved[i] = false;
                    held.activations[l] = false;
                    held.bytes = held.bytes - x(i) - layer.saved_bytes - x(i + 1) + x(i);
                    held.frontier = i;
                    out.time += layer.backward;
                }
                _ => {
                    if i >= held.frontier {
                        return Err(bad(format!("layer {i} is already back-propagated")));
                    }
                    if !held.activations[i] {
                        return Err(bad(format!("needs its input a{i}, which is not held")));
                    }
                    if held.activations[i + 1] {
                        return Err(bad(format!("its output a{} is already held", i + 1)));
                    }
                    let all = matches!(step, Step::ForwardAll(_));
                    if all && held.saved[i] {
                        return Err(bad(format!("ā{i} is already held")));
                    }
                    let saved = if all { layer.saved_bytes } else { 0 };
                    out.peak_bytes = out.peak_bytes.max(held.bytes + x(i + 1) + saved + layer.forward_overhead);
                    held.saved[i] |= all;
                    held.bytes += saved;
                    // a_{i+1} is kept unless δ_{i+1} already exists.
                    if i + 1 < held.frontier || i + 1 == l {
                        held.activations[i + 1] = true;
                        held.bytes += x(i + 1);
                    }
                    if matches!(step, Step::ForwardNone(_)) {
                        out.persistent &= !held.kept[i];
                        held.activations[i] = false;
                        held.bytes -= x(i);
                    } else {
                        held.kept[i] = true;
                    }
                    out.time += layer.forward;
                    out.forwards += 1;
                }
            }
        }
        if held.frontier > 0 {
            return Err(Error::Sequence {
                index: self.0.len(),
                step: "end".into(),
                reason: format!("the sequence stops with layers 0..{} not back-propagated", held.frontier),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpointing::ChainLayer;
    use Step::*;

    /// Inputs 1, 2, 4 bytes, output 8; ā_i = 16·(i+1); times 1 forward, 10 backward.
    fn chain() -> Chain {
        let layer = |i: u64| ChainLayer {
            forward: 1.0,
            backward: 10.0,
            input_bytes: 1 << i,
            saved_bytes: 16 * (i + 1),
            ..Default::default()
        };
        Chain::new(vec![layer(0), layer(1), layer(2)], 8).unwrap()
    }

    #[test]
    fn store_all_holds_everything_at_the_turn() {
        let s = Sequence(vec![ForwardAll(0), ForwardAll(1), ForwardAll(2), Backward(2), Backward(1), Backward(0)]);
        let r = s.replay(&chain()).unwrap();
        assert_eq!((r.time, r.forwards), (33.0, 3));
        // After Fall2: a0..a3 (1+2+4+8) and ā0..ā2 (16+32+48); B2 adds δ2 (4).
        assert_eq!(r.peak_bytes, 15 + 96 + 4);
        assert_eq!(s.to_string(), "Fall0 Fall1 Fall2 B2 B1 B0");
    }

    #[test]
    fn recomputing_from_the_input_holds_less() {
        let s = Sequence(vec![
            ForwardCheckpoint(0),
            ForwardNone(1),
            ForwardAll(2),
            Backward(2),
            ForwardCheckpoint(0),
            ForwardAll(1),
            Backward(1),
            ForwardAll(0),
            Backward(0),
        ]);
        let r = s.replay(&chain()).unwrap();
        assert_eq!((r.time, r.forwards), (36.0, 6));
        // B2: a0 (1), a2 (4), ā2 (48), a3 (8), + δ2 (4) = 65.
        assert_eq!(r.peak_bytes, 65);
    }

    #[test]
    fn a_step_without_what_it_needs_is_named() {
        let c = chain();
        let e = Sequence(vec![ForwardNone(0), ForwardNone(0)]).replay(&c).unwrap_err().to_string();
        assert!(e.contains("step 1 (F∅0): needs its input a0"), "{e}");
        let e = Sequence(vec![ForwardCheckpoint(0), ForwardCheckpoint(1), Backward(1)]).replay(&c).unwrap_err();
        assert!(e.to_string().contains("next backward is of layer 2"), "{e}");
        let e = Sequence(vec![ForwardCheckpoint(0), ForwardCheckpoint(1), ForwardCheckpoint(2), Backward(2)])
            .replay(&c)
            .unwrap_err();
        assert!(e.to_string().contains("needs a2 and ā2"), "{e}");
        let e = Sequence(vec![ForwardAll(0)]).replay(&c).unwrap_err().to_string();
        assert!(e.contains("layers 0..3 not back-propagated"), "{e}");
        let e = Sequence(vec![ForwardAll(3)]).replay(&c).unwrap_err().to_string();
        assert!(e.contains("has 3 layers"), "{e}");
    }
}
