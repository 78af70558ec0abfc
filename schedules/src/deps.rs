//! The dependency rule: what an action needs before it can run and what it hands on. This is
//! the one statement of DESIGN.md's rule; the validator, the simulator, the executor and the
//! hang report all ask it.
//!
//! Two kinds of dependency:
//! - **within a stage** (`F(s,j)` before `O(s,j)` before `L(s,j)` before `R(s,j)` before
//!   `I/B(s,j)`, `I(s,j)` before `W(s,j)`; `O`, `L` and `R` only where the schedule has them):
//!   all of a stage's actions run on one rank, so these are orders within one lane, which
//!   [`validate`](crate::validate) checks once; nothing waits for them at run time;
//! - **between stages**, carried by a [`Message`]: `F(s,j)` needs the activation `F(s−1,j)`
//!   sends, and `I/B(s,j)` needs the input gradient `I/B(s+1,j)` sends (the last stage needs
//!   none: its loss is its own). These are what a rank waits for.

use crate::action::{Action, Op};
use crate::schedule::Schedule;

/// What a message carries. `flow as usize` indexes per-flow tables (`[activation, gradient]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flow {
    /// The output of `F(s,j)`, sent forward to stage `s+1`.
    Activation = 0,
    /// The input gradient from `I(s,j)` or `B(s,j)`, sent back to stage `s−1`.
    Gradient = 1,
}

/// One value handed from one stage to a neighbour, for one micro-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Message {
    /// Activation or gradient.
    pub flow: Flow,
    /// The stage that produces it.
    pub from: usize,
    /// The stage that consumes it.
    pub to: usize,
    /// The micro-batch.
    pub mb: usize,
}

impl Message {
    /// Index of this message in a flat table of [`message_slots`]`(stages, m)` slots, for a
    /// message of a model of `stages` stages (`from < stages`): rows of `2·stages` slots (each
    /// stage's activation and gradient side by side), a row for what one sweep of the walk
    /// handles (the walk visits ready ranks in sweeps of increasing rank). A sweep carries a
    /// micro-batch's forward through every stage, so activations sit in row `mb`; an input
    /// gradient moves back one stage per sweep, so gradients sit in row
    /// `(mb + stages − from) mod m`, one row for the gradients a sweep passes down together. A
    /// walk of a large schedule then reads and writes a few rows per sweep instead of a page per
    /// stage.
    #[inline]
    pub fn index(&self, stages: usize, m: usize) -> usize {
        let (row, flow) = match self.flow {
            Flow::Activation => (self.mb, 0),
            Flow::Gradient => (wrap(self.mb + stages - self.from, m), 1),
        };
        (row * stages + self.from) * 2 + flow
    }

    /// The action that produces this message: `F`, or — for a gradient — the producing stage's
    /// `I` when `splits` says its backward is split, else its `B`.
    pub fn producer(&self, splits: &[bool]) -> Action {
        let op = match self.flow {
            Flow::Activation => Op::F,
            Flow::Gradient if splits.get(self.from).copied().unwrap_or(false) => Op::I,
            Flow::Gradient => Op::B,
        };
        Action::new(self.from, op, self.mb)
    }
}

/// `x mod m`: a subtraction for `x < 2m` (every row [`Message::index`] asks for, unless a model
/// has more stages than micro-batches), a division otherwise.
#[inline]
fn wrap(x: usize, m: usize) -> usize {
    match x.checked_sub(m) {
        None => x,
        Some(y) if y < m => y,
        Some(_) => x % m,
    }
}

/// Number of message slots in a step of `stages` stages and `m` micro-batches (the range of
/// [`Message::index`]).
pub fn message_slots(stages: usize, m: usize) -> usize {
    2 * stages * m
}

/// The message `a` must receive from another stage before it runs, in a model of `stages`
/// stages: the activation for a forward (not on stage 0), the input gradient for `I` or `B` (not
/// on the last stage). `R` and `W` need nothing from other stages.
pub fn consumes(a: Action, stages: usize) -> Option<Message> {
    let (s, mb) = (a.stage(), a.mb());
    match a.op {
        Op::F if s > 0 => Some(Message { flow: Flow::Activation, from: s - 1, to: s, mb }),
        Op::I | Op::B if s + 1 < stages => Some(Message { flow: Flow::Gradient, from: s + 1, to: s, mb }),
        _ => None,
    }
}

/// The message `a` sends to another stage when it ends: a forward's activation (not from the
/// last stage), an `I`'s or `B`'s input gradient (not from stage 0).
pub fn produces(a: Action, stages: usize) -> Option<Message> {
    let (s, mb) = (a.stage(), a.mb());
    match a.op {
        Op::F if s + 1 < stages => Some(Message { flow: Flow::Activation, from: s, to: s + 1, mb }),
        Op::I | Op::B if s > 0 => Some(Message { flow: Flow::Gradient, from: s, to: s - 1, mb }),
        _ => None,
    }
}

/// The same-stage action `a` must follow in its lane, if any: `R`, `O` and `I`/`B` follow `F`,
/// `L` follows `O`, `W` follows `I`. (`I`/`B` also follow the pair's `R` and `L` when it has
/// them, and `R` its `L`.)
pub fn follows(a: Action) -> Option<Action> {
    let op = match a.op {
        Op::R | Op::I | Op::B | Op::O => Op::F,
        Op::L => Op::O,
        Op::W => Op::I,
        Op::F => return None,
    };
    Some(Action::new(a.stage(), op, a.mb()))
}

/// For every stage of `s`, whether its backward is split into `I` and `W` (so its gradient
/// messages come from `I`, not `B`).
pub fn split_stages(s: &Schedule) -> Vec<bool> {
    let mut t = vec![false; s.stages()];
    for a in s.actions() {
        if a.op == Op::I {
            if let Some(x) = t.get_mut(a.stage()) {
                *x = true;
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward_messages_pair_up() {
        let stages = 3;
        for s in 0..stages {
            for op in [Op::F, Op::B, Op::I] {
                let a = Action::new(s, op, 4);
                if let Some(msg) = produces(a, stages) {
                    let consumer = consumes(Action::new(msg.to, op, 4), stages).unwrap();
                    assert_eq!(consumer, msg);
                    assert_eq!(msg.producer(&[op == Op::I; 3]), a);
                }
            }
        }
        assert_eq!(consumes(Action::new(0, Op::F, 0), stages), None);
        assert_eq!(consumes(Action::new(2, Op::B, 0), stages), None);
        assert_eq!(produces(Action::new(2, Op::F, 0), stages), None);
        assert_eq!(produces(Action::new(0, Op::I, 0), stages), None);
        assert_eq!(produces(Action::new(1, Op::W, 0), stages), None);
        assert_eq!(follows(Action::new(1, Op::W, 2)), Some(Action::new(1, Op::I, 2)));
    }

    #[test]
    fn indices_are_dense_and_distinct() {
        for (stages, m) in [(3, 4), (1, 1), (5, 7), (2, 64)] {
            let slots = message_slots(stages, m);
            let mut seen = vec![false; slots];
            for from in 0..stages {
                for mb in 0..m {
                    for flow in [Flow::Activation, Flow::Gradient] {
                        let k = Message { flow, from, to: 0, mb }.index(stages, m);
                        assert!(!seen[k]);
                        seen[k] = true;
                    }
                }
            }
            assert!(seen.iter().all(|&x| x));
        }
    }
}
