//! How many steps to run and how long a wait may last: `--steps`, `--warmup`, `--timeout`, with
//! the same defaults in `pipesched run` and `pipesched-bench`.
//!
//! Invariant: at least one measured step, and a timeout > 0.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{at_least_one, seconds};
use crate::exec::{ExecOptions, Transport};
use crate::Result;

/// `--timeout`'s default as written on the command line: the executor's own default
/// ([`DEFAULT_TIMEOUT`](crate::exec::DEFAULT_TIMEOUT); a test keeps the two equal).
const TIMEOUT: &str = "60";

/// Steps and the hang timeout.
#[derive(Debug, Clone, Args)]
pub struct StepArgs {
    /// Measured steps.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub steps: usize,
    /// Steps run before them, left out of the timings (they train too).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// How long any wait for an input may last before the step fails as a hang, with where every
    /// rank is: seconds, or a time with a unit (500ms).
    #[arg(long, default_value = TIMEOUT, value_parser = seconds, value_name = "SECS")]
    pub timeout: Duration,
    /// How the ranks reach each other: `threads` (one process, a thread per rank) or `mpi`
    /// (one process per rank: `mpirun -n P …`; needs a build with the `mpi` feature).
    #[arg(long, value_enum, default_value_t = TransportKind::Threads)]
    pub transport: TransportKind,
}

/// `--transport`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// Every rank a thread of this process.
    Threads,
    /// Every rank an MPI process.
    Mpi,
}

impl StepArgs {
    /// Warm-up and measured steps together.
    pub fn total(&self) -> usize {
        self.warmup.saturating_add(self.steps)
    }

    /// The executor's options; with `--transport mpi`, after starting MPI (once per process:
    /// call this once).
    pub fn exec_options(&self) -> Result<ExecOptions> {
        Ok(ExecOptions { timeout: self.timeout, transport: self.start_transport()? })
    }

    #[cfg(feature = "mpi")]
    fn start_transport(&self) -> Result<Transport> {
        match self.transport {
            TransportKind::Threads => Ok(Transport::InProcess),
            TransportKind::Mpi => Ok(Transport::Mpi(crate::mpi::Mpi::start()?)),
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn start_transport(&self) -> Result<Transport> {
        match self.transport {
            TransportKind::Threads => Ok(Transport::InProcess),
            TransportKind::Mpi => Err(crate::Error::Usage(
                "--transport mpi needs a build with MPI: `cargo build --release --features mpi` (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev)".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_default_is_the_executors() {
        assert_eq!(seconds(TIMEOUT), Ok(crate::exec::DEFAULT_TIMEOUT));
    }
}
