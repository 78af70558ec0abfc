//! Schedule generators: pure functions from (p, m[, v]) to a [`Schedule`] that passes
//! [`validate`](crate::validate) by construction. They do not validate what they return — that
//! would walk every schedule twice, since its consumers check it where they use it (`simulate`'s
//! walk is a validation) — so the tests validate every generator for every small p, v and m.
//!
//! Each generator's doc comment draws its output for a small case on a unit clock (one action
//! per tick, `.` = idle); a test in each file checks that the picture is what the code produces.

mod auto;
mod auto_greedy;
mod auto_polish;
mod dualpipe_v;
mod forward_only;
mod gpipe;
mod interleaved;
mod interleaved_zb;
mod looped_bfs;
mod one_f_one_b;
mod slot_grid;
mod v_memory;
mod zb_v;
mod zero_bubble;

pub use auto::{auto, Objective};
pub use dualpipe_v::dualpipe_v;
pub use forward_only::{forward_only, forward_pass};
pub use gpipe::gpipe;
pub use interleaved::interleaved;
pub use interleaved_zb::interleaved_zb;
pub use looped_bfs::looped_bfs;
pub use one_f_one_b::one_f_one_b;
pub use v_memory::{v_half, v_min};
pub use zb_v::zb_v;
pub use zero_bubble::{zb_h1, zb_h2};

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::action::{Action, MAX_MICROBATCHES, MAX_STAGES};
use crate::error::{Error, Result};
use crate::schedule::{Placement, Schedule};

/// The schedules pipesched can generate, by their CLI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `gpipe`: all forwards, then all backwards.
    #[serde(rename = "gpipe")]
    GPipe,
    /// `1f1b`: PipeDream-Flush.
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// `interleaved`: Megatron's interleaved 1F1B with v chunks per rank.
    #[serde(rename = "interleaved")]
    Interleaved,
    /// `zb-h1`: zero bubble, 1F1B's memory.
    #[serde(rename = "zb-h1")]
    ZbH1,
    /// `zb-h2`: zero bubble, up to 2p−1 micro-batches in flight.
    #[serde(rename = "zb-h2")]
    ZbH2,
    /// `zb-v`: zero bubble with two chunks per rank placed as a V, 1F1B's memory.
    #[serde(rename = "zb-v")]
    ZbV,
    /// `looped-bfs`: v chunks per rank, each chunk's forwards for all micro-batches in a row.
    #[serde(rename = "looped-bfs")]
    LoopedBfs,
    /// `interleaved-zb`: PyTorch's interleaved zero bubble, v chunks per rank with the backward
    /// split and `W` filling the bubbles.
    #[serde(rename = "interleaved-zb")]
    InterleavedZb,
    /// `v-half`: V placement, split backward, about half of 1F1B's activation memory.
    #[serde(rename = "v-half")]
    VHalf,
    /// `v-min`: V placement, split backward, about a third of 1F1B's activation memory.
    #[serde(rename = "v-min")]
    VMin,
    /// `dualpipev`: DeepSeek's DualPipeV, V placement, its overlapped forward-backward pairs run
    /// back to back; needs m ≥ 2p.
    #[serde(rename = "dualpipev")]
    DualPipeV,
    /// `auto`: built for a cost model and a memory limit ([`auto`]), one chunk per rank, split
    /// backward; not in [`Kind::ALL`], since (p, v, m) alone do not make it.
    #[serde(rename = "auto")]
    Auto,
    /// `forward`: forward only (inference and evaluation), every rank running micro-batches
    /// `0…m−1` in order; not in [`Kind::ALL`], whose kinds train.
    #[serde(rename = "forward")]
    Forward,
}

