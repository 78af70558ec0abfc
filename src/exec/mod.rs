//! The executor: runs one step of a schedule on real threads — one worker per rank, bounded
//! crossbeam links between neighbouring stages on different ranks — and returns the measured
//! [`Trace`], the same type the simulator produces. A run of many steps is one schedule whose
//! stages update their weights inside it, where [`ExecOptions::updates`] says
//! ([`StageWork::update`], called after the action and outside its span).
//!
//! ## Shutdown protocol
//! 1. `execute` checks the schedule's structure (stages on their ranks, indices in range) so a
//!    worker can never index out of bounds; it does *not* require the schedule to be
//!    deadlock-free — a hang is diagnosed at run time (step 4).
//! 2. It creates every link (capacity m: a send never blocks) and the status board, then runs
//!    one worker per rank inside `std::thread::scope`: no worker can outlive the step.
//! 3. Each worker runs its lane in order. A stage op that fails or panics records the first
//!    error (later ones are dropped), sets the shared abort flag and returns.
//! 4. Every wait for an input is bounded by the timeout and polls the abort flag every 20 ms.
//!    A wait that times out builds the hang report (every rank's step, what it waits for and
//!    from which rank, on the schedule grid) from the board, records it and sets the flag; a
//!    wait that sees the flag stops.
//! 5. The scope joins every worker. If any error was recorded, the first one is returned;
//!    otherwise the ranks' records are assembled into the trace.
//!
//! Why it terminates: every worker either finishes its lane, fails, or waits; waits end at the
//! timeout at the latest, and after the first failure every other wait ends within one poll.

mod board;
mod link;
#[cfg(feature = "mpi")]
mod processes;
mod transport;
mod wire;
mod work;
mod worker;

pub use board::{Board, Phase, Position};
pub use link::{Edge, Links};
pub use transport::{add_replica, slice_of, PendingSum, Transport};
pub use wire::{f32s, put_f32s, Packet, Wire};
pub use work::{DeviceClock, StageLayers, StageWork, SumRan};
pub use worker::RankRecord;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipesched_schedules::deps::consumes;
use pipesched_schedules::{
    Action, GradientSum, Ledger, RankTrace, Schedule, Source, Span, Trace, Transfer, Transfers, Updates,
};

use crate::error::{Error, Result};
use worker::{Shared, Worker};

/// The longest a wait for an input may last unless told otherwise (`--timeout`'s default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How the executor runs a step.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The longest any single wait for an input may last before the step fails as a hang.
    pub timeout: Duration,
    /// How the ranks reach each other.
    pub transport: Transport,
    /// Where stages apply their optimizer during a run of many steps ([`StageWork::update`]):
    /// steps back to back, or one stream on stale weights; `None`: never (the caller updates
    /// between steps).
    pub updates: Option<Arc<Updates>>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions { timeout: DEFAULT_TIMEOUT, transport: Transport::InProcess, updates: None }
    }
}

/// Checks what the workers index by: one lane per rank, stages and micro-batches in range,
/// every action on the rank that holds its stage.
fn check_structure(schedule: &Schedule, built: usize) -> Result<()> {
    let n = schedule.stages();
    if built != n {
        return Err(Error::Usage(format!(
            "the schedule has {n} stages (p={}, v={}) but {built} stages were built; partition the model into p·v stages",
            schedule.p, schedule.v,
        )));
    }
    if schedule.lanes.len() != schedule.p {
        return Err(Error::Usage(format!("the schedule has p={} but {} lanes", schedule.p, schedule.lanes.len())));
    }
    for (r, lane) in schedule.lanes.iter().enumerate() {
        for (k, a) in lane.iter().enumerate() {
            if a.stage() >= n || a.mb() >= schedule.m || schedule.rank_of(a.stage()) != r {
                return Err(Error::Usage(format!(
                    "rank {r}, step {k}: {a} is out of range or on the wrong rank (stages 0..{n}, m={}, {} placement); validate the schedule",
                    schedule.m, schedule.placement
                )));
            }
        }
    }
    Ok(())
}

