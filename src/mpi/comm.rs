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
use crate::exec::{add_replica, f32s, put_f32s, slice_of, Edge, Packet};

/// The longest the thread waits for a packet or a request before polling MPI again.
const IDLE: Duration = Duration::from_micros(50);

/// Buffers of sums' messages kept for later ones: every slice a process sends and receives in
/// one sum of `D` replicas is `2(D − 1)`; a few stages' worth.
const SPARE: usize = 16;

/// What the rest of the process asks of the thread.
pub(crate) enum Request {
    /// Packets of `Edge` go into this channel.
    Route(Edge, Sender<Packet>),
    /// Every member's bytes of `scope`, in rank order, to every member (`everyone`) or to its
    /// member 0 only (the others get an empty list, once member 0 has everything).
    AllGather { scope: Scope, bytes: Vec<u8>, everyone: bool, reply: Sender<Result<Vec<Vec<u8>>, String>> },
    /// This replica's part of the sum over replicas keyed `key`: every replica's values, added
    /// in replica order; the sum goes to `reply` on every replica — with `scatter`, only replica
    /// `d`'s slice of it ([`slice_of`]).
    Sum { key: u32, values: Vec<f32>, scatter: bool, reply: Sender<SumAnswer> },
    /// Time this rank's link to the next (see [`Mpi::time_link`](super::Mpi::time_link)).
    /// (Within `scope`: the pipeline, or the replicas of a pipeline of one rank.)
    Link { scope: Scope, sizes: Vec<usize>, reps: usize, reply: Sender<Result<Vec<Vec<f64>>, String>> },
    /// Tell every other rank this one failed; say when it has been sent.
    Abort(String, Sender<()>),
    /// Finalise MPI and end the thread; with `barrier`, after every rank has come this far.
    Stop { barrier: bool },
}

/// The answer to a [`Request::Sum`]: this process's sum (or slice of it) and when the
/// communication thread had it; or the error that stopped it.
pub(crate) type SumAnswer = Result<(Vec<f32>, Instant), String>;

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
    /// Buffers of sums' messages, kept for the next ([`State::buffer`]).
    spare: Vec<Vec<u8>>,
    /// Where a replica other than 0 keeps its own part of its slice while it adds the parts.
    own: Vec<f32>,
    /// Answers to this rank's pings so far.
    pongs: usize,
    /// Whether the previous rank has finished testing its link.
    turn: bool,
}

