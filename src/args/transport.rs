//! `--transport`: how the ranks reach each other — threads of one process, or one MPI process
//! per rank — and starting it.

use clap::{Args, ValueEnum};

use super::DataParallelArgs;
use crate::exec::Transport;
use crate::Result;

/// The transport argument.
#[derive(Debug, Clone, Copy, Args)]
pub struct TransportArgs {
    /// How the ranks reach each other: `threads` (one process, a thread per rank) or `mpi`
    /// (one process per rank: `mpirun -n P …`; needs a build with the `mpi` feature).
    #[arg(long, value_enum, default_value_t = TransportKind::Threads)]
    pub transport: TransportKind,
    /// Data parallelism over pipeline replicas.
    #[command(flatten)]
    pub data: DataParallelArgs,
}

/// `--transport`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// Every rank a thread of this process.
    Threads,
    /// Every rank an MPI process.
    Mpi,
}

impl TransportArgs {
    /// Whether ranks are processes.
    pub fn is_processes(&self) -> bool {
        self.transport != TransportKind::Threads
    }

    /// The transport, started: with `mpi`, this starts MPI (once per process: call this once).
    #[cfg(feature = "mpi")]
    pub fn start(&self) -> Result<Transport> {
        match self.transport {
            TransportKind::Threads => self.one_pipeline(),
            TransportKind::Mpi => {
                let data = self.data.data_parallel()?;
                Ok(Transport::Mpi(crate::mpi::Mpi::start(data.replicas, data.sharded)?))
            }
        }
    }

    /// In one process: one pipeline only.
    fn one_pipeline(&self) -> Result<Transport> {
        let dp = self.data.data_parallel()?.replicas;
        if dp > 1 {
            return Err(crate::Error::Usage(format!(
                "--dp {dp} runs pipeline replicas as MPI processes: add --transport mpi and launch p·{dp} processes with mpirun"
            )));
        }
        Ok(Transport::InProcess)
    }

    /// The transport, started: `mpi` is an error in a build without MPI.
    #[cfg(not(feature = "mpi"))]
    pub fn start(&self) -> Result<Transport> {
        match self.transport {
            TransportKind::Threads => self.one_pipeline(),
            TransportKind::Mpi => Err(crate::Error::Usage(
                "--transport mpi needs a build with MPI: `cargo build --release --features mpi` (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev)".into(),
            )),
        }
    }
}
