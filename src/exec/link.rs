//! Links between stages on different ranks: one bounded crossbeam channel per directed edge
//! (activations `s → s+1`, gradients `s+1 → s`), and the receiving side's stash.
//!
//! Invariants: every message carries its (edge, micro-batch) and the receiver checks both; a
//! channel holds at most `m` messages (one per micro-batch per step), so a send never blocks
//! and the blocking semantics are the simulator's — a rank waits only for its inputs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

/// Which way a message flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// An activation from stage `s` to `s + 1`.
    Forward,
    /// A gradient from stage `s + 1` to `s`.
    Backward,
}

/// One message on a link.
pub struct Message<P> {
    /// The stage that produced the payload.
    pub from_stage: usize,
    /// The stage it is for.
    pub to_stage: usize,
    /// The micro-batch.
    pub mb: usize,
    /// When it was sent, in seconds since the step started.
    pub sent: f64,
    /// The activation or gradient.
    pub payload: P,
}

/// The two ends of one edge's channel.
pub struct Link<P> {
    /// The producer's end.
    pub tx: Sender<Message<P>>,
    /// The consumer's end.
    pub rx: Receiver<Message<P>>,
}

/// All cross-rank links of a schedule, keyed by (direction, consuming stage).
pub struct Links<P> {
    links: HashMap<(Direction, usize), Link<P>>,
}

impl<P> Links<P> {
    /// Links for every neighbouring stage pair placed on different ranks.
    pub fn new(stages: usize, m: usize, rank_of: impl Fn(usize) -> usize) -> Links<P> {
        let mut links = HashMap::new();
        for s in 1..stages {
            if rank_of(s - 1) != rank_of(s) {
                for key in [(Direction::Forward, s), (Direction::Backward, s - 1)] {
                    let (tx, rx) = bounded(m);
                    links.insert(key, Link { tx, rx });
                }
            }
        }
        Links { links }
    }

    /// The link into `to_stage` in direction `dir`, if the edge crosses ranks.
    pub fn get(&self, dir: Direction, to_stage: usize) -> Option<&Link<P>> {
        self.links.get(&(dir, to_stage))
    }
}

/// Why a receive failed.
pub enum RecvError {
    /// Nothing came before the deadline.
    Timeout,
    /// Another rank failed; this one stops.
    Aborted,
    /// Every sender is gone: the producer's rank finished or failed without sending.
    Disconnected,
    /// A message for another edge or micro-batch arrived — a protocol violation.
    Mismatch(String),
}

/// How long a receive may wait, and how it learns that another rank failed.
pub struct Wait<F: Fn() -> bool> {
    /// Give up at this instant.
    pub deadline: Instant,
    /// Check `aborted` at least this often.
    pub poll: Duration,
    /// Whether another rank failed.
    pub aborted: F,
}

/// Messages that arrived before they were needed, per (direction, consuming stage, micro-batch).
pub struct Stash<P> {
    waiting: HashMap<(Direction, usize, usize), Message<P>>,
}

impl<P> Default for Stash<P> {
    fn default() -> Self {
        Stash { waiting: HashMap::new() }
    }
}

impl<P> Stash<P> {
    /// Receives the message for (`dir`, `to_stage`, `mb`) on `link`, stashing others for the same
    /// edge, until `wait.deadline`, checking `wait.aborted` every `wait.poll`.
    pub fn recv(
        &mut self,
        link: &Link<P>,
        (dir, to_stage, mb): (Direction, usize, usize),
        wait: Wait<impl Fn() -> bool>,
    ) -> Result<Message<P>, RecvError> {
        let Wait { deadline, poll: slice, aborted } = wait;
        if let Some(msg) = self.waiting.remove(&(dir, to_stage, mb)) {
            return Ok(msg);
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvError::Timeout);
            }
            match link.rx.recv_timeout((deadline - now).min(slice)) {
                Ok(msg) => {
                    let expected_from = match dir {
                        Direction::Forward => to_stage.wrapping_sub(1),
                        Direction::Backward => to_stage + 1,
                    };
                    if msg.to_stage != to_stage || msg.from_stage != expected_from {
                        return Err(RecvError::Mismatch(format!(
                            "a message from stage {} to stage {} arrived on the link from stage {expected_from} to stage {to_stage}",
                            msg.from_stage, msg.to_stage
                        )));
                    }
                    if msg.mb == mb {
                        return Ok(msg);
                    }
                    if self.waiting.insert((dir, to_stage, msg.mb), msg).is_some() {
                        return Err(RecvError::Mismatch(format!(
                            "micro-batch {mb} came twice on the link into stage {to_stage}"
                        )));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if aborted() {
                        return Err(RecvError::Aborted);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err(RecvError::Disconnected),
            }
        }
    }
}