/// One sum over replicas under way, as this replica sees it: replica `r` owns slice `r` of the
/// values ([`slice_of`]); every replica sends each owner its slice, the owner adds the `D`
/// parts in replica order and sends the summed slice to every replica, which joins the slices
/// in replica order (a reduce-scatter, then an all-gather). The values this replica gave are
/// the buffer the sum is written into, and goes back with it (under ZeRO-1 holding only this
/// replica's slice): a new buffer of the length of the whole costs a page fault per 4 KiB, so
/// none is allocated beyond it.
#[derive(Default)]
struct Sum {
    /// The other replicas' parts of this replica's slice, as they came (the sum's key, then
    /// `f32` little-endian), by replica, as they arrive. A replica that has its whole sum may send its part of the next step's sum
    /// before this one has every slice: it waits here for the next round.
    parts: HashMap<usize, Vec<u8>>,
    /// Where the sum goes in this process, once it has asked for it.
    reply: Option<Sender<SumAnswer>>,
    /// Whether each replica gets only its slice of the sum.
    scatter: bool,
    /// This replica's values, once it has asked; then its summed slice in its place; then
    /// the others' summed slices as they arrive.
    values: Vec<f32>,
    /// Whether this replica's slice is summed.
    summed: bool,
    /// The other replicas whose summed slices are in `values`.
    joined: usize,
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
            spare: Vec::new(),
            own: Vec::new(),
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
            while let Some((message, status)) = comms.of(scope).any_process().immediate_matched_probe() {
                // The sums' slices into kept buffers (see [`State::buffer`]); the rest, which
                // leaves this thread, into fresh ones.
                let sums = [Tag::Sum as i32, Tag::Summed as i32].contains(&status.tag());
                let bytes = if scope == Scope::Replicas && sums {
                    let len = usize::try_from(status.count(u8::equivalent_datatype())).unwrap_or(0);
                    let mut bytes = self.buffer(len);
                    bytes.resize(len, 0);
                    message.matched_receive_into(&mut bytes[..]);
                    bytes
                } else {
                    (message, status).matched_receive_vec::<u8>().0
                };
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
            (Scope::Pipeline | Scope::Replicas, t) if t == Tag::Ping as i32 => {
                self.send(comms, scope, source, Tag::Pong, &[0])
            }
            (Scope::Pipeline | Scope::Replicas, t) if t == Tag::Pong as i32 => self.pongs += 1,
            (Scope::Pipeline | Scope::Replicas, t) if t == Tag::Turn as i32 => self.turn = true,
            (Scope::Replicas, t) if t == Tag::Sum as i32 || t == Tag::Summed as i32 => {
                let Some((key, values)) = bytes.split_first_chunk::<4>() else {
                    return self.fail(format!("replica {source} sent a sum without its key"));
                };
                let key = u32::from_le_bytes(*key);
                let entry = self.sums.entry(key).or_default();
                if t == Tag::Sum as i32 {
                    entry.parts.insert(source, bytes);
                    self.try_sum(comms, key);
                } else {
                    let n = comms.replicas.size() as usize;
                    let range = slice_of(entry.values.len(), n, source);
                    if entry.reply.is_none() || values.len() != 4 * range.len() {
                        return self.fail(format!(
                            "replica {source} sent a summed slice of {} bytes where {} were due; every replica must build the same stages",
                            values.len(),
                            4 * range.len()
                        ));
                    }
                    write_values(&mut entry.values[range], values);
                    entry.joined += 1;
                    self.recycle(bytes);
                    self.try_join(key, n);
                }
            }
            (_, other) => self.fail(format!("member {source} of {scope:?} sent a message with tag {other}")),
        }
    }

    /// Times this member's link to the next of `scope`, on its turn (see [`Request::Link`]).
    fn time_link(
        &mut self,
        comms: &Comms,
        scope: Scope,
        sizes: &[usize],
        reps: usize,
    ) -> Result<Vec<Vec<f64>>, String> {
        let (rank, size) = (comms.of(scope).rank() as usize, comms.of(scope).size() as usize);
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
                self.send(comms, scope, rank + 1, Tag::Ping, &message);
                self.wait_for(comms, |s| s.pongs > before)?;
                if k >= 2 {
                    rtts.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.push(rtts);
        }
        if rank + 2 < size {
            self.send(comms, scope, rank + 1, Tag::Turn, &[]);
        }
        Ok(times)
    }

    /// This replica's part of sum `key` (see [`Request::Sum`] and [`Sum`]): each other
    /// replica's slice of `values` goes to it; this replica's own waits for the others' parts.
    fn sum(&mut self, comms: &Comms, key: u32, values: Vec<f32>, scatter: bool, reply: Sender<SumAnswer>) {
        let (me, n) = (comms.replicas.rank() as usize, comms.replicas.size() as usize);
        if n == 1 {
            let _ = reply.send(Ok((values, Instant::now())));
            return;
        }
        // Each replica to the next ones in turn, so no owner gets every part at once.
        let messages: Vec<(usize, Vec<u8>)> = (1..n)
            .map(|k| (me + k) % n)
            .map(|r| {
                let part = &values[slice_of(values.len(), n, r)];
                let mut message = self.buffer(4 + 4 * part.len());
                message.extend_from_slice(&key.to_le_bytes());
                put_f32s(&mut message, part);
                (r, message)
            })
            .collect();
        // In place before the first part leaves: while it is sent, an owner that has every part
        // may already send its summed slice back.
        let entry = self.sums.entry(key).or_default();
        (entry.reply, entry.scatter, entry.values) = (Some(reply), scatter, values);
        for (r, message) in messages {
            self.send(comms, Scope::Replicas, r, Tag::Sum, &message);
            self.recycle(message);
        }
        self.try_sum(comms, key);
    }

    /// Once every replica's part of this replica's slice of sum `key` is here and this process
    /// has asked for it: adds the parts in replica order, `((p₀ + p₁) + p₂) + …` — element by
    /// element the bits of adding the whole values in replica order — into its own values, and
    /// sends the summed slice to every replica (or, with `scatter`, answers with it).
    fn try_sum(&mut self, comms: &Comms, key: u32) {
        let (me, n) = (comms.replicas.rank() as usize, comms.replicas.size() as usize);
        let Some(entry) = self.sums.get_mut(&key) else { return };
        if entry.reply.is_none() || entry.summed || entry.parts.len() + 1 < n {
            return;
        }
        let range = slice_of(entry.values.len(), n, me);
        let parts = std::mem::take(&mut entry.parts);
        if let Some((r, part)) = parts.iter().find(|(_, p)| p.len() != 4 + 4 * range.len()) {
            let why = format!(
                "replica {r} gave {} bytes of this replica's slice of the gradients where it has {}; every replica must build the same stages",
                part.len().saturating_sub(4),
                4 * range.len()
            );
            if let Some(reply) = self.sums.remove(&key).and_then(|s| s.reply) {
                let _ = reply.send(Err(why));
            }
            return;
        }
        let mine = &mut entry.values[range.clone()];
        // Replica 0's part first, then each next one added on; this replica's own kept aside
        // meanwhile (in a buffer kept for it).
        let own = &mut self.own;
        if me > 0 {
            own.clear();
            own.extend_from_slice(mine);
            write_values(mine, &parts[&0][4..]);
        }
        for r in 1..n {
            if r == me {
                add_replica(mine, own);
            } else {
                add_values(mine, &parts[&r][4..]);
            }
        }
        entry.summed = true;
        let scatter = entry.scatter;
        parts.into_values().for_each(|p| self.recycle(p));
        let Some(entry) = self.sums.get_mut(&key) else { return };
        if scatter {
            // The slice moved to the front of the values' buffer, which goes back whole.
            let mut values = std::mem::take(&mut entry.values);
            values.copy_within(range.clone(), 0);
            values.truncate(range.len());
            let reply = entry.reply.take().expect("asked");
            let _ = reply.send(Ok((values, Instant::now())));
            self.forget(key);
            return;
        }
        let mut message = self.buffer(4 + 4 * range.len());
        message.extend_from_slice(&key.to_le_bytes());
        put_f32s(&mut message, &self.sums[&key].values[range]);
        for r in (1..n).map(|k| (me + k) % n) {
            self.send(comms, Scope::Replicas, r, Tag::Summed, &message);
        }
        self.recycle(message);
        self.try_join(key, n);
    }

    /// Once this replica's slice is summed and every other summed slice is in place: answers
    /// with the whole sum.
    fn try_join(&mut self, key: u32, n: usize) {
        let Some(entry) = self.sums.get_mut(&key) else { return };
        if entry.reply.is_none() || !entry.summed || entry.joined + 1 < n {
            return;
        }
        let (reply, values) = (entry.reply.take().expect("asked"), std::mem::take(&mut entry.values));
        let _ = reply.send(Ok((values, Instant::now())));
        self.forget(key);
    }

    /// An empty buffer for `len` bytes of a sum's message: the smallest kept one that holds
    /// them, or a new one. A stage's slices are the same sizes every step and past the sizes
    /// the heap recycles, so a new buffer each time would cost a page fault per 4 KiB.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let best = self
            .spare
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut b = self.spare.swap_remove(i);
                b.clear();
                b
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps `b` for a later message, up to [`SPARE`] buffers (the largest).
    fn recycle(&mut self, b: Vec<u8>) {
        self.spare.push(b);
        if self.spare.len() > SPARE {
            let smallest = (0..self.spare.len()).min_by_key(|&i| self.spare[i].capacity()).expect("not empty");
            self.spare.swap_remove(smallest);
        }
    }

    /// Ends this round of sum `key`, keeping what the next round has sent already.
    fn forget(&mut self, key: u32) {
        let Some(entry) = self.sums.get_mut(&key) else { return };
        if entry.parts.is_empty() {
            self.sums.remove(&key);
        } else {
            *entry = Sum { parts: std::mem::take(&mut entry.parts), ..Sum::default() };
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

/// Overwrites `into` with the values of `bytes` ([`f32s`]), of the same count.
fn write_values(into: &mut [f32], bytes: &[u8]) {
    into.iter_mut().zip(f32s(bytes)).for_each(|(v, x)| *v = x);
}

/// Adds the values of `bytes` ([`f32s`]) to `into`, element by element (`into + part`, in
/// that order, as [`add_replica`] does).
fn add_values(into: &mut [f32], bytes: &[u8]) {
    into.iter_mut().zip(f32s(bytes)).for_each(|(v, x)| *v += x);
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
            Ok(Request::Link { scope, sizes, reps, reply }) => {
                let _ = reply.send(st.time_link(&comms, scope, &sizes, reps));
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
