//! Ranks as MPI processes (cargo feature `mpi`): `mpirun -n P pipesched run … --transport mpi`.
//!
//! One communication thread per process owns MPI: it initialises it (`MPI_THREAD_FUNNELED`: no
//! other thread calls MPI), sends and receives every message, and finalises MPI when the
//! process is done with it. Compute threads reach it through channels only:
//! - a rank's worker sends each outgoing envelope as a [`Packet`] into [`Mpi::outbox`]; the
//!   thread sends it to its peer (non-blocking, tag [`Tag::Data`]) while it keeps receiving, so
//!   two ranks sending to each other never wait on each other;
//! - every arriving data packet is routed by its header's edge (flow, consuming stage) into that
//!   edge's [`Mpi::inbox`] — a channel that lives as long as the process, so a packet that
//!   arrives before its consumer asks for it waits there;
//! - [`Mpi::all_gather`] (between steps) and [`Mpi::abort`] (a failed rank telling the others)
//!   are requests the thread serves in order, after every packet queued before them has left.
//!
//! Invariant: a step's packets never mix with the next step's. Every rank consumes all of a
//! step's packets before it enters the step's all-gathers (records, losses, and with
//! `--verify` the replicas'), and no rank leaves one before every rank has entered it; packets
//! of the next step that reach a rank still finishing this one wait in their edge's inbox, in
//! order (MPI does not reorder messages between two ranks).

mod comm;

pub(crate) use comm::SumAnswer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::exec::{Edge, Packet};
use crate::{Error, Result};
use comm::Request;

/// What an MPI message is, by its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Tag {
    /// A stage's activation or gradient.
    Data = 1,
    /// One rank's contribution to an all-gather.
    Gather = 2,
    /// An all-gather's result, from rank 0 to the others.
    Release = 3,
    /// Another rank failed: its message.
    Abort = 4,
    /// A clock reading, at start-up.
    Clock = 5,
    /// One replica's slice of its values, to the replica that owns that slice of a sum.
    Sum = 6,
    /// An owner's summed slice, to the other replicas.
    Summed = 7,
    /// A link test's message, to be answered at once.
    Ping = 8,
    /// The answer to a ping.
    Pong = 9,
    /// The next rank's turn to test its link.
    Turn = 10,
}

/// Which processes a collective spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// Every process.
    World,
    /// This process's pipeline replica: its `p` ranks.
    Pipeline,
    /// The processes of this pipeline rank, one per replica.
    Replicas,
}

/// This process's MPI rank and its communication thread.
pub struct Mpi {
    /// Pipeline rank.
    rank: usize,
    /// Ranks per pipeline.
    size: usize,
    /// Which pipeline replica this process belongs to, of `replicas`.
    replica: usize,
    replicas: usize,
    /// Whether the replicas shard their optimizer state (ZeRO stage 1).
    zero: bool,
    /// Milliseconds to add to this process's wall clock to read rank 0's.
    clock_offset: f64,
    requests: Sender<Request>,
    outbox: Sender<Packet>,
    inboxes: Mutex<HashMap<Edge, Receiver<Packet>>>,
    /// Set by the communication thread when another rank reports a failure.
    aborted: Arc<AtomicBool>,
    /// The first failure another rank reported.
    failure: Arc<Mutex<Option<String>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Whether this process has told the others it failed.
    told: AtomicBool,
}

/// How long a process that reported a failure waits before it exits: the others notice within a
/// poll of their waits (20 ms) and report too.
const GRACE: std::time::Duration = std::time::Duration::from_millis(300);

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.rank, self.size)
    }
}

