//! `--transport`: how the ranks reach each other — threads of one process, or one MPI process
//! per rank — and starting it.

use clap::{Args, ValueEnum};

use super::at_least_one;
use crate::exec::Transport;
use crate::Result;

/// The transport argument.
#[derive(Debug, Clone, Copy, Args)]
pub struct TransportArgs {
    /// How the ranks reach each other: `threads` (one process, a thread per rank) or `mpi`
    /// (one process per rank: `mpirun -n P …`; needs a build with the `mpi` feature).
    #[arg(long, value_enum, default_value_t = TransportKind::Threads)]
    pub transport: TransportKind,
    /// Data parallelism: D pipeline replicas side by side, each taking its own m micro-batches
    /// of a global batch of D·m, their gradients summed across replicas before every optimizer
    /// step (`--transport mpi` on p·D processes).
    #[arg(long, default_value_t = 1, value_parser = at_least_one, value_name = "D")]
    pub dp: usize,
    /// ZeRO stage: 0 (every replica keeps all optimizer state) or 1 (each keeps and updates only
    /// its 1/D slice of every stage's parameters: the summed gradients are scattered, each
    /// replica steps its slice, and the updated slices are gathered). Needs --dp D ≥ 2.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1), value_name = "STAGE")]
    pub zero: u8,
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
                self.check_zero()?;
                Ok(Transport::Mpi(crate::mpi::Mpi::start(self.dp, self.zero == 1)?))
            }
        }
    }

    /// ZeRO shards over replicas: there must be some.
    fn check_zero(&self) -> Result<()> {
        if self.zero > 0 && self.dp < 2 {
            return Err(crate::Error::Usage(format!(
                "--zero {} shards the optimizer state across data-parallel replicas; add --dp D with D ≥ 2",
                self.zero
            )));
        }
        Ok(())
    }

    /// In one process: one pipeline only.
    fn one_pipeline(&self) -> Result<Transport> {
        self.check_zero()?;
        if self.dp > 1 {
            return Err(crate::Error::Usage(format!(
                "--dp {} runs pipeline replicas as MPI processes: add --transport mpi and launch p·{} processes with mpirun",
                self.dp, self.dp
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
