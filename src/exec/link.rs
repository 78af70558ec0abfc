//! Links between stages on different ranks: one bounded crossbeam channel per directed edge
//! (activations `s → s+1`, gradients `s+1 → s`), and the receiving side's stash.
//!
//! Invariants: every envelope carries the [`Message`] it delivers (edge and micro-batch) and the
//! receiver checks it; a channel holds at most `m` envelopes (one per micro-batch per step), so a
//! send never blocks and the blocking semantics are the simulator's — a rank waits only for its
//! inputs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use pipesched_schedules::deps::{Flow, Message};

/// One message on a link: what it is, when it left, and its payload.
pub struct Envelope<P> {
    /// Which message (flow, stages, micro-batch).
    pub message: Message,
    /// When it was sent, in milliseconds since the step started.
    pub sent: f64,
    /// The activation or gradient.
    pub payload: P,
}

/// The two ends of one edge's channel.
pub struct Link<P> {
    /// The producer's end.
    pub tx: Sender<Envelope<P>>,
    /// The consumer's end.
    pub rx: Receiver<Envelope<P>>,
}

/// All cross-rank links of a schedule, keyed by (flow, consuming stage).
pub struct Links<P> {
    links: HashMap<(Flow, usize), Link<P>>,
}

impl<P> Links<P> {
    /// Links for every neighbouring stage pair placed on different ranks.
    pub fn new(stages: usize, m: usize, rank_of: impl Fn(usize) -> usize) -> Links<P> {
        let mut links = HashMap::new();
        for s in 1..stages {
            if rank_of(s - 1) != rank_of(s) {
                for key in [(Flow::Activation, s), (Flow::Gradient, s - 1)] {
                    let (tx, rx) = bounded(m);
                    links.insert(key, Link { tx, rx });
                }
            }
        }
        Links { links }
    }

    /// The link that carries `msg`, if its stages sit on different ranks.
    pub fn get(&self, msg: &Message) -> Option<&Link<P>> {
        self.links.get(&(msg.flow, msg.to))
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

/// Envelopes that arrived before they were needed, by message.
pub struct Stash<P> {
    waiting: HashMap<Message, Envelope<P>>,
}

impl<P> Default for Stash<P> {
    fn default() -> Self {
        Stash { waiting: HashMap::new() }
    }
}

impl<P> Stash<P> {
    /// Receives `want` on `link`, stashing other micro-batches of the same edge, until
    /// `wait.deadline`, checking `wait.aborted` every `wait.poll`.
    pub fn recv(
        &mut self,
        link: &Link<P>,
        want: Message,
        wait: Wait<impl Fn() -> bool>,
    ) -> Result<Envelope<P>, RecvError> {
        let Wait { deadline, poll: slice, aborted } = wait;
        if let Some(env) = self.waiting.remove(&want) {
            return Ok(env);
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvError::Timeout);
            }
            match link.rx.recv_timeout((deadline - now).min(slice)) {
                Ok(env) => {
                    let got = env.message;
                    if (got.flow, got.from, got.to) != (want.flow, want.from, want.to) {
                        return Err(RecvError::Mismatch(format!(
                            "a message from stage {} to stage {} arrived on the link from stage {} to stage {}",
                            got.from, got.to, want.from, want.to
                        )));
                    }
                    if got.mb == want.mb {
                        return Ok(env);
                    }
                    if self.waiting.insert(got, env).is_some() {
                        return Err(RecvError::Mismatch(format!(
                            "micro-batch {} came twice on the link into stage {}",
                            got.mb, want.to
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
