//! `Trace`: what happened in one step, simulated or measured — per-rank spans, per-rank live
//! bytes as a step function of time, and the messages between ranks.
//!
//! Both producers (the simulator and the executor) emit this one type, so every consumer —
//! stats, charts, Chrome traces, reports — works the same on either. Times start at 0 (the start
//! of the step) and are in `time_unit`.
//!
//! Layout: a rank's spans are flat arrays — the actions it ran (its lane, shared with the
//! schedule, not copied) and their start and end times, index for index — so a trace costs 16
//! bytes per action. Both producers run every lane in order, so span `k` of a rank is action `k`
//! of its lane. Messages are recorded by the executor; the simulator's follow from its rule (sent
//! when the producer ends, received the latency later — or, with a bandwidth, the delay of the
//! producing stage's messages of that flow) and are derived on demand.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::data_parallel::GradientSum;
use crate::deps::{consumes, split_stages, Message};
use crate::schedule::{Placement, Schedule};

/// Who produced a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The cost-model simulator.
    Simulated,
    /// A real run of the executor.
    Measured,
}

/// One action as it ran on its rank.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// What ran.
    pub action: Action,
    /// When it started.
    pub start: f64,
    /// When it ended.
    pub end: f64,
}

impl Span {
    /// `end − start`.
    pub fn duration(&self) -> f64 {
        self.end - self.start
    }
}

/// From `time` on, the rank holds `bytes` live bytes (until the next sample), `in_flight` of
/// them in messages sent to it and not yet consumed (see [`Ledger`](crate::Ledger)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemSample {
    /// When the live byte count changed.
    pub time: f64,
    /// Live bytes from then on: held by the rank's stages (with static bytes) plus in flight.
    pub bytes: u64,
    /// The part of `bytes` in messages in flight to this rank.
    #[serde(default)]
    pub in_flight: u64,
}

impl MemSample {
    /// `bytes` live from `time`, none of them in flight.
    pub fn new(time: f64, bytes: u64) -> MemSample {
        MemSample { time, bytes, in_flight: 0 }
    }

    /// The bytes held by the rank's stages (with static bytes): `bytes − in_flight`.
    pub fn held(&self) -> u64 {
        self.bytes - self.in_flight
    }
}

/// One message between ranks: an activation forward, or a gradient back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// The action that produced the payload.
    pub from: Action,
    /// The action that consumed it.
    pub to: Action,
    /// Rank of `from`.
    pub from_rank: usize,
    /// Rank of `to`.
    pub to_rank: usize,
    /// When the payload left `from_rank`.
    pub sent: f64,
    /// When it was available on `to_rank`.
    pub received: f64,
}

/// What one rank did during the step.
///
/// Invariant: `actions`, `start` and `end` have the same length; span `k` is `actions[k]` from
/// `start[k]` to `end[k]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankTrace {
    /// The actions in the order they ran.
    pub actions: Arc<Vec<Action>>,
    /// When each started.
    pub start: Vec<f64>,
    /// When each ended.
    pub end: Vec<f64>,
    /// Live bytes as a step function, in time order (samples at the same time in event order).
    pub memory: Vec<MemSample>,
    /// Bytes held in host memory for the rank — what its offload actions moved off the device and
    /// its reloads have not brought back — as a step function like `memory` (never in flight);
    /// empty when the rank offloads nothing. Not part of `memory`, which is the device's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<MemSample>,
}

impl Default for RankTrace {
    fn default() -> Self {
        RankTrace {
            actions: Arc::new(Vec::new()),
            start: Vec::new(),
            end: Vec::new(),
            memory: Vec::new(),
            host: Vec::new(),
        }
    }
}

impl RankTrace {
    /// A rank's trace from its spans and memory samples.
    pub fn from_spans(spans: &[Span], memory: Vec<MemSample>) -> RankTrace {
        RankTrace {
            actions: Arc::new(spans.iter().map(|s| s.action).collect()),
            start: spans.iter().map(|s| s.start).collect(),
            end: spans.iter().map(|s| s.end).collect(),
            memory,
            host: Vec::new(),
        }
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.start.len().min(self.end.len()).min(self.actions.len())
    }

    /// Whether the rank ran nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Span `k`.
    pub fn span(&self, k: usize) -> Span {
        Span { action: self.actions[k], start: self.start[k], end: self.end[k] }
    }

