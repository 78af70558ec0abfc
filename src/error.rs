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

    /// A chart could not be drawn.
    #[error("chart {path}: {reason}")]
    Plot {
        /// The chart file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A command-line value that makes no sense (the message says which flag and what works).
    #[error("{0}")]
    Usage(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
