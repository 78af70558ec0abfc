//! The one error type of the `pipesched` crate (executor, plots, exports, CLI).
//!
//! Every message says what was wrong, where, and what to do. None of these is recovered from
//! inside pipesched: each ends the command that hit it with a non-zero exit status.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of the `pipesched` crate.
#[derive(Debug, Error)]
pub enum Error {
    /// A schedule, cost model or trace problem from `pipesched-schedules`.
    #[error(transparent)]
    Schedule(#[from] pipesched_schedules::Error),

    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("cannot read", "cannot write", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A chart could not be drawn or written, from `pipesched-charts`.
    #[error(transparent)]
    Chart(#[from] pipesched_charts::Error),

    /// A stage op failed, or a worker found its inputs missing or malformed. Fatal to the step.
    #[error("rank {rank}, step {step} ({action}): {message}")]
    Stage {
        /// The rank whose worker failed.
        rank: usize,
        /// Index of the action in that rank's lane.
        step: usize,
        /// The action.
        action: String,
        /// What went wrong.
        message: String,
    },

    /// A wait for an input outlasted the timeout: the pipeline hangs. `report` shows every
    /// rank's position and what it waits for, on the schedule grid. Fatal to the step.
    #[error("pipeline hang: rank {rank} waited {timeout:?} for an input. Where every rank is:\n{report}")]
    Hang {
        /// The rank whose wait timed out first.
        rank: usize,
        /// The timeout that expired.
        timeout: std::time::Duration,
        /// Per-rank positions and the grid.
        report: String,
    },

    /// A worker thread panicked (a bug in a stage); the step stops.
    #[error("rank {rank}: the worker panicked: {message}")]
    WorkerPanic {
        /// The rank.
        rank: usize,
        /// The panic message.
        message: String,
    },

    /// This worker stopped because another one failed first; never returned by `execute`,
    /// which returns the first failure instead.
    #[error("stopped because another rank failed")]
    Aborted,

    /// A command-line value that makes no sense (the message says which flag and what works).
    #[error("{0}")]
    Usage(String),
}

/// `Result` with this crate's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;
