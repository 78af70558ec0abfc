//! The one error type of `pipesched-schedules`.
//!
//! Every message says what was wrong, where, and what to do about it; variants that point at a
//! place in a schedule carry the schedule grid with that place marked.

use thiserror::Error;

/// Errors of the schedules crate.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// An action string (`2F0`, `1I3`, ...) could not be parsed.
    #[error("invalid action string {text:?}: {reason}. An action is written [stage][op][micro-batch], e.g. `2F0`, `1I3`, `0W5`, `3B1`, `1R2`")]
    ParseAction {
        /// The text that failed to parse.
        text: String,
        /// Why it failed.
        reason: String,
    },

    /// Generator arguments that no schedule exists for (p = 0, m < 2p for ZB-H2, ...).
    #[error("{schedule}: {reason}")]
    BadArgs {
        /// The generator that refused.
        schedule: String,
        /// What was wrong and what would work instead.
        reason: String,
    },

    /// A schedule broke one of the rules `validate` checks. `grid` shows the schedule with the
    /// offending step marked.
    #[error("invalid schedule: {reason}\n{grid}")]
    Invalid {
        /// What is wrong, naming rank, step and action.
        reason: String,
        /// The schedule grid with the step marked.
        grid: String,
    },

    /// A schedule cannot finish: every rank that still has work waits for an action that never
    /// comes. `grid` marks where each rank is stuck.
    #[error("deadlock: {reason}\n{grid}")]
    Deadlock {
        /// One line per stuck rank: the action it is on and what it waits for.
        reason: String,
        /// The schedule grid with each rank's current step marked.
        grid: String,
    },

    /// A CSV schedule could not be read.
    #[error("CSV schedule, line {line}, cell {cell}: {reason}")]
    Csv {
        /// 1-based line (= rank + 1).
        line: usize,
        /// 1-based cell within the line.
        cell: usize,
        /// What was wrong.
        reason: String,
    },

    /// A cost model that does not fit the schedule, or has an invalid value.
    #[error("cost model: {0}")]
    Cost(String),
}

/// `Result` with this crate's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;
