//! Links between stages on different ranks, and the receiving side's stash.
//!
//! In one process a link is a bounded crossbeam channel per directed edge (activations
//! `s → s+1`, gradients `s+1 → s`). When ranks are processes ([`Links::remote`]), a rank's
//! outgoing edges encode each envelope as a [`Packet`] into one channel that the transport's
//! communication thread drains, and each incoming edge is a channel of packets that thread
//! fills; the worker does not know which it has.
//!
//! Invariants: every envelope carries the [`Message`] it delivers (edge and micro-batch) and the
//! receiver checks it; an in-process channel holds at most `m` envelopes (one per micro-batch
//! per step), so a send never blocks and the blocking semantics are the simulator's — a rank
//! waits only for its inputs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use pipesched_schedules::deps::{Flow, Message};

use super::wire::{Packet, Wire};

/// One message on a link: what it is, when it left, and its payload.
#[derive(Debug)]
pub struct Envelope<P> {
    /// Which message (flow, stages, micro-batch).
    pub message: Message,
    /// When it was sent, in milliseconds since the step started.
    pub sent: f64,
    /// The activation or gradient.
    pub payload: P,
}

/// The producer's end of one edge.
enum Tx<P> {
    /// A channel to a worker of this process.
    Channel(Sender<Envelope<P>>),
    /// Packets for rank `peer`, through the transport.
    Remote { peer: usize, out: Sender<Packet> },
}

/// The consumer's end of one edge.
pub enum Rx<P> {
    /// From a worker of this process.
    Channel(Receiver<Envelope<P>>),
    /// Packets from another process, through the transport.
    Remote(Receiver<Packet>),
}

/// Which edge: its flow and its consuming stage.
pub type Edge = (Flow, usize);

/// The cross-rank links of a schedule (all of them in one process; one rank's otherwise),
/// keyed by (flow, consuming stage).
pub struct Links<P> {
    tx: HashMap<Edge, Tx<P>>,
    rx: HashMap<Edge, Rx<P>>,
}

/// The cross-rank edges of `stages` stages placed by `rank_of`: `(edge, producing stage)`.
fn edges(stages: usize, rank_of: &impl Fn(usize) -> usize) -> Vec<(Edge, usize)> {
    (1..stages)
        .filter(|&s| rank_of(s - 1) != rank_of(s))
        .flat_map(|s| [((Flow::Activation, s), s - 1), ((Flow::Gradient, s - 1), s)])
        .collect()
}

impl<P: Wire> Links<P> {
    /// In-process links for every neighbouring stage pair placed on different ranks.
    pub fn new(stages: usize, m: usize, rank_of: impl Fn(usize) -> usize) -> Links<P> {
        let (mut tx, mut rx) = (HashMap::new(), HashMap::new());
        for (edge, _) in edges(stages, &rank_of) {
            let (t, r) = bounded(m);
            tx.insert(edge, Tx::Channel(t));
            rx.insert(edge, Rx::Channel(r));
        }
        Links { tx, rx }
    }

    /// The links of rank `rank` alone, whose peers are other processes: its outgoing edges send
    /// packets into `out`; `inbox` gives the channel on which the transport delivers each
    /// incoming edge's packets.
    pub fn remote(
        stages: usize,
        rank: usize,
        rank_of: impl Fn(usize) -> usize,
        out: &Sender<Packet>,
        mut inbox: impl FnMut(Edge) -> Receiver<Packet>,
    ) -> Links<P> {
        let (mut tx, mut rx) = (HashMap::new(), HashMap::new());
        for ((flow, to), from) in edges(stages, &rank_of) {
            if rank_of(from) == rank {
                tx.insert((flow, to), Tx::Remote { peer: rank_of(to), out: out.clone() });
            } else if rank_of(to) == rank {
                rx.insert((flow, to), Rx::Remote(inbox((flow, to))));
            }
        }
        Links { tx, rx }
    }

    /// The receiving end of the link that carries `msg`, if its stages sit on different ranks
    /// and its consumer here.
    pub fn rx(&self, msg: &Message) -> Option<&Rx<P>> {
        self.rx.get(&(msg.flow, msg.to))
    }

    /// Sends `env` on its link; an error saying why it could not leave.
    pub fn send(&self, env: Envelope<P>) -> Result<(), String> {
        let to = env.message.to;
        match self.tx.get(&(env.message.flow, to)) {
            None => Err(format!("no link leads to stage {to} from this rank")),
            // Capacity is m per step: a full channel means an action ran twice, which
            // validation forbids.
            Some(Tx::Channel(t)) => t
                .try_send(env)
                .map_err(|_| format!("the link to stage {to} is full or closed (more than m messages in one step)")),
            Some(Tx::Remote { peer, out }) => {
                let packet = Packet::encode(*peer, &env)?;
                out.send(packet).map_err(|_| format!("the transport to rank {peer} has shut down"))
            }
        }
    }
}

impl<P: Wire> Rx<P> {
    /// The next envelope, waiting at most `wait`.
    fn recv_timeout(&self, wait: Duration) -> Result<Envelope<P>, RecvError> {
        let gone = |e| match e {
            RecvTimeoutError::Timeout => RecvError::Timeout,
            RecvTimeoutError::Disconnected => RecvError::Disconnected,
        };
        match self {
            Rx::Channel(r) => r.recv_timeout(wait).map_err(gone),
            Rx::Remote(r) => r.recv_timeout(wait).map_err(gone)?.decode().map_err(RecvError::Mismatch),
        }
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

impl<P: Wire> Stash<P> {
    /// Receives `want` on `link`, stashing other micro-batches of the same edge, until
    /// `wait.deadline`, checking `wait.aborted` every `wait.poll`.
    pub fn recv(
        &mut self,
        link: &Rx<P>,
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
            match link.recv_timeout((deadline - now).min(slice)) {
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
                Err(RecvError::Timeout) => {
                    if aborted() {
                        return Err(RecvError::Aborted);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}
