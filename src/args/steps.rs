//! How many steps to run, how long a wait may last and how ranks reach each other: `--steps`,
//! `--warmup`, `--timeout`, `--transport`, with the same defaults in `pipesched run` and
//! `pipesched-bench`.
//!
//! Invariant: at least one measured step, and a timeout > 0.

use std::time::Duration;

use clap::Args;

use super::TransportArgs;
use super::{at_least_one, seconds};
use crate::exec::ExecOptions;
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
    /// How the ranks reach each other.
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl StepArgs {
    /// Warm-up and measured steps together.
    pub fn total(&self) -> usize {
        self.warmup.saturating_add(self.steps)
    }

    /// The executor's options; with `--transport mpi`, after starting MPI (once per process:
    /// call this once).
    pub fn exec_options(&self) -> Result<ExecOptions> {
        Ok(ExecOptions { timeout: self.timeout, transport: self.transport.start()?, updates: None })
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
