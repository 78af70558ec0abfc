//! The one error type of the `pipesched` crate (executor, plots, exports, CLI).
//!
//! Every message says what was wrong, where, and what to do. None of these is recovered from
//! inside pipesched: each ends the command that hit it with a non-zero exit status.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of the `pipesched` crate.
#[derive(Debug, Error)]
pub enum Error {
    /// A schedule, cost model or trace problem from `pipesched-schedules`: generator arguments
    /// no schedule exists for, an invalid or deadlocking schedule, a bad CSV file, a cost model
    /// that does not fit the schedule.
    #[error(transparent)]
    Schedule(#[from] pipesched_schedules::Error),

    /// A problem from `pipesched-stages`: a model spec that cannot be read or built, a partition
    /// or recompute policy list that does not fit the stages, a device that cannot be used, or a
    /// stage op given the wrong input outside the executor.
    #[error(transparent)]
    Stages(#[from] pipesched_stages::Error),

    /// Model, schedule, layout and costs that are each fine but do not fit together: devices for
    /// another number of ranks, costs profiled for another layout or policy, stages built for
    /// another schedule.
    #[error("{0}")]
    Config(String),

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

    /// Ranks are processes and another one failed first: what it reported.
    #[error("stopped because {0}")]
    Remote(String),

    /// A request whose estimated memory exceeds what this machine can give it, refused before
    /// anything was allocated (the message names the estimate's largest parts and what to do).
    #[error(transparent)]
    TooBig(#[from] crate::budget::TooBig),

    /// A command-line value that makes no sense, or flags that contradict each other (the
    /// message says which flag and what works).
    #[error("{0}")]
    Usage(String),

    /// `pipesched plan` found no plan: a memory cap below the static bytes of every split or
    /// below the least peak any candidate reaches, or a batch that splits into no m ≥ p equal
    /// micro-batches (the message names the least bytes reached, or what would split).
    #[error("{0}")]
    NoPlan(String),
}

impl Error {
    /// Whether this error says that a configuration cannot exist — a schedule that takes no such
    /// p, m or v, a model with fewer layers than stages, policies or devices that do not fit
    /// the stages — rather than that something broke while running one. The benchmark skips
    /// the first kind and fails on the second.
    pub fn rules_out_configuration(&self) -> bool {
        use pipesched_stages::Error as Stages;
        match self {
            // Too big for this machine is a configuration this machine cannot run.
            Error::Config(_) | Error::TooBig(_) | Error::Schedule(pipesched_schedules::Error::BadArgs { .. }) => true,
            Error::Stages(e) => matches!(e, Stages::Partition(_) | Stages::Policy(_)),
            _ => false,
        }
    }
}

/// `Result` with this crate's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;