/// Runs one step of `schedule` over `stages` and returns the measured trace, times in
/// milliseconds from the first action's start. In process, `stages` are every model stage, in
/// model order, and every rank is a thread; with ranks as processes, they are this process's
/// rank's stages ([`Transport::held`]), in model order, and the trace is every rank's.
pub fn execute<S: StageWork>(schedule: &Schedule, stages: &mut [S], opts: &ExecOptions) -> Result<Trace> {
    #[cfg(feature = "mpi")]
    if let Transport::Mpi(mpi) = &opts.transport {
        return processes::execute(schedule, stages, opts, mpi);
    }
    check_structure(schedule, stages.len())?;
    check_updates(schedule, opts)?;
    let p = schedule.p;
    let links: Links<S::Payload> = Links::new(schedule.stages(), schedule.m, |s| schedule.rank_of(s));
    let abort = AtomicBool::new(false);
    let mut per_rank: Vec<(usize, Vec<(usize, &mut S)>)> = (0..p).map(|r| (r, Vec::new())).collect();
    for (s, stage) in stages.iter_mut().enumerate() {
        per_rank[schedule.rank_of(s)].1.push((s, stage));
    }
    let records = run_ranks(schedule, per_rank, &links, &abort, opts, Instant::now())?;
    Ok(assemble(schedule, records))
}

/// Refuses updates worked out for another schedule (a worker would read them out of place).
fn check_updates(schedule: &Schedule, opts: &ExecOptions) -> Result<()> {
    match &opts.updates {
        Some(u) if !u.fits(schedule) => Err(Error::Usage(format!(
            "the weight updates given were worked out for another schedule than {}; make them from it",
            schedule.name
        ))),
        _ => Ok(()),
    }
}

/// Runs rank `rank`'s lane of one step of `schedule` on `stages` (its stages, by model stage)
/// — the other ranks being other processes that `links` (from [`Links::remote`]) reach, and
/// `abort` set when one of them fails — and returns what the rank recorded, for
/// [`assemble`] where the ranks' records are gathered. Times are milliseconds since this call.
pub fn execute_rank<S: StageWork>(
    schedule: &Schedule,
    rank: usize,
    stages: Vec<(usize, &mut S)>,
    links: &Links<S::Payload>,
    abort: &AtomicBool,
    opts: &ExecOptions,
) -> Result<RankRecord> {
    check_structure(schedule, schedule.stages())?;
    check_updates(schedule, opts)?;
    let held: Vec<usize> = stages.iter().map(|(s, _)| *s).collect();
    if held != schedule.stages_of(rank) {
        return Err(Error::Usage(format!(
            "rank {rank} holds stages {:?} in this schedule but was given {held:?}",
            schedule.stages_of(rank)
        )));
    }
    let mut records = run_ranks(schedule, vec![(rank, stages)], links, abort, opts, Instant::now())?;
    records.pop().ok_or(Error::Aborted)
}

