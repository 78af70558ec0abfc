//! How the ranks of a run reach each other — threads of one process, or one MPI process per
//! rank, in one pipeline or in several replicas (data parallelism) — and the collectives the
//! rest of pipesched uses across processes: gathers, a value handed from one rank to all, and
//! the sum of gradients over replicas. In one process, each is the identity.

use super::Wire;
use crate::error::{Error, Result};

/// How the ranks of a run reach each other.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    /// Every rank a thread of this process (crossbeam channels).
    #[default]
    InProcess,
    /// Every rank its own MPI process; this process runs rank [`Mpi::rank`](crate::mpi::Mpi::rank).
    #[cfg(feature = "mpi")]
    Mpi(std::sync::Arc<crate::mpi::Mpi>),
}

impl Transport {
    /// Whether this process reports the run: always in process; rank 0 of the first replica
    /// with MPI processes.
    pub fn is_root(&self) -> bool {
        match self {
            Transport::InProcess => true,
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) => mpi.rank() == 0 && mpi.replica() == 0,
        }
    }

    /// How many pipeline replicas train side by side (data parallelism): 1 in process.
    pub fn replicas(&self) -> usize {
        match self {
            Transport::InProcess => 1,
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) => mpi.replicas(),
        }
    }

    /// Whether the replicas shard their optimizer state (ZeRO stage 1): each keeps and updates
    /// only its slice of every stage's parameters. Never in process.
    pub fn shards_optimizer(&self) -> bool {
        match self {
            Transport::InProcess => false,
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) => mpi.shards_optimizer(),
        }
    }

    /// Which replica this process belongs to: 0 in process.
    pub fn replica(&self) -> usize {
        match self {
            Transport::InProcess => 0,
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) => mpi.replica(),
        }
    }

    /// Whether ranks are processes (MPI).
    pub fn is_processes(&self) -> bool {
        !matches!(self, Transport::InProcess)
    }

    /// Whether this process runs `rank`'s lane: every rank in process, its own as MPI.
    pub fn runs(&self, rank: usize) -> bool {
        match self {
            Transport::InProcess => {
                let _ = rank;
                true
            }
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) => mpi.rank() == rank,
        }
    }

    /// Whether there is one process per rank of a pipeline of `p` ranks (always, in process); an
    /// error saying how to launch otherwise.
    pub fn check_size(&self, p: usize) -> Result<()> {
        match self {
            Transport::InProcess => {
                let _ = p;
                Ok(())
            }
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) if mpi.size() != p => {
                let (world, d) = (mpi.size() * mpi.replicas(), mpi.replicas());
                Err(Error::Usage(if d == 1 {
                    format!("{world} MPI processes for a pipeline of p={p} ranks; launch one process per rank: `mpirun -n {p} …`")
                } else {
                    format!(
                        "{world} MPI processes for {d} pipelines (--dp {d}) of p={p} ranks; launch one process per rank of every pipeline: `mpirun -n {} …`",
                        p * d
                    )
                }))
            }
            #[cfg(feature = "mpi")]
            Transport::Mpi(_) => Ok(()),
        }
    }

    /// The model stages this process holds, of `stages` placed on ranks by `rank_of`: every
    /// one in process; its own rank's with ranks as processes. In model order.
    pub fn held(&self, stages: usize, rank_of: impl Fn(usize) -> usize) -> Vec<usize> {
        (0..stages).filter(|&s| self.runs(rank_of(s))).collect()
    }

    /// Every process's `bytes` of this pipeline, in rank order, on the pipeline's rank 0 (the
    /// root, [`Transport::is_root`], for the first replica); an empty list on the others, once
    /// rank 0 has them all. In process: just `bytes`.
    pub fn gather(&self, bytes: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        match self {
            Transport::InProcess => Ok(vec![bytes]),
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) => mpi.gather(bytes),
        }
    }

    /// `value`, which the process running rank `from` gives (the others give `None`), on every
    /// process: how a pass that walks the stages one after another (a forward-only pass, the
    /// profiler's recording pass) crosses from one process to the next. In process: `value`.
    pub fn share<T: Wire>(&self, from: usize, value: Option<T>) -> Result<Option<T>> {
        if !self.is_processes() {
            return Ok(value);
        }
        let mine = match (&value, self.runs(from)) {
            (_, false) => Vec::new(),
            (None, true) => vec![0],
            (Some(v), true) => {
                let mut out = vec![1];
                v.encode(&mut out)
                    .map_err(|e| Error::Config(format!("rank {from} cannot encode what it shares: {e}")))?;
                out
            }
        };
        let parts = self.all_gather(mine)?;
        let part = parts.get(from).map(Vec::as_slice).unwrap_or_default();
        match part.split_first() {
            Some((0, [])) => Ok(None),
            Some((1, body)) => T::decode(body)
                .map(Some)
                .map_err(|e| Error::Config(format!("what rank {from} shared cannot be read: {e}"))),
            _ => Err(Error::Config(format!("rank {from} shared nothing where it should have ({} bytes)", part.len()))),
        }
    }

    /// Every process's `(model stage, value)` pairs, on every process, as one value per stage
    /// of `stages`, in model order; an error if a stage is missing or given twice.
    pub fn by_stage<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        stages: usize,
        mine: Vec<(usize, T)>,
    ) -> Result<Vec<T>> {
        let parts = if self.is_processes() {
            let bytes = serde_json::to_vec(&mine)
                .map_err(|e| Error::Config(format!("cannot encode this process's values per stage: {e}")))?;
            let mut all = Vec::new();
            for (rank, part) in self.all_gather(bytes)?.into_iter().enumerate() {
                let theirs: Vec<(usize, T)> = serde_json::from_slice(&part)
                    .map_err(|e| Error::Config(format!("rank {rank}'s values per stage cannot be read: {e}")))?;
                all.extend(theirs);
            }
            all
        } else {
            mine
        };
        let mut out: Vec<Option<T>> = (0..stages).map(|_| None).collect();
        for (s, value) in parts {
            match out.get_mut(s) {
                Some(slot @ None) => *slot = Some(value),
                _ => return Err(Error::Config(format!("stage {s} was given twice or is out of range 0..{stages}"))),
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(s, v)| v.ok_or_else(|| Error::Config(format!("no process gave a value for stage {s}"))))
            .collect()
    }

    /// `mine` if it and every other process's are `Ok` — so that every process goes on, or none:
    /// with ranks as processes, each tells the others whether it failed (an all-gather in its
    /// pipeline, then one across the replicas). Where another failed, its error, named by its
    /// rank (one that rules out the configuration there rules it out here too). In process:
    /// `mine`.
    pub fn agree<T>(&self, mine: Result<T>) -> Result<T> {
        if !self.is_processes() {
            return mine;
        }
        // A verdict: 0 for success, else 1 (rules out the configuration) or 2, then the message.
        let first_failure = |parts: Vec<Vec<u8>>, what: &str| {
            parts.into_iter().enumerate().find(|(_, p)| p.first().is_some_and(|k| *k != 0)).map(|(r, p)| {
                let mut named = vec![p[0]];
                named.extend(format!("{what} {r}: {}", String::from_utf8_lossy(&p[1..])).into_bytes());
                named
            })
        };
        let verdict = match &mine {
            Ok(_) => vec![0],
            Err(e) => [vec![if e.rules_out_configuration() { 1 } else { 2 }], e.to_string().into_bytes()].concat(),
        };
        let ours = first_failure(self.all_gather(verdict)?, "rank").unwrap_or_else(|| vec![0]);
        let anywhere = if self.replicas() > 1 {
            first_failure(self.all_gather_replicas(ours)?, "replica").unwrap_or_else(|| vec![0])
        } else {
            ours
        };
        let value = mine?;
        match anywhere.split_first() {
            Some((&1, text)) => Err(Error::Config(String::from_utf8_lossy(text).into_owned())),
            Some((&2, text)) => Err(Error::Remote(String::from_utf8_lossy(text).into_owned())),
            _ => Ok(value),
        }
    }

    /// Ends a command that ran over this transport: with ranks as processes, a process that
    /// succeeded waits for the others, and one that failed reports its error first (the first
    /// exit ends the job), then tells the others (they stop and name its rank), waits, and exits
    /// non-zero. In process, `result` is returned as it is.
    pub fn conclude(&self, result: Result<()>) -> Result<()> {
        match (&result, self.is_processes()) {
            (Ok(()), _) => self.finish(),
            (Err(e), true) => {
                crate::output::report_error(e);
                self.abort(e);
                std::process::exit(1);
            }
            (Err(_), false) => {}
        }
        result
    }

    /// Every replica's `bytes`, in replica order, on every process of this pipeline rank (in
    /// process: just `bytes`).
    pub fn all_gather_replicas(&self, bytes: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        match self {
            Transport::InProcess => Ok(vec![bytes]),
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) => mpi.all_gather_replicas(bytes),
        }
    }

    /// Starts summing `values` over the replicas, under `key` (the same on every replica, unique
    /// among the sums under way): the sum, added in replica order, comes from
    /// [`PendingSum::wait`] — with `scatter`, only this replica's slice of it ([`slice_of`]:
    /// a reduce-scatter). With one replica, the sum is `values`.
    pub fn start_sum(&self, key: u32, values: Vec<f32>, scatter: bool) -> Result<PendingSum> {
        match self {
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) if mpi.replicas() > 1 => {
                Ok(PendingSum(Pending::Waiting(mpi.start_sum(key, values, scatter)?, std::sync::Arc::clone(mpi))))
            }
            _ => {
                let _ = (key, scatter);
                Ok(PendingSum(Pending::Done(values, std::time::Instant::now())))
            }
        }
    }

    /// The network between this pipeline's ranks, measured ([`crate::network`]) — or, for a
    /// pipeline of one rank with replicas, between the replicas; `None` in process, where ranks
    /// hand messages over in memory. Every process must call it.
    pub fn measure_network(&self) -> Result<Option<crate::network::Network>> {
        match self {
            Transport::InProcess => Ok(None),
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) => {
                use crate::network::{Network, RoundTrips, REPS, SIZES};
                let mine = mpi.time_link(&SIZES, REPS)?;
                let bytes = serde_json::to_vec(&mine)
                    .map_err(|e| Error::Config(format!("cannot encode this rank's link times: {e}")))?;
                // A pipeline of one rank timed its replicas' links (see `Mpi::time_link`).
                let parts =
                    if mpi.times_replica_links() { mpi.all_gather_replicas(bytes)? } else { self.all_gather(bytes)? };
                let mut links = Vec::new();
                for (rank, part) in parts.into_iter().enumerate() {
                    let trips: RoundTrips = serde_json::from_slice(&part)
                        .map_err(|e| Error::Config(format!("rank {rank}'s link times cannot be read: {e}")))?;
                    if !trips.is_empty() {
                        links.push(trips);
                    }
                }
                Ok(Network::of(&SIZES, &links))
            }
        }
    }

    /// Every process's `bytes`, in rank order (in process: just `bytes`); see
    /// `Mpi::all_gather` for how long it waits.
    pub fn all_gather(&self, bytes: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        match self {
            Transport::InProcess => Ok(vec![bytes]),
            #[cfg(feature = "mpi")]
            Transport::Mpi(mpi) => mpi.all_gather(bytes),
        }
    }

    /// With ranks as processes, after this process has reported `e`: tells the others (unless
    /// `e` is another process's failure) and waits for them to report theirs
    /// (`Mpi::abort`). Nothing in process. Whether it did anything.
    pub fn abort(&self, e: &Error) -> bool {
        #[cfg(feature = "mpi")]
        if let Transport::Mpi(mpi) = self {
            match e {
                Error::Remote(_) => crate::mpi::Mpi::linger(),
                _ => mpi.abort(&e.to_string()),
            }
            return true;
        }
        let _ = e;
        false
    }

    /// Ends the run for this process: MPI processes wait for each other, then finalise MPI.
    pub fn finish(&self) {
        #[cfg(feature = "mpi")]
        if let Transport::Mpi(mpi) = self {
            mpi.finish();
        }
    }
}

