//! `Trace`: what happened in one step, simulated or measured — per-rank spans, per-rank live
//! bytes as a step function of time, and the transfers between ranks.
//!
//! Both producers (the simulator and the executor) emit this one type, so every consumer —
//! stats, charts, Chrome traces, reports — works the same on either. Times start at 0 (the start
//! of the step) and are in `time_unit`.

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::schedule::Placement;

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

/// From `time` on, the rank holds `bytes` live bytes (until the next sample).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemSample {
    /// When the live byte count changed.
    pub time: f64,
    /// Live bytes from then on.
    pub bytes: u64,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankTrace {
    /// Actions in the order they ran.
    pub spans: Vec<Span>,
    /// Live bytes as a step function, in time order (samples at the same time in event order).
    pub memory: Vec<MemSample>,
}

impl RankTrace {
    /// The largest live byte count of the step.
    pub fn peak_bytes(&self) -> u64 {
        self.memory.iter().map(|s| s.bytes).max().unwrap_or(0)
    }

    /// When the peak was first reached.
    pub fn peak_time(&self) -> f64 {
        let peak = self.peak_bytes();
        self.memory.iter().find(|s| s.bytes == peak).map_or(0.0, |s| s.time)
    }
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
    pub transfers: Vec<Transfer>,
}

impl Trace {
    /// Serialises the trace as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a trace always serialises")
    }
}