impl Kind {
    /// Every training kind that (p, v, m) alone make, in the order tables list them: all but
    /// [`Kind::Auto`] and the forward-only [`Kind::Forward`].
    pub const ALL: [Kind; 11] = [
        Kind::GPipe,
        Kind::OneFOneB,
        Kind::Interleaved,
        Kind::ZbH1,
        Kind::ZbH2,
        Kind::ZbV,
        Kind::LoopedBfs,
        Kind::InterleavedZb,
        Kind::VHalf,
        Kind::VMin,
        Kind::DualPipeV,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::GPipe => "gpipe",
            Kind::OneFOneB => "1f1b",
            Kind::Interleaved => "interleaved",
            Kind::ZbH1 => "zb-h1",
            Kind::ZbH2 => "zb-h2",
            Kind::ZbV => "zb-v",
            Kind::LoopedBfs => "looped-bfs",
            Kind::InterleavedZb => "interleaved-zb",
            Kind::VHalf => "v-half",
            Kind::VMin => "v-min",
            Kind::DualPipeV => "dualpipev",
            Kind::Auto => "auto",
            Kind::Forward => "forward",
        }
    }

    /// The chunk count used when none is given: 2 for the interleaved ones, looped BFS and the
    /// V-placed ones, 1 otherwise.
    pub fn default_chunks(self) -> usize {
        match self {
            Kind::Interleaved
            | Kind::ZbV
            | Kind::LoopedBfs
            | Kind::InterleavedZb
            | Kind::VHalf
            | Kind::VMin
            | Kind::DualPipeV => 2,
            Kind::GPipe | Kind::OneFOneB | Kind::ZbH1 | Kind::ZbH2 | Kind::Auto | Kind::Forward => 1,
        }
    }

    /// Where this kind of schedule places its stages: a V for ZB-V, V-Half, V-Min and DualPipeV, a loop
    /// otherwise.
    pub fn placement(self) -> Placement {
        match self {
            Kind::ZbV | Kind::VHalf | Kind::VMin | Kind::DualPipeV => Placement::V,
            Kind::GPipe
            | Kind::OneFOneB
            | Kind::Interleaved
            | Kind::ZbH1
            | Kind::ZbH2
            | Kind::LoopedBfs
            | Kind::InterleavedZb
            | Kind::Auto
            | Kind::Forward => Placement::Loop,
        }
    }

    /// Actions per (stage, micro-batch) before recompute is planned: `F` and `B`, or `F`, `I`
    /// and `W` for the schedules that split the backward; `F` alone for the forward-only one.
    pub fn actions_per_microbatch(self) -> usize {
        match self {
            Kind::ZbH1
            | Kind::ZbH2
            | Kind::ZbV
            | Kind::InterleavedZb
            | Kind::VHalf
            | Kind::VMin
            | Kind::DualPipeV
            | Kind::Auto => 3,
            Kind::GPipe | Kind::OneFOneB | Kind::Interleaved | Kind::LoopedBfs => 2,
            Kind::Forward => 1,
        }
    }

    /// Whether the number of chunks per rank is the user's choice (`-v`); otherwise it is
    /// [`default_chunks`](Kind::default_chunks).
    pub fn takes_chunks(self) -> bool {
        matches!(self, Kind::Interleaved | Kind::LoopedBfs | Kind::InterleavedZb)
    }

    /// Every kind a name parses to: [`Kind::ALL`], [`Kind::Auto`] and [`Kind::Forward`].
    pub fn named() -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().chain([Kind::Auto, Kind::Forward])
    }

    /// Whether this kind runs forwards only (inference and evaluation): no backward, no update.
    pub fn is_forward_only(self) -> bool {
        self == Kind::Forward
    }

    /// The names [`Kind::named`] parses, comma-separated.
    pub fn names() -> String {
        Kind::named().map(Kind::name).collect::<Vec<_>>().join(", ")
    }

    /// Whether generating this kind needs a cost model and a memory limit ([`auto`]).
    pub fn needs_costs(self) -> bool {
        self == Kind::Auto
    }

    /// Generates this kind of schedule. `v` must be the default unless the kind takes chunks.
    /// `auto` is refused: it needs a cost model and a memory limit ([`auto`]).
    pub fn generate(self, p: usize, v: usize, m: usize) -> Result<Schedule> {
        if !self.takes_chunks() && v != self.default_chunks() {
            let takers: Vec<&str> = Kind::ALL.into_iter().filter(|k| k.takes_chunks()).map(Kind::name).collect();
            return Err(Error::BadArgs {
                schedule: self.name().into(),
                reason: format!(
                    "this schedule places {} stage(s) per rank, so it takes no chunks (got v={v}); the schedules that take --chunks: {}",
                    self.default_chunks(),
                    takers.join(", ")
                ),
            });
        }
        match self {
            Kind::GPipe => gpipe(p, m),
            Kind::OneFOneB => one_f_one_b(p, m),
            Kind::Interleaved => interleaved(p, v, m),
            Kind::ZbH1 => zb_h1(p, m),
            Kind::ZbH2 => zb_h2(p, m),
            Kind::ZbV => zb_v(p, m),
            Kind::LoopedBfs => looped_bfs(p, v, m),
            Kind::InterleavedZb => interleaved_zb(p, v, m),
            Kind::VHalf => v_half(p, m),
            Kind::VMin => v_min(p, m),
            Kind::DualPipeV => dualpipe_v(p, m),
            Kind::Forward => forward_only(p, m),
            Kind::Auto => Err(Error::BadArgs {
                schedule: "auto".into(),
                reason: "auto is built for a cost model and a memory limit; give both (on the command line --memory-limit BYTES with the costs)".into(),
            }),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Kind> {
        let key = s.trim().to_ascii_lowercase();
        Kind::named().find(|k| k.name() == key || (key == "pipedream-flush" && *k == Kind::OneFOneB)).ok_or_else(|| {
            Error::BadArgs {
                schedule: s.to_string(),
                reason: format!("unknown schedule name; choose one of {}", Kind::names()),
            }
        })
    }
}

/// Rejects p = 0 or m = 0, and sizes past the action format's limits (`p·v` stages), with a
/// message naming the generator.
fn check_pm(name: &str, p: usize, v: usize, m: usize) -> Result<()> {
    let bad = |reason: String| Err(Error::BadArgs { schedule: name.into(), reason });
    if p == 0 || m == 0 {
        return bad(format!("p (ranks) and m (micro-batches) must be at least 1; got p={p}, m={m}"));
    }
    if p.checked_mul(v).is_none_or(|s| s > MAX_STAGES) {
        return bad(format!("p·v = {p}·{v} model stages is more than pipesched's limit of {MAX_STAGES}"));
    }
    if m > MAX_MICROBATCHES {
        return bad(format!("m={m} micro-batches is more than pipesched's limit of {MAX_MICROBATCHES}"));
    }
    Ok(())
}

/// Assembles a loop-placed schedule.
fn finish(name: &str, p: usize, v: usize, m: usize, lanes: Vec<Vec<Action>>) -> Result<Schedule> {
    finish_placed(name, p, v, m, Placement::Loop, lanes)
}

/// Assembles a schedule whose stages sit as `placement` says.
fn finish_placed(
    name: &str,
    p: usize,
    v: usize,
    m: usize,
    placement: Placement,
    lanes: Vec<Vec<Action>>,
) -> Result<Schedule> {
    Ok(Schedule::new(name, p, v, m, placement, lanes))
}

/// Extracts the first ```text picture from a generator's source, for the doc-picture tests.
#[cfg(test)]
pub(crate) fn doc_picture(source: &str, nth: usize) -> String {
    let start = source.match_indices("/// ```text\n").nth(nth).expect("doc picture").0 + "/// ```text\n".len();
    let end = start + source[start..].find("/// ```\n").expect("end of picture");
    source[start..end]
        .lines()
        .map(|l| format!("{}\n", l.trim_start_matches("///").strip_prefix(' ').unwrap_or("")))
        .collect()
}
