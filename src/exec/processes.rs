//! One step with every rank its own MPI process: this process runs its own rank's lane over
//! links that reach the others through the communication thread (`crate::mpi`), then every
//! rank's record is gathered to every process and assembled into the same [`Trace`] an
//! in-process run gives.
//!
//! Times: each process records in milliseconds since its own start of the step and sends that
//! start as wall-clock time (`SystemTime`); records are moved onto the earliest start before
//! they are assembled. On one machine the processes share that clock; across machines the
//! alignment is as good as the machines' clock synchronisation.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use pipesched_schedules::{Schedule, Trace};
use serde::{Deserialize, Serialize};

use super::{assemble, execute_rank, ExecOptions, Links, RankRecord, StageWork};
use crate::error::{Error, Result};
use crate::mpi::Mpi;

/// What a rank sends when its step is done.
#[derive(Serialize, Deserialize)]
struct Shipped {
    /// When its step started: milliseconds since the Unix epoch.
    origin: f64,
    /// What it recorded, in milliseconds since then.
    record: RankRecord,
}

/// Runs this process's rank of one step of `schedule` and returns the step's whole trace.
pub(super) fn execute<S: StageWork>(
    schedule: &Schedule,
    stages: &mut [S],
    opts: &ExecOptions,
    mpi: &Mpi,
) -> Result<Trace> {
    if mpi.size() != schedule.p {
        return Err(Error::Usage(format!(
            "{} MPI processes for a schedule of p={} ranks; launch with `mpirun -n {}`",
            mpi.size(),
            schedule.p,
            schedule.p
        )));
    }
    let rank = mpi.rank();
    let links: Links<S::Payload> =
        Links::remote(schedule.stages(), rank, |s| schedule.rank_of(s), mpi.outbox(), |edge| mpi.inbox(edge));
    let mine: Vec<(usize, &mut S)> =
        stages.iter_mut().enumerate().filter(|(s, _)| schedule.rank_of(*s) == rank).collect();
    // Read just before the rank's own clock starts: the two name the same instant to within
    // microseconds.
    let wall = SystemTime::now();
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
    let origin = wall.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3);
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
