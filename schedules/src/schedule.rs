//! `Schedule`: one ordered lane of actions per rank, plus where the model stages sit.
//!
//! A `Schedule` is plain data. Generators return schedules that pass
//! [`validate`](crate::validate) by construction (their tests check it) and the CSV reader only
//! schedules that passed it; a hand-built one can be anything until it is validated (the
//! executor's hang diagnostics need to run schedules that deadlock). `simulate` validates what
//! it is given as it runs. Lanes are shared
//! (`Arc<Vec<Action>>`): a trace of the schedule holds the same lanes, not a copy.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::action::Action;

/// How model stages are assigned to ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Stage `s` on rank `s mod p` (GPipe, 1F1B, interleaved 1F1B).
    Loop,
    /// Two chunks per rank: rank `r` holds stages `r` and `2p−1−r` (ZB-V, DualPipeV).
    V,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Placement::Loop => "loop",
            Placement::V => "V",
        })
    }
}

impl Placement {
    /// This placement as it is named among `p` ranks: on one rank a V and a loop place every
    /// stage alike, and that is called a loop (what a CSV file of it reads back as).
    pub fn among(self, p: usize) -> Placement {
        if p == 1 {
            Placement::Loop
        } else {
            self
        }
    }

    /// Which of its rank's chunks `stage` is (0 for the rank's first stage), among `p` ranks.
    pub fn chunk_of(self, stage: usize, p: usize) -> usize {
        match self {
            Placement::Loop => stage / p,
            Placement::V => usize::from(stage >= p),
        }
    }

    /// The rank that holds `stage` among `p` ranks.
    pub fn rank_of(self, stage: usize, p: usize) -> usize {
        match self {
            Placement::Loop => stage % p,
            Placement::V => {
                if stage < p {
                    stage
                } else {
                    2 * p - 1 - stage
                }
            }
        }
    }
}

/// A pipeline schedule: for each rank, the order in which it runs its actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Short name of what produced it (`1f1b`, `zb-h1`, `csv`, ...).
    pub name: String,
    /// Number of ranks (devices).
    pub p: usize,
    /// Model chunks per rank; the model has `S = p·v` stages.
    pub v: usize,
    /// Number of micro-batches.
    pub m: usize,
    /// Where stages sit.
    pub placement: Placement,
    /// One lane per rank, in execution order.
    pub lanes: Vec<Arc<Vec<Action>>>,
}

impl Schedule {
    /// A schedule of these lanes, not yet validated (`placement` named as
    /// [`Placement::among`] says).
    pub fn new(name: &str, p: usize, v: usize, m: usize, placement: Placement, lanes: Vec<Vec<Action>>) -> Schedule {
        let placement = placement.among(p);
        Schedule { name: name.into(), p, v, m, placement, lanes: lanes.into_iter().map(Arc::new).collect() }
    }

    /// Number of model stages, `p·v`.
    pub fn stages(&self) -> usize {
        self.p * self.v
    }

    /// The rank holding `stage`.
    pub fn rank_of(&self, stage: usize) -> usize {
        self.placement.rank_of(stage, self.p)
    }

    /// The stages held by `rank`, in increasing order.
    pub fn stages_of(&self, rank: usize) -> Vec<usize> {
        (0..self.stages()).filter(|&s| self.rank_of(s) == rank).collect()
    }

    /// Every action, lane after lane.
    pub fn actions(&self) -> impl Iterator<Item = &Action> + '_ {
        self.lanes.iter().flat_map(|l| l.iter())
    }

    /// Total number of actions over all lanes.
    pub fn num_actions(&self) -> usize {
        self.lanes.iter().map(|l| l.len()).sum()
    }

    /// For every stage, whether its backward is split into `I` and `W` (rather than one `B`).
    pub fn split_stages(&self) -> Vec<bool> {
        crate::deps::split_stages(self)
    }

    /// Whether the schedule runs forwards only (inference and evaluation): it has actions, and
    /// every one is an `F`. Such a schedule keeps nothing for a backward
    /// ([`validate`](crate::validate)'s rule 3 and the [`Ledger`](crate::Ledger)'s rule 1).
    pub fn is_forward_only(&self) -> bool {
        self.num_actions() > 0 && self.actions().all(|a| a.op == crate::Op::F)
    }

    /// Whether any lane splits the backward into `I` and `W`.
    pub fn splits_backward(&self) -> bool {
        self.actions().any(|a| a.op == crate::Op::I)
    }
}
