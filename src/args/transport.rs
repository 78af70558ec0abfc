//! `--transport`: how the ranks reach each other — threads of one process, or one MPI process
//! per rank — and starting it.

use clap::{Args, ValueEnum};

use crate::exec::Transport;
use crate::Result;

/// The transport argument.
#[derive(Debug, Clone, Copy, Args)]
pub struct TransportArgs {
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

impl TransportArgs {
    /// Whether ranks are processes.
    pub fn is_processes(&self) -> bool {
        self.transport != TransportKind::Threads
    }

    /// The transport, started: with `mpi`, this starts MPI (once per process: call this once).
    #[cfg(feature = "mpi")]
    pub fn start(&self) -> Result<Transport> {
        match self.transport {
            TransportKind::Threads => Ok(Transport::InProcess),
            TransportKind::Mpi => Ok(Transport::Mpi(crate::mpi::Mpi::start()?)),
        }
    }

    /// The transport, started: `mpi` is an error in a build without MPI.
    #[cfg(not(feature = "mpi"))]
    pub fn start(&self) -> Result<Transport> {
        match self.transport {
            TransportKind::Threads => Ok(Transport::InProcess),
            TransportKind::Mpi => Err(crate::Error::Usage(
                "--transport mpi needs a build with MPI: `cargo build --release --features mpi` (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev)".into(),
            )),
        }
    }
}