    /// The spans in the order they ran.
    pub fn spans(&self) -> impl DoubleEndedIterator<Item = Span> + ExactSizeIterator + Clone + '_ {
        (0..self.len()).map(|k| self.span(k))
    }

    /// The largest live byte count of the step.
    pub fn peak_bytes(&self) -> u64 {
        self.memory.iter().map(|s| s.bytes).max().unwrap_or(0)
    }

    /// The largest held byte count of the step (messages in flight left out): the part of the
    /// peak that depends on this rank's lane alone.
    pub fn peak_held_bytes(&self) -> u64 {
        self.memory.iter().map(MemSample::held).max().unwrap_or(0)
    }

    /// The largest host byte count of the step (what offload moved off the device), 0 when
    /// nothing was offloaded.
    pub fn peak_host_bytes(&self) -> u64 {
        self.host.iter().map(|s| s.bytes).max().unwrap_or(0)
    }

    /// When the peak was first reached.
    pub fn peak_time(&self) -> f64 {
        let peak = self.peak_bytes();
        self.memory.iter().find(|s| s.bytes == peak).map_or(0.0, |s| s.time)
    }
}

/// The messages between ranks of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transfers {
    /// As the executor recorded them, ordered by send time.
    Recorded(Vec<Transfer>),
    /// The simulator's rule: every message between two ranks leaves when its producer ends and
    /// arrives this latency later.
    Latency(f64),
    /// The simulator's rule with a bandwidth: a message between two ranks leaves when its
    /// producer ends and arrives `delays[s][0]` later for the activation stage `s` sends
    /// forward, `delays[s][1]` for the gradient it sends back (`c + b/B`, `b` that stage's
    /// message bytes; see [`CostModel::message_delays`](crate::CostModel::message_delays)).
    Delays(Vec<[f64; 2]>),
}

/// One step of a schedule, simulated or measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Simulated or measured.
    pub source: Source,
    /// Name of the schedule (`1f1b`, `zb-h1`, ...).
    pub schedule: String,
    /// Ranks.
    pub p: usize,
    /// Chunks per rank.
    pub v: usize,
    /// Micro-batches.
    pub m: usize,
    /// Where stages sit.
    pub placement: Placement,
    /// Unit of every time in the trace.
    pub time_unit: String,
    /// One entry per rank.
    pub ranks: Vec<RankTrace>,
    /// Messages between ranks.
    pub transfers: Transfers,
    /// With data parallelism, each rank's gradient sums over the replicas (see
    /// [`DataParallel`](crate::DataParallel)): simulated, in the order its communication thread
    /// ran them; measured, in stage order, as the executor recorded them. Empty without.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sums: Vec<Vec<GradientSum>>,
}

impl Trace {
    /// Serialises the trace as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a trace always serialises")
    }

    /// When the step's last work ended: its last span, or its last gradient sum over the
    /// replicas when one ends later (0 for an empty trace).
    pub fn step_end(&self) -> f64 {
        let spans = self.ranks.iter().flat_map(|r| r.end.iter().copied());
        let sums = self.sums.iter().flatten().map(|s| s.end);
        spans.chain(sums).fold(0.0, f64::max)
    }

    /// Number of spans over all ranks.
    pub fn num_spans(&self) -> usize {
        self.ranks.iter().map(RankTrace::len).sum()
    }

    /// The messages between ranks, ordered by send time: as recorded, or — for a simulated
    /// trace — derived from its spans (one per message whose producer and consumer sit on
    /// different ranks).
    pub fn transfers(&self) -> Vec<Transfer> {
        let (latency, delays) = match &self.transfers {
            Transfers::Recorded(list) => return list.clone(),
            Transfers::Latency(c) => (*c, None),
            Transfers::Delays(d) => (0.0, Some(d)),
        };
        // A trace read from a file may list fewer stages than it has: those take nothing.
        let delay = |msg: &Message| delays.map_or(latency, |d| d.get(msg.from).map_or(0.0, |d| d[msg.flow as usize]));
        let (stages, m) = (self.p * self.v, self.m);
        let lanes: Vec<Arc<Vec<Action>>> = self.ranks.iter().map(|r| r.actions.clone()).collect();
        let shape = Schedule { name: String::new(), p: self.p, v: self.v, m, placement: self.placement, lanes };
        let splits = split_stages(&shape);
        let ends: std::collections::HashMap<Action, (usize, f64)> = self
            .ranks
            .iter()
            .enumerate()
            .flat_map(|(r, rank)| rank.spans().map(move |s| (s.action, (r, s.end))))
            .collect();
        let mut out: Vec<Transfer> = Vec::new();
        for (to_rank, rank) in self.ranks.iter().enumerate() {
            for span in rank.spans() {
                let Some(msg): Option<Message> = consumes(span.action, stages) else { continue };
                let from = msg.producer(&splits);
                let Some(&(from_rank, sent)) = ends.get(&from) else { continue };
                if from_rank != to_rank {
                    let received = sent + delay(&msg);
                    out.push(Transfer { from, to: span.action, from_rank, to_rank, sent, received });
                }
            }
        }
        out.sort_by(|a, b| a.sent.total_cmp(&b.sent));
        out
    }
}
