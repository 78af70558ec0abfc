//! The communication thread: the only thread of the process that calls MPI (see `mod.rs`).
//!
//! Its loop: send every packet the workers queued (each one non-blocking, receiving while it
//! waits for the send to finish), receive whatever has arrived, then serve one request; when
//! there is nothing to do, wait up to [`IDLE`] for a packet or a request before polling MPI
//! again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::*;
use mpi::Threading;

use super::{Scope, Tag};
use crate::exec::{add_replica, slice_of, Edge, Packet, Wire};

/// The longest the thread waits for a packet or a request before polling MPI again.
const IDLE: Duration = Duration::from_micros(50);

/// What the rest of the process asks of the thread.
pub(crate) enum Request {
    /// Packets of `Edge` go into this channel.
    Route(Edge, Sender<Packet>),
    /// Every member's bytes of `scope`, in rank order, to every member (`everyone`) or to its
    /// member 0 only (the others get an empty list, once member 0 has everything).
    AllGather { scope: Scope, bytes: Vec<u8>, everyone: bool, reply: Sender<Result<Vec<Vec<u8>>, String>> },
    /// This replica's part of the sum over replicas keyed `key`: every replica's `f32` values
    /// (little-endian), added in replica order; the sum goes to `reply` on every replica — with
    /// `scatter`, only replica `d`'s slice of it ([`slice_of`]).
    Sum { key: u32, values: Vec<u8>, scatter: bool, reply: Sender<SumAnswer> },
    /// Time this rank's link to the next (see [`Mpi::time_link`](super::Mpi::time_link)).
    Link { sizes: Vec<usize>, reps: usize, reply: Sender<Result<Vec<Vec<f64>>, String>> },
    /// Tell every other rank this one failed; say when it has been sent.
    Abort(String, Sender<()>),
    /// Finalise MPI and end the thread; with `barrier`, after every rank has come this far.
    Stop { barrier: bool },
}

/// The answer to a [`Request::Sum`]: this process's sum (or slice of it), `f32` little-endian,
/// and when the communication thread had it; or the error that stopped it.
pub(crate) type SumAnswer = Result<(Vec<u8>, Instant), String>;

/// The thread's state.
pub(crate) struct State {
    requests: Receiver<Request>,
    outbox: Receiver<Packet>,
    aborted: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    routes: HashMap<Edge, Sender<Packet>>,
    /// Packets that came before their edge had a route.
    unrouted: Vec<Packet>,
    /// Member 0 of a scope: the other members' contributions to its all-gather under way.
    gathered: HashMap<(Scope, usize), Vec<u8>>,
    /// Other members: member 0's answer to the scope's all-gather under way.
    released: HashMap<Scope, Vec<u8>>,
    /// Sums over replicas under way, by key.
    sums: HashMap<u32, Sum>,
    /// Answers to this rank's pings so far.
    pongs: usize,
    /// Whether the previous rank has finished testing its link.
    turn: bool,
}

/// One sum over replicas under way.
#[derive(Default)]
struct Sum {
    /// Replica 0: every replica's values, by replica, as they arrive.
    parts: HashMap<usize, Vec<u8>>,
    /// Where the sum goes in this process, once it has asked for it.
    reply: Option<Sender<SumAnswer>>,
    /// Whether each replica gets only its slice of the sum.
    scatter: bool,
}

/// The communicators: the world (failures, clocks, the final barrier), this process's pipeline
/// (its data and its gathers; rank = pipeline rank) and its data-parallel group (the processes
/// of the same pipeline rank in every replica; rank = replica).
pub(crate) struct Comms {
    world: SimpleCommunicator,
    pipeline: SimpleCommunicator,
    replicas: SimpleCommunicator,
}

impl Comms {
    fn of(&self, scope: Scope) -> &SimpleCommunicator {
        match scope {
            Scope::World => &self.world,
            Scope::Pipeline => &self.pipeline,
            Scope::Replicas => &self.replicas,
        }
    }
}

