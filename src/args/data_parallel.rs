//! `--dp D` and `--zero STAGE`: data parallelism over pipeline replicas, for the commands that
//! run it (`run`, `profile` and the benchmark, through [`TransportArgs`](super::TransportArgs))
//! and for `simulate`, which shows each stage's gradient sum over the replicas.

use clap::Args;
use pipesched_schedules::DataParallel;

use super::at_least_one;
use crate::{Error, Result};

/// The data-parallel flags.
#[derive(Debug, Clone, Copy, Args)]
pub struct DataParallelArgs {
    /// Data parallelism: D pipeline replicas side by side, each taking its own m micro-batches
    /// of a global batch of D·m, their gradients summed across replicas before every optimizer
    /// step (`--transport mpi` on p·D processes; `simulate` shows each stage's sum).
    #[arg(long, default_value_t = 1, value_parser = at_least_one, value_name = "D")]
    pub dp: usize,
    /// ZeRO stage: 0 (every replica keeps all optimizer state) or 1 (each keeps and updates only
    /// its 1/D slice of every stage's parameters: the summed gradients are scattered, each
    /// replica steps its slice, and the updated slices are gathered). Needs --dp D ≥ 2.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1), value_name = "STAGE")]
    pub zero: u8,
}

impl Default for DataParallelArgs {
    fn default() -> Self {
        DataParallelArgs { dp: 1, zero: 0 }
    }
}

impl DataParallelArgs {
    /// The data parallelism asked for (ZeRO shards over replicas, so it needs some:
    /// [`DataParallel::new`] says so).
    pub fn data_parallel(&self) -> Result<DataParallel> {
        DataParallel::new(self.dp, self.zero == 1).map_err(|e| Error::Usage(e.to_string()))
    }

    /// Whether replicas are asked for (or ZeRO, which needs them).
    pub fn given(&self) -> bool {
        self.dp > 1 || self.zero > 0
    }
}