/// Runs each of `ranks` (a rank and its stages) on a thread of its own, by the shutdown
/// protocol above, and returns their records in the order given, times in milliseconds since
/// `t0`.
fn run_ranks<S: StageWork>(
    schedule: &Schedule,
    ranks: Vec<(usize, Vec<(usize, &mut S)>)>,
    links: &Links<S::Payload>,
    abort: &AtomicBool,
    opts: &ExecOptions,
    t0: Instant,
) -> Result<Vec<RankRecord>> {
    let board = Board::new(schedule.p);
    for r in (0..schedule.p).filter(|r| !ranks.iter().any(|(mine, _)| mine == r)) {
        board.set(r, 0, Phase::Elsewhere);
    }
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let shared = Shared {
        schedule,
        links,
        board: &board,
        abort,
        t0,
        timeout: opts.timeout,
        splits: schedule.split_stages(),
        updates: opts.updates.as_deref(),
    };
    let fail = |e: Error| {
        if !matches!(e, Error::Aborted) {
            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }
        abort.store(true, Ordering::Relaxed);
    };
    let records: Vec<Option<RankRecord>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranks
            .into_iter()
            .map(|(r, mine)| {
                let (shared, fail) = (&shared, &fail);
                std::thread::Builder::new().name(format!("pipesched-rank-{r}")).spawn_scoped(scope, move || {
                    let result = catch_unwind(AssertUnwindSafe(|| Worker::new(r, shared, mine).run()));
                    match result {
                        Ok(Ok(record)) => Some(record),
                        Ok(Err(e)) => {
                            fail(e);
                            None
                        }
                        Err(panic) => {
                            let message = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "unknown panic".into());
                            shared.board.set(r, 0, Phase::Stopped);
                            fail(Error::WorkerPanic { rank: r, message });
                            None
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(handle) => handle.join().unwrap_or(None),
                Err(e) => {
                    fail(Error::Io {
                        action: "cannot start a worker thread",
                        path: "pipesched-rank".into(),
                        source: e,
                    });
                    None
                }
            })
            .collect()
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    records.into_iter().map(|r| r.ok_or(Error::Aborted)).collect()
}

/// Moves every span that starts before its predecessor on the same rank ends to start there,
/// keeping its length; returns whether any moved.
fn sequential(spans: &mut [Span]) -> bool {
    let mut moved = false;
    for k in 1..spans.len() {
        let before = spans[k - 1].end;
        let sp = &mut spans[k];
        if sp.start < before {
            let shift = before - sp.start;
            sp.start += shift;
            sp.end += shift;
            moved = true;
        }
    }
    moved
}

/// Builds the trace, shifting time so the first action starts at 0. Every worker ran its whole
/// lane in order, so a rank's spans are its lane's actions, index for index. Each rank's bytes
/// come from its [`Ledger`]: what it held after each action, and the payloads it consumed, in
/// flight from their send (the producer's end, on this rank for a hand-over) to their consumer's
/// start — all at the spans' final times.
pub fn assemble(schedule: &Schedule, records: Vec<RankRecord>) -> Trace {
    let origin = records.iter().filter_map(|r| r.spans.first().map(|s| s.start)).fold(f64::INFINITY, f64::min);
    let origin = if origin.is_finite() { origin } else { 0.0 };
    let shift = |t: f64| (t - origin).max(0.0);
    let device_timed = records.iter().any(|r| r.device_timed);
    let mut transfers = Vec::new();
    let mut spans: Vec<Vec<Span>> = Vec::with_capacity(records.len());
    for rec in &records {
        transfers.extend(rec.received.iter().map(|&t| Transfer {
            sent: shift(t.sent),
            received: shift(t.received),
            ..t
        }));
        spans.push(rec.spans.iter().map(|&s| Span { start: shift(s.start), end: shift(s.end), ..s }).collect());
    }
    if device_timed {
        align_device_times(&mut spans, &mut transfers);
    }
    // The sums over replicas. A stage hands its gradients over inside its last backward: its
    // sum starts where that span ends (after any move onto device times), as the simulator has it.
    let sums: Vec<Vec<GradientSum>> = if records.iter().all(|r| r.sums.is_empty()) {
        Vec::new()
    } else {
        records
            .iter()
            .zip(&spans)
            .map(|(r, spans)| {
                r.sums
                    .iter()
                    .map(|s| {
                        let last = spans.iter().rev().find(|sp| sp.action.stage() == s.stage).map_or(0.0, |sp| sp.end);
                        let start = shift(s.start).max(last);
                        GradientSum { start, end: shift(s.end).max(start), ..*s }
                    })
                    .collect()
            })
            .collect()
    };
    transfers.sort_by(|a, b| a.sent.total_cmp(&b.sent));
    let sent_at: std::collections::HashMap<Action, f64> = transfers.iter().map(|t| (t.to, t.sent)).collect();
    let splits = schedule.split_stages();
    let ranks = spans
        .iter()
        .zip(records)
        .zip(&schedule.lanes)
        .map(|((spans, rec), lane)| {
            debug_assert!(spans.iter().map(|s| s.action).eq(lane.iter().copied()));
            let mut ledger = Ledger::new(rec.held_at_start);
            for (k, (sp, &after)) in spans.iter().zip(&rec.held_after).enumerate() {
                // Host before device: an offload's host copy exists from its start (ledger rule 4).
                if let Some(&host) = rec.host_after.get(k) {
                    ledger.host(sp.start, sp.end, host);
                }
                ledger.action_holding(sp.start, sp.end, rec.working.get(k).copied().unwrap_or(0), after);
            }
            // A hand-over between stages of this rank was sent when its producer ended.
            let ends: std::collections::HashMap<Action, f64> = if rec.inbound.is_empty() {
                Default::default()
            } else {
                spans.iter().map(|s| (s.action, s.end)).collect()
            };
            for &(step, bytes) in &rec.inbound {
                let consumer = spans[step];
                let sent = sent_at.get(&consumer.action).copied().or_else(|| {
                    let producer = consumes(consumer.action, schedule.stages())?.producer(&splits);
                    ends.get(&producer).copied()
                });
                if let Some(sent) = sent {
                    ledger.message(sent, consumer.start, bytes);
                }
            }
            let host = ledger.take_host();
            RankTrace {
                actions: lane.clone(),
                start: spans.iter().map(|s| s.start).collect(),
                end: spans.iter().map(|s| s.end).collect(),
                memory: ledger.finish(),
                host,
            }
        })
        .collect();
    Trace {
        source: Source::Measured,
        schedule: schedule.name.clone(),
        p: schedule.p,
        v: schedule.v,
        m: schedule.m,
        placement: schedule.placement,
        time_unit: "ms".into(),
        ranks,
        transfers: Transfers::Recorded(transfers),
        sums,
    }
}

/// Messages were stamped on host clocks, which run ahead of a GPU's queue: place each at the
/// producer's device end, and its arrival no later than the consumer's device start. A
/// consumer's start mark may be reached before its input exists (its first kernel then waits on
/// the GPU): its work starts when the input does.
fn align_device_times(ranks: &mut [Vec<Span>], transfers: &mut [Transfer]) {
    let mut at = std::collections::HashMap::new();
    for (r, rank) in ranks.iter().enumerate() {
        for (k, sp) in rank.iter().enumerate() {
            at.insert(sp.action, (r, k));
        }
    }
    let edges: Vec<_> = transfers.iter().filter_map(|t| Some((*at.get(&t.from)?, *at.get(&t.to)?))).collect();
    // A correction can move a producer's end, so repeat until nothing moves (at most one
    // pass per edge along the longest chain).
    for _ in 0..=edges.len() {
        let mut moved = false;
        for &((pr, pk), (cr, ck)) in &edges {
            // A `B` hands its gradient on when its `I` part is done, before it ends, so only
            // its start bounds the consumer's. (Between two GPUs the consumer's stream waits
            // for the whole `B`; that wait then stays inside the consumer's span.)
            let producer = &ranks[pr][pk];
            let end = if producer.action.op == pipesched_schedules::Op::B { producer.start } else { producer.end };
            let consumer = &mut ranks[cr][ck];
            if consumer.start < end {
                consumer.start = end;
                consumer.end = consumer.end.max(end);
                moved = true;
            }
        }
        for r in ranks.iter_mut() {
            moved |= sequential(r);
        }
        if !moved {
            break;
        }
    }
    for t in transfers.iter_mut() {
        if let (Some(&(pr, pk)), Some(&(cr, ck))) = (at.get(&t.from), at.get(&t.to)) {
            // (A `B`'s gradient leaves before the `B` ends: at the consumer's start at the latest.)
            let (producer, start) = (&ranks[pr][pk], ranks[cr][ck].start);
            t.sent = producer.end.min(start).max(producer.start);
            t.received = t.received.min(start).max(t.sent);
        }
    }
}