impl State {
    pub(crate) fn new(
        requests: Receiver<Request>,
        outbox: Receiver<Packet>,
        aborted: Arc<AtomicBool>,
        failure: Arc<Mutex<Option<String>>>,
    ) -> State {
        State {
            requests,
            outbox,
            aborted,
            failure,
            routes: HashMap::new(),
            unrouted: Vec::new(),
            gathered: HashMap::new(),
            released: HashMap::new(),
            sums: HashMap::new(),
            pongs: 0,
            turn: false,
        }
    }

    /// Records that another rank failed with `message` (the first report wins).
    fn fail(&self, message: String) {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(message);
        self.aborted.store(true, Ordering::Release);
    }

    /// Sends `bytes` to member `peer` of `scope` with `tag`, receiving what arrives until the
    /// send is done — and, while a message other than a stage's (a sum's part, a gather's) is
    /// on its way, sending the stages' packets the workers queue meanwhile, so a large sum does
    /// not hold the pipeline's messages back.
    fn send(&mut self, comms: &Comms, scope: Scope, peer: usize, tag: Tag, bytes: &[u8]) {
        mpi::request::scope(|s| {
            let comm = comms.of(scope);
            let mut req = comm.process_at_rank(peer as i32).immediate_send_with_tag(s, bytes, tag as i32);
            loop {
                match req.test() {
                    Ok(_) => break,
                    Err(pending) => {
                        req = pending;
                        self.poll(comms);
                        if tag != Tag::Data {
                            self.flush(comms);
                        }
                    }
                }
            }
        });
    }

    /// Sends every packet the workers have queued.
    fn flush(&mut self, comms: &Comms) {
        while let Ok(p) = self.outbox.try_recv() {
            self.send(comms, Scope::Pipeline, p.peer, Tag::Data, &p.bytes);
        }
    }

    /// Receives every message that has arrived, on every communicator.
    fn poll(&mut self, comms: &Comms) {
        for scope in [Scope::Pipeline, Scope::Replicas, Scope::World] {
            while let Some(probed) = comms.of(scope).any_process().immediate_matched_probe() {
                let (bytes, status) = probed.matched_receive_vec::<u8>();
                self.take(comms, scope, status.source_rank() as usize, status.tag(), bytes);
            }
        }
    }

    /// Handles a message from member `source` of `scope`.
    fn take(&mut self, comms: &Comms, scope: Scope, source: usize, tag: i32, bytes: Vec<u8>) {
        match (scope, tag) {
            (Scope::Pipeline, t) if t == Tag::Data as i32 => self.deliver(Packet { peer: source, bytes }),
            (_, t) if t == Tag::Gather as i32 => {
                self.gathered.insert((scope, source), bytes);
            }
            (_, t) if t == Tag::Release as i32 => {
                self.released.insert(scope, bytes);
            }
            (Scope::World, t) if t == Tag::Abort as i32 => self.fail(String::from_utf8_lossy(&bytes).into_owned()),
            (Scope::Pipeline, t) if t == Tag::Ping as i32 => self.send(comms, scope, source, Tag::Pong, &[0]),
            (Scope::Pipeline, t) if t == Tag::Pong as i32 => self.pongs += 1,
            (Scope::Pipeline, t) if t == Tag::Turn as i32 => self.turn = true,
            (Scope::Replicas, t) if t == Tag::Sum as i32 || t == Tag::Summed as i32 => {
                let Some((key, values)) = bytes.split_first_chunk::<4>() else {
                    return self.fail(format!("replica {source} sent a sum without its key"));
                };
                let key = u32::from_le_bytes(*key);
                if t == Tag::Sum as i32 {
                    self.sums.entry(key).or_default().parts.insert(source, values.to_vec());
                    self.try_sum(comms, key);
                } else if let Some(reply) = self.sums.remove(&key).and_then(|s| s.reply) {
                    let _ = reply.send(Ok((values.to_vec(), Instant::now())));
                }
            }
            (_, other) => self.fail(format!("member {source} of {scope:?} sent a message with tag {other}")),
        }
    }