impl Mpi {
    /// Starts the communication thread, which initialises MPI and splits the processes into
    /// `replicas` pipelines (data parallelism; 1 for one pipeline); an error if MPI cannot start
    /// or the processes do not split evenly.
    /// With `zero`, the replicas shard their optimizer state (ZeRO stage 1).
    pub fn start(replicas: usize, zero: bool) -> Result<Arc<Mpi>> {
        let (requests, requests_rx) = unbounded();
        let (outbox, outbox_rx) = unbounded();
        let (ready_tx, ready_rx) = unbounded();
        let aborted = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let state = comm::State::new(requests_rx, outbox_rx, Arc::clone(&aborted), Arc::clone(&failure));
        let thread = std::thread::Builder::new()
            .name("pipesched-mpi".into())
            .spawn(move || comm::serve(state, replicas, ready_tx))
            .map_err(|e| Error::Config(format!("cannot start the MPI communication thread: {e}")))?;
        let comm::Place { rank, p: size, replica, replicas, clock_offset } = ready_rx
            .recv()
            .map_err(|_| Error::Config("the MPI communication thread stopped while starting".into()))?
            .map_err(Error::Config)?;
        Ok(Arc::new(Mpi {
            rank,
            size,
            replica,
            replicas,
            zero,
            clock_offset,
            requests,
            outbox,
            inboxes: Mutex::new(HashMap::new()),
            aborted,
            failure,
            thread: Mutex::new(Some(thread)),
            told: AtomicBool::new(false),
        }))
    }

    /// This process's rank in its pipeline.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many ranks each pipeline has (all processes: `size() · replicas()`).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Which pipeline replica this process belongs to.
    pub fn replica(&self) -> usize {
        self.replica
    }

    /// How many pipeline replicas there are (data parallelism).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Whether the replicas shard their optimizer state (ZeRO stage 1).
    pub fn shards_optimizer(&self) -> bool {
        self.zero
    }

    /// Rank 0's wall clock, as this process estimates it: milliseconds since the Unix epoch
    /// (its own clock plus the offset measured at start-up).
    pub fn root_clock_ms(&self) -> f64 {
        comm::wall_ms() + self.clock_offset
    }

    /// What this process adds to its wall clock to read rank 0's, in milliseconds (0 on rank
    /// 0), measured when MPI started.
    pub fn clock_offset_ms(&self) -> f64 {
        self.clock_offset
    }

    /// Where a worker sends its outgoing packets.
    pub fn outbox(&self) -> &Sender<Packet> {
        &self.outbox
    }

    /// The channel on which packets of `edge` arrive (the same one every time it is asked for).
    pub fn inbox(&self, edge: Edge) -> Receiver<Packet> {
        let mut inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        inboxes
            .entry(edge)
            .or_insert_with(|| {
                let (tx, rx) = unbounded();
                // The thread outlives every request; if it has stopped, the receive will say so.
                let _ = self.requests.send(Request::Route(edge, tx));
                rx
            })
            .clone()
    }

    /// Set when another rank has failed.
    pub fn aborted(&self) -> &AtomicBool {
        &self.aborted
    }

    /// What another rank reported when it failed, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Tells every other rank that this one failed with `message` (only the first call sends
    /// anything), then waits [`GRACE`].
    pub fn abort(&self, message: &str) {
        if !self.told.swap(true, Ordering::AcqRel) {
            // Most errors name their rank already.
            let own = format!("rank {}", self.rank);
            let named = message.starts_with(&format!("{own}:")) || message.starts_with(&format!("{own},"));
            let report = if named { message.to_string() } else { format!("{own}: {message}") };
            let (done, sent) = unbounded();
            if self.requests.send(Request::Abort(report, done)).is_ok() {
                let _ = sent.recv_timeout(GRACE);
            }
        }
        Mpi::linger();
    }

    /// Waits [`GRACE`]: a process that has reported a failure waits before it exits, so the
    /// others can stop and report theirs before `mpirun` ends the job at the first exit.
    pub fn linger() {
        std::thread::sleep(GRACE);
    }

    /// Every rank's `bytes`, in rank order, on every rank: the barrier between steps. Waits
    /// until every rank has sent its part, or until one reports a failure (an error with its
    /// report).
    pub fn all_gather(&self, bytes: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        self.gather_in(Scope::Pipeline, bytes, true)
    }

