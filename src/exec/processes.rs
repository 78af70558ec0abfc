//! One step with every rank its own MPI process: this process runs its own rank's lane over
//! links that reach the others through the communication thread (`crate::mpi`), then every
//! rank's record is gathered to every process and assembled into the same [`Trace`] an
//! in-process run gives.
//!
//! Times: each process records in milliseconds since its own start of the step and sends that
//! start as rank 0's wall-clock time, as it reads it ([`Mpi::root_clock_ms`]: its own clock
//! plus the offset to rank 0's measured when MPI started, to within half the shortest of 16
//! round trips); records are moved onto the earliest start before they are assembled.

use std::sync::atomic::Ordering;

use pipesched_schedules::{Schedule, Trace};
use serde::{Deserialize, Serialize};

use super::{assemble, execute_rank, ExecOptions, Links, RankRecord, StageWork};
use crate::error::{Error, Result};
use crate::mpi::Mpi;

/// What a rank sends when its step is done.
#[derive(Serialize, Deserialize)]
struct Shipped {
    /// When its step started: milliseconds since the Unix epoch on rank 0's clock.
    origin: f64,
    /// What it recorded, in milliseconds since then.
    record: RankRecord,
}

/// Runs this process's rank of one step of `schedule` on `stages` (that rank's, in model order)
/// and returns the step's whole trace.
pub(super) fn execute<S: StageWork>(
    schedule: &Schedule,
    stages: &mut [S],
    opts: &ExecOptions,
    mpi: &Mpi,
) -> Result<Trace> {
    opts.transport.check_size(schedule.p)?;
    let rank = mpi.rank();
    let links: Links<S::Payload> =
        Links::remote(schedule.stages(), rank, |s| schedule.rank_of(s), mpi.outbox(), |edge| mpi.inbox(edge));
    let held = schedule.stages_of(rank);
    if stages.len() != held.len() {
        return Err(Error::Usage(format!(
            "rank {rank} holds stages {held:?} of this schedule but was given {} stages; give each process its own rank's stages",
            stages.len()
        )));
    }
    let mine: Vec<(usize, &mut S)> = held.into_iter().zip(stages.iter_mut()).collect();
    // Read just before the rank's own clock starts: the two name the same instant to within
    // microseconds.
    let origin = mpi.root_clock_ms();
    let record = match execute_rank(schedule, rank, mine, &links, mpi.aborted(), opts) {
        Ok(record) => record,
        Err(Error::Aborted) => {
            return Err(Error::Remote(mpi.failure().unwrap_or_else(|| "another rank failed".into())))
        }
        Err(e) => {
            mpi.abort(&e.to_string());
            return Err(e);
        }
    };
    let bytes = serde_json::to_vec(&Shipped { origin, record })
        .map_err(|e| Error::Config(format!("rank {rank}: cannot encode its record: {e}")))?;
    let gathered = mpi.all_gather(bytes)?;
    if mpi.aborted().load(Ordering::Relaxed) {
        return Err(Error::Remote(mpi.failure().unwrap_or_else(|| "another rank failed".into())));
    }
    let shipped: Vec<Shipped> = gathered
        .iter()
        .enumerate()
        .map(|(r, b)| {
            serde_json::from_slice(b).map_err(|e| Error::Config(format!("rank {r}'s record cannot be read: {e}")))
        })
        .collect::<Result<_>>()?;
    let first = shipped.iter().map(|s| s.origin).fold(f64::INFINITY, f64::min);
    let records = shipped
        .into_iter()
        .map(|Shipped { origin, mut record }| {
            record.shift(origin - first);
            record
        })
        .collect();
    Ok(assemble(schedule, records))
}