    /// Times this rank's link to the next, on its turn (see [`Request::Link`]).
    fn time_link(&mut self, comms: &Comms, sizes: &[usize], reps: usize) -> Result<Vec<Vec<f64>>, String> {
        let (rank, size) = (comms.pipeline.rank() as usize, comms.pipeline.size() as usize);
        if rank + 1 >= size {
            return Ok(Vec::new());
        }
        if rank > 0 {
            self.wait_for(comms, |s| s.turn)?;
            self.turn = false;
        }
        let mut times = Vec::with_capacity(sizes.len());
        for &n in sizes {
            let message = vec![0u8; n];
            let mut rtts = Vec::with_capacity(reps);
            for k in 0..reps + 2 {
                let before = self.pongs;
                let t = std::time::Instant::now();
                self.send(comms, Scope::Pipeline, rank + 1, Tag::Ping, &message);
                self.wait_for(comms, |s| s.pongs > before)?;
                if k >= 2 {
                    rtts.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.push(rtts);
        }
        if rank + 2 < size {
            self.send(comms, Scope::Pipeline, rank + 1, Tag::Turn, &[]);
        }
        Ok(times)
    }

    /// This replica's part of sum `key` (see [`Request::Sum`]).
    fn sum(&mut self, comms: &Comms, key: u32, values: Vec<u8>, scatter: bool, reply: Sender<SumAnswer>) {
        let replica = comms.replicas.rank() as usize;
        if comms.replicas.size() == 1 {
            let _ = reply.send(Ok((values, Instant::now())));
            return;
        }
        let entry = self.sums.entry(key).or_default();
        entry.reply = Some(reply);
        entry.scatter = scatter;
        if replica == 0 {
            entry.parts.insert(0, values);
            self.try_sum(comms, key);
        } else {
            let mut message = key.to_le_bytes().to_vec();
            message.extend_from_slice(&values);
            self.send(comms, Scope::Replicas, 0, Tag::Sum, &message);
        }
    }

    /// Replica 0: once every replica's part of sum `key` is here and this process has asked for
    /// it, adds the parts in replica order and sends the sum to every replica.
    fn try_sum(&mut self, comms: &Comms, key: u32) {
        let n = comms.replicas.size() as usize;
        let ready = self.sums.get(&key).is_some_and(|s| s.parts.len() == n && s.reply.is_some());
        let Some(Sum { mut parts, reply: Some(reply), scatter }) = ready.then(|| self.sums.remove(&key)).flatten()
        else {
            return;
        };
        let total = add_in_order((0..n).map(|r| parts.remove(&r).unwrap_or_default()).collect());
        match total {
            Ok(total) => {
                let part = |r: usize| {
                    if scatter {
                        let s = slice_of(total.len() / 4, n, r);
                        &total[4 * s.start..4 * s.end]
                    } else {
                        &total[..]
                    }
                };
                for r in 1..n {
                    let mut message = key.to_le_bytes().to_vec();
                    message.extend_from_slice(part(r));
                    self.send(comms, Scope::Replicas, r, Tag::Summed, &message);
                }
                let _ = reply.send(Ok((part(0).to_vec(), Instant::now())));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Hands a data packet to its edge's channel, or keeps it until the edge has one.
    fn deliver(&mut self, packet: Packet) {
        let edge = match packet.message() {
            Ok(m) => (m.flow, m.to),
            Err(e) => return self.fail(format!("a damaged packet: {e}")),
        };
        match self.routes.get(&edge) {
            Some(tx) => {
                // A closed inbox means the process is shutting down: nothing waits for it.
                let _ = tx.send(packet);
            }
            None => self.unrouted.push(packet),
        }
    }

    /// Routes `edge` into `tx`, with the packets that were waiting for it.
    fn route(&mut self, edge: Edge, tx: Sender<Packet>) {
        self.routes.insert(edge, tx);
        for p in std::mem::take(&mut self.unrouted) {
            self.deliver(p);
        }
    }

    /// Polls until `done` holds or another rank fails (an error with its report). No deadline
    /// of its own: every rank's waits for inputs are bounded by the step's timeout, and a rank
    /// that times out or fails tells the others; a process that dies is ended by `mpirun`, which
    /// ends the rest.
    fn wait_for(&mut self, comms: &Comms, done: impl Fn(&State) -> bool) -> Result<(), String> {
        loop {
            self.poll(comms);
            if done(self) {
                return Ok(());
            }
            if self.aborted.load(Ordering::Relaxed) {
                let report = self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
                return Err(report.unwrap_or_else(|| "another rank failed".into()));
            }
            std::thread::sleep(IDLE);
        }
    }

    /// The all-gather: every rank sends its bytes to rank 0, which sends the list to every rank
    /// (`everyone`), or an empty list: the others still wait for it, so no rank leaves a gather
    /// before every rank has entered it.
    fn all_gather(
        &mut self,
        comms: &Comms,
        scope: Scope,
        bytes: Vec<u8>,
        everyone: bool,
    ) -> Result<Vec<Vec<u8>>, String> {
        let comm = comms.of(scope);
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        if rank != 0 {
            self.send(comms, scope, 0, Tag::Gather, &bytes);
            self.wait_for(comms, |s| s.released.contains_key(&scope))?;
            return split(&self.released.remove(&scope).expect("waited for it"));
        }
        self.wait_for(comms, |s| (1..size).all(|r| s.gathered.contains_key(&(scope, r))))?;
        let mut all = vec![bytes];
        all.extend((1..size).map(|r| self.gathered.remove(&(scope, r)).expect("every member answered")));
        let joined = if everyone { join(&all) } else { Vec::new() };
        for r in 1..size {
            self.send(comms, scope, r, Tag::Release, &joined);
        }
        Ok(all)
    }
}

/// The element-wise sum of `parts` (each `f32` values, little-endian), added in the order given:
/// `((p₀ + p₁) + p₂) + …`, the same bits on every run.
fn add_in_order(parts: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
    let mut parts = parts.into_iter();
    let mut total = parts.next().unwrap_or_default();
    for (r, part) in parts.enumerate() {
        if part.len() != total.len() {
            return Err(format!(
                "replica {} gave {} bytes of gradients where replica 0 gave {}; every replica must build the same stages",
                r + 1,
                part.len(),
                total.len()
            ));
        }
        let (mut sum, part) = (Vec::<f32>::decode(&total)?, Vec::<f32>::decode(&part)?);
        add_replica(&mut sum, &part);
        total.clear();
        sum.encode(&mut total)?;
    }
    Ok(total)
}

/// `parts` as one buffer: each part's length (`u64`, little-endian), then its bytes.
fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// The parts [`join`] put together.
fn split(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_at_checked(8).ok_or("a gathered list ends inside a length")?;
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        let (part, rest) = rest.split_at_checked(len).ok_or("a gathered list ends inside a part")?;
        parts.push(part.to_vec());
        bytes = rest;
    }
    Ok(parts)
}

/// Round trips per rank when the clocks are compared at start-up.
const CLOCK_ROUNDS: usize = 16;

/// This process's wall clock: milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// What to add to this process's wall clock to read world rank 0's, in milliseconds (Cristian's
/// method): each other rank asks rank 0 for its time [`CLOCK_ROUNDS`] times and keeps the answer
/// of the shortest round trip, taken to have been read halfway through it, so the estimate is
/// off by at most half that round trip. Rank 0 answers the ranks one after another; it runs
/// before anything else is sent, and every rank takes part.
fn clock_offset(world: &SimpleCommunicator) -> f64 {
    let (rank, size) = (world.rank(), world.size());
    let tag = Tag::Clock as i32;
    if rank == 0 {
        for r in 1..size {
            let peer = world.process_at_rank(r);
            for _ in 0..CLOCK_ROUNDS {
                let _ = peer.receive_vec_with_tag::<u8>(tag);
                peer.send_with_tag(&wall_ms().to_le_bytes()[..], tag);
            }
        }
        return 0.0;
    }
    let root = world.process_at_rank(0);
    let mut best = (f64::INFINITY, 0.0);
    for _ in 0..CLOCK_ROUNDS {
        let asked = wall_ms();
        root.send_with_tag(&[0u8][..], tag);
        let (answer, _) = root.receive_vec_with_tag::<u8>(tag);
        let back = wall_ms();
        let Ok(theirs) = <[u8; 8]>::try_from(answer.as_slice()) else { continue };
        if back - asked < best.0 {
            best = (back - asked, f64::from_le_bytes(theirs) - (asked + back) / 2.0);
        }
    }
    best.1
}

/// Where a process sits: its pipeline rank of `p`, its replica of `replicas`, and its clock
/// offset (see [`clock_offset`]).
pub(crate) struct Place {
    pub(crate) rank: usize,
    pub(crate) p: usize,
    pub(crate) replica: usize,
    pub(crate) replicas: usize,
    pub(crate) clock_offset: f64,
}

/// The thread's body: initialises MPI, splits the world into `replicas` pipelines of equal
/// size (world rank `w` is rank `w mod p` of replica `w / p`), compares the clocks, reports the
/// process's [`Place`] on `ready`, serves until told to stop, and finalises MPI after a run
/// that succeeded (see `Request::Stop`).
pub(crate) fn serve(mut st: State, replicas: usize, ready: Sender<Result<Place, String>>) {
    let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
        let _ = ready.send(Err("MPI is already initialised in this process".into()));
        return;
    };
    let world = universe.world();
    let (w, size) = (world.rank() as usize, world.size() as usize);
    if replicas == 0 || size % replicas != 0 {
        let _ = ready.send(Err(format!(
            "{size} MPI processes cannot make {replicas} pipeline replicas of equal size; launch p·dp processes (`mpirun -n P·D … --dp D`)"
        )));
        std::mem::forget(universe);
        return;
    }
    let p = size / replicas;
    let (rank, replica) = (w % p, w / p);
    let split = |color: usize| world.split_by_color(Color::with_value(color as i32));
    let (Some(pipeline), Some(group)) = (split(replica), split(rank)) else {
        let _ = ready.send(Err("MPI could not split the world into pipelines and replica groups".into()));
        std::mem::forget(universe);
        return;
    };
    let clock_offset = clock_offset(&world);
    let comms = Comms { world, pipeline, replicas: group };
    let _ = ready.send(Ok(Place { rank, p, replica, replicas, clock_offset }));
    loop {
        st.flush(&comms);
        st.poll(&comms);
        let request = st.requests.try_recv();
        // Whatever a worker queued before this request was made is in the outbox now: it leaves
        // first (a gather must not overtake the step's last packets).
        st.flush(&comms);
        match request {
            Ok(Request::Route(edge, tx)) => st.route(edge, tx),
            Ok(Request::AllGather { scope, bytes, everyone, reply }) => {
                let _ = reply.send(st.all_gather(&comms, scope, bytes, everyone));
            }
            Ok(Request::Sum { key, values, scatter, reply }) => st.sum(&comms, key, values, scatter, reply),
            Ok(Request::Link { sizes, reps, reply }) => {
                let _ = reply.send(st.time_link(&comms, &sizes, reps));
            }
            Ok(Request::Abort(message, done)) => {
                for r in (0..size).filter(|&r| r != w) {
                    st.send(&comms, Scope::World, r, Tag::Abort, message.as_bytes());
                }
                let _ = done.send(());
            }
            Ok(Request::Stop { barrier: true }) => {
                comms.world.barrier();
                break;
            }
            // After a failure: finalising would wait for every other rank (OpenMPI's finalise
            // is collective), which may never come; the process exits with its error instead,
            // and `mpirun` ends the others.
            Ok(Request::Stop { barrier: false }) | Err(TryRecvError::Disconnected) => {
                std::mem::forget(universe);
                return;
            }
            Err(TryRecvError::Empty) => {
                let mut sel = Select::new();
                sel.recv(&st.outbox);
                sel.recv(&st.requests);
                let _ = sel.ready_timeout(IDLE);
            }
        }
    }
    drop(comms);
    drop(universe);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_parts_split_back() {
        let parts = vec![vec![1u8, 2, 3], vec![], vec![9; 300]];
        assert_eq!(split(&join(&parts)).unwrap(), parts);
        assert!(split(&[1, 0, 0]).is_err());
        assert!(split(&join(&parts)[..20]).is_err());
    }
}
