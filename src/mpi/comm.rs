//! The communication thread: the only thread of the process that calls MPI (see `mod.rs`).
//!
//! Its loop: send every packet the workers queued (each one non-blocking, receiving while it
//! waits for the send to finish), receive whatever has arrived, then serve one request; when
//! there is nothing to do, wait up to [`IDLE`] for a packet or a request before polling MPI
//! again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use super::Tag;
use crate::exec::{Edge, Packet};

/// The longest the thread waits for a packet or a request before polling MPI again.
const IDLE: Duration = Duration::from_micros(50);

/// What the rest of the process asks of the thread.
pub(crate) enum Request {
    /// Packets of `Edge` go into this channel.
    Route(Edge, Sender<Packet>),
    /// Every rank's bytes, in rank order, to every rank (`everyone`) or to rank 0 only (the
    /// others get an empty list, once rank 0 has everything).
    AllGather { bytes: Vec<u8>, everyone: bool, reply: Sender<Result<Vec<Vec<u8>>, String>> },
    /// Tell every other rank this one failed; say when it has been sent.
    Abort(String, Sender<()>),
    /// Finalise MPI and end the thread; with `barrier`, after every rank has come this far.
    Stop { barrier: bool },
}

/// The thread's state.
pub(crate) struct State {
    requests: Receiver<Request>,
    outbox: Receiver<Packet>,
    aborted: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    routes: HashMap<Edge, Sender<Packet>>,
    /// Packets that came before their edge had a route.
    unrouted: Vec<Packet>,
    /// Rank 0: the other ranks' contributions to the all-gather under way.
    gathered: HashMap<usize, Vec<u8>>,
    /// Other ranks: rank 0's answer to the all-gather under way.
    released: Option<Vec<u8>>,
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
            released: None,
        }
    }

    /// Records that another rank failed with `message` (the first report wins).
    fn fail(&self, message: String) {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(message);
        self.aborted.store(true, Ordering::Release);
    }

    /// Sends `bytes` to `peer` with `tag`, receiving what arrives until the send is done.
    fn send(&mut self, world: &SimpleCommunicator, peer: usize, tag: Tag, bytes: &[u8]) {
        mpi::request::scope(|scope| {
            let mut req = world.process_at_rank(peer as i32).immediate_send_with_tag(scope, bytes, tag as i32);
            loop {
                match req.test() {
                    Ok(_) => break,
                    Err(pending) => {
                        req = pending;
                        self.poll(world);
                    }
                }
            }
        });
    }

    /// Sends every packet the workers have queued.
    fn flush(&mut self, world: &SimpleCommunicator) {
        while let Ok(p) = self.outbox.try_recv() {
            self.send(world, p.peer, Tag::Data, &p.bytes);
        }
    }

    /// Receives every message that has arrived.
    fn poll(&mut self, world: &SimpleCommunicator) {
        while let Some(probed) = world.any_process().immediate_matched_probe() {
            let (bytes, status) = probed.matched_receive_vec::<u8>();
            let source = status.source_rank() as usize;
            match status.tag() {
                t if t == Tag::Data as i32 => self.deliver(Packet { peer: source, bytes }),
                t if t == Tag::Gather as i32 => {
                    self.gathered.insert(source, bytes);
                }
                t if t == Tag::Release as i32 => self.released = Some(bytes),
                t if t == Tag::Abort as i32 => self.fail(String::from_utf8_lossy(&bytes).into_owned()),
                other => self.fail(format!("rank {source} sent a message with unknown tag {other}")),
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
    fn wait_for(&mut self, world: &SimpleCommunicator, done: impl Fn(&State) -> bool) -> Result<(), String> {
        loop {
            self.poll(world);
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
        world: &SimpleCommunicator,
        bytes: Vec<u8>,
        everyone: bool,
    ) -> Result<Vec<Vec<u8>>, String> {
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if rank != 0 {
            self.send(world, 0, Tag::Gather, &bytes);
            self.wait_for(world, |s| s.released.is_some())?;
            return split(&self.released.take().expect("waited for it"));
        }
        self.wait_for(world, |s| s.gathered.len() == size - 1)?;
        let mut all = vec![bytes];
        all.extend((1..size).map(|r| self.gathered.remove(&r).expect("every rank answered")));
        let joined = if everyone { join(&all) } else { Vec::new() };
        for r in 1..size {
            self.send(world, r, Tag::Release, &joined);
        }
        Ok(all)
    }
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

/// What to add to this process's wall clock to read rank 0's, in milliseconds (Cristian's
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

/// The thread's body: initialises MPI, compares the clocks, reports `(rank, size, clock
/// offset)` on `ready`, serves until told to stop, and finalises MPI after a run that
/// succeeded (see `Request::Stop`).
pub(crate) fn serve(mut st: State, ready: Sender<Result<(usize, usize, f64), String>>) {
    let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
        let _ = ready.send(Err("MPI is already initialised in this process".into()));
        return;
    };
    let world = universe.world();
    let offset = clock_offset(&world);
    let _ = ready.send(Ok((world.rank() as usize, world.size() as usize, offset)));
    loop {
        st.flush(&world);
        st.poll(&world);
        let request = st.requests.try_recv();
        // Whatever a worker queued before this request was made is in the outbox now: it leaves
        // first (a gather must not overtake the step's last packets).
        st.flush(&world);
        match request {
            Ok(Request::Route(edge, tx)) => st.route(edge, tx),
            Ok(Request::AllGather { bytes, everyone, reply }) => {
                let _ = reply.send(st.all_gather(&world, bytes, everyone));
            }
            Ok(Request::Abort(message, done)) => {
                for r in (0..world.size() as usize).filter(|&r| r != world.rank() as usize) {
                    st.send(&world, r, Tag::Abort, message.as_bytes());
                }
                let _ = done.send(());
            }
            Ok(Request::Stop { barrier: true }) => {
                world.barrier();
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