    /// Every rank's `bytes`, in rank order, on rank 0; an empty list on the others, once rank 0
    /// has them all. Waits as [`Mpi::all_gather`] does. (Within this process's pipeline.)
    pub fn gather(&self, bytes: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        self.gather_in(Scope::Pipeline, bytes, false)
    }

    /// Every replica's `bytes`, in replica order, on every process of this pipeline rank.
    pub fn all_gather_replicas(&self, bytes: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        self.gather_in(Scope::Replicas, bytes, true)
    }

    /// Starts the sum over replicas keyed `key` (unique among the sums under way, the same on
    /// every replica) of this replica's `values`: the returned channel gets every replica's
    /// values added in replica order, `((v₀ + v₁) + v₂) + …` — the same bits on every replica
    /// and every run — with when this process's communication thread had it, or the error that
    /// stopped it. Each replica adds its own slice of the values (a reduce-scatter) and sends
    /// it to the others (an all-gather): `2(D − 1)/D` of the values in and out of each process.
    /// With `scatter`, each replica gets only its slice of the sum ([`slice_of`](crate::exec::slice_of)).
    pub fn start_sum(&self, key: u32, values: Vec<f32>, scatter: bool) -> Result<Receiver<comm::SumAnswer>> {
        let (reply, answer) = unbounded();
        self.requests
            .send(Request::Sum { key, values, scatter, reply })
            .map_err(|_| Error::Config("the MPI communication thread has stopped".into()))?;
        Ok(answer)
    }

    /// Whether [`Mpi::time_link`] times the replicas' links: a pipeline of one rank, with
    /// replicas, has no link of its own.
    pub fn times_replica_links(&self) -> bool {
        self.size() == 1 && self.replicas() > 1
    }

    /// Times the link from this pipeline rank to the next: for each of `sizes`, `reps` round
    /// trips (after 2 unmeasured ones) of a message of that many bytes answered by a 1-byte one,
    /// in milliseconds — through the communication threads on both sides, as the pipeline's
    /// messages go. The ranks take turns, link 0→1 first, so no two tests overlap; the last rank
    /// has no link and gets nothing. Every rank of the pipeline must call it. A pipeline of one
    /// rank with replicas times the replicas' links instead (replica 0→1 first; every replica
    /// calls it): the links its gradient sums cross.
    pub fn time_link(&self, sizes: &[usize], reps: usize) -> Result<Vec<Vec<f64>>> {
        let (reply, answer) = unbounded();
        let scope = if self.times_replica_links() { Scope::Replicas } else { Scope::Pipeline };
        self.requests
            .send(Request::Link { scope, sizes: sizes.to_vec(), reps, reply })
            .map_err(|_| Error::Config("the MPI communication thread has stopped".into()))?;
        let got = answer.recv().map_err(|_| Error::Config("the MPI communication thread stopped mid-test".into()))?;
        got.map_err(Error::Remote)
    }

    fn gather_in(&self, scope: Scope, bytes: Vec<u8>, everyone: bool) -> Result<Vec<Vec<u8>>> {
        let (reply, answer) = unbounded();
        self.requests
            .send(Request::AllGather { scope, bytes, everyone, reply })
            .map_err(|_| Error::Config("the MPI communication thread has stopped".into()))?;
        let got = answer.recv().map_err(|_| Error::Config("the MPI communication thread stopped mid-gather".into()))?;
        got.map_err(Error::Remote)
    }

    /// Whether another rank has failed.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }
}

impl Mpi {
    /// Ends this process's part: waits until every rank has come this far, then finalises
    /// MPI. For the end of a run that succeeded (after a failure, dropping the handle
    /// finalises without waiting for ranks that may never come).
    pub fn finish(&self) {
        self.stop(true);
    }

    fn stop(&self, barrier: bool) {
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = self.requests.send(Request::Stop { barrier });
            let _ = t.join();
        }
    }
}

impl Drop for Mpi {
    /// Stops the communication thread, which finalises MPI.
    fn drop(&mut self) {
        self.stop(false);
    }
}