/// Adds `part` to `total`, element by element (`total + part`, in that order): how the
/// replicas' gradients are summed, one replica after another in replica order — by each slice's
/// owner on its communication thread and by the sequential reference alike — so the same bits on
/// every run.
pub fn add_replica(total: &mut [f32], part: &[f32]) {
    for (t, p) in total.iter_mut().zip(part) {
        *t += p;
    }
}

/// Replica `replica`'s slice of `len` values split among `replicas`: contiguous, in replica
/// order, the first `len mod replicas` one value longer than the rest.
pub fn slice_of(len: usize, replicas: usize, replica: usize) -> std::ops::Range<usize> {
    let (base, extra) = (len / replicas.max(1), len % replicas.max(1));
    let start = replica * base + replica.min(extra);
    start..start + base + usize::from(replica < extra)
}

/// A sum over replicas under way ([`Transport::start_sum`]).
pub struct PendingSum(Pending);

enum Pending {
    Done(Vec<f32>, std::time::Instant),
    #[cfg(feature = "mpi")]
    Waiting(crossbeam_channel::Receiver<crate::mpi::SumAnswer>, std::sync::Arc<crate::mpi::Mpi>),
}

impl PendingSum {
    /// The sum, once every replica has given its part, and when this process had it (the
    /// communication thread's clock, which may be earlier than the call); an error if another
    /// process failed first (its report) or the parts do not match.
    pub fn wait(self) -> Result<(Vec<f32>, std::time::Instant)> {
        match self.0 {
            Pending::Done(values, at) => Ok((values, at)),
            #[cfg(feature = "mpi")]
            Pending::Waiting(answer, mpi) => loop {
                match answer.recv_timeout(std::time::Duration::from_millis(20)) {
                    Ok(Ok((values, at))) => return Ok((values, at)),
                    Ok(Err(e)) => return Err(Error::Config(format!("summing gradients over replicas: {e}"))),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        return Err(Error::Config("the MPI communication thread stopped mid-sum".into()))
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if mpi.is_aborted() => {
                        return Err(Error::Remote(mpi.failure().unwrap_or_else(|| "another rank failed".into())))
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                }
            },
        }
    }
}
