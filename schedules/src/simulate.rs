//! `simulate`: a deterministic simulation of a schedule under a cost model.
//!
//! Semantics (DESIGN.md): each rank runs its lane strictly in order; an action starts at the
//! later of the end of the previous action on its rank and the arrival of the message it needs;
//! a message between ranks arrives `c + b/B` after its producer ends — the latency, plus its
//! bytes over the bandwidth when one is given — and occupies neither device; between stages of
//! one rank it is free. The delay of each stage's activation and gradient is worked out once,
//! before the walk ([`CostModel::message_delays`]), so a message costs the walk one lookup. The
//! times come from one linear walk of the lanes ([`walk`](crate::walk)), so a run is a pure
//! function of its inputs.
//!
//! Memory, by the [`Ledger`]'s rule (the executor's): `F` adds the bytes it keeps, `R` what it
//! re-creates; `I` sets its micro-batch to what `W` needs — growing at its start when that is
//! more (the output gradients a weight gradient needs are new), shrinking at its end when less —
//! and `W` or `B` frees it. A backward holds `act_bytes + recompute_bytes` at some point: where no
//! `R` brought its micro-batch there first (`optimal`, which recomputes between the steps of its
//! `I`), it holds the excess over the larger of before and after only while it runs, as working
//! bytes. In a forward-only schedule nothing is kept for a backward: `F` holds
//! its stage's `act_bytes` (then the input it consumes and the output it computes into) only
//! while it runs. Static bytes are live from time 0. Every (stage, micro-batch) lives on
//! one rank, so each rank's held bytes follow from its own lane alone, fed to its ledger as the
//! walk runs the lane; messages (sized by the producing stage's `fwd_msg_bytes` / `bwd_msg_bytes`) count on
//! their consumer from their producer's end to the consumer's start.
//!
//! Offload: `O` moves what its micro-batch holds (its forward's `act_bytes`) from the device to
//! the rank's host count, `L` moves it back; each takes the stage's `act_bytes` over the cost
//! model's [`HostLink`](crate::HostLink) ([`CostModel::transfer_time`]) and runs on the rank's
//! timeline like any other action (no copy stream: the serial bound of PipeOffload's overlap).
//! The host bytes form the trace's second curve ([`RankTrace::host`]).

use crate::action::{Action, Op};
use crate::cost::{CostModel, StageCost};
use crate::data_parallel::DataParallel;
use crate::deps::message_slots;
use crate::deps::{consumes, Flow};
use crate::error::Result;
use crate::ledger::Ledger;
use crate::prefetch::prefetch;
use crate::schedule::Schedule;
use crate::stats::{Stats, Tally};
use crate::trace::{RankTrace, Source, Trace, Transfers};
use crate::updates::Updates;
use crate::validate::{check_structure, validate};
use crate::walk::{walk, Ran, Times};

/// Simulates one step of `schedule` under `costs`.
///
/// Fails if the schedule does not validate (the error is `validate`'s, with the grid; rules 1–4
/// are checked first, a deadlock by the simulation's own walk), or if the cost model does not fit
/// it.
pub fn simulate(schedule: &Schedule, costs: &CostModel) -> Result<Trace> {
    simulate_with(schedule, costs, None)
}

/// [`simulate`] for a run whose stages update their weights as `updates` says, a version of
/// stage `s` being `version_bytes[s]` bytes: the held bytes also count the versions stashed
/// after each action ([`Updates::stash_bytes`]), as the executor's ledger does.
pub fn simulate_updates(
    schedule: &Schedule,
    costs: &CostModel,
    updates: &Updates,
    version_bytes: &[u64],
) -> Result<Trace> {
    if !updates.fits(schedule) {
        return Err(crate::Error::BadArgs {
            schedule: schedule.name.clone(),
            reason: "the weight updates were worked out for another schedule; make them from this one".into(),
        });
    }
    let stash = updates.stash_bytes(version_bytes)?;
    simulate_with(schedule, costs, Some(&stash))
}

/// [`simulate`], with the stashed bytes of each rank after each action when there are any.
fn simulate_with(schedule: &Schedule, costs: &CostModel, stash: Option<&[Vec<u64>]>) -> Result<Trace> {
    let (ranks, _, _, delays) = run(schedule, costs, true, stash)?;
    // Without a bandwidth every message between ranks takes `c`: the trace says just that.
    let transfers = match costs.bandwidth {
        None => Transfers::Latency(costs.latency),
        Some(_) => Transfers::Delays(delays),
    };
    Ok(Trace {
        source: Source::Simulated,
        schedule: schedule.name.clone(),
        p: schedule.p,
        v: schedule.v,
        m: schedule.m,
        placement: schedule.placement,
        time_unit: costs.time_unit.clone(),
        ranks,
        transfers,
        sums: Vec::new(),
    })
}

/// [`simulate`] with data parallelism: the step of one of `dp`'s replicas, with each stage's
/// gradient sum over the replicas as spans of [`Trace::sums`] — each starting when its stage's
/// last backward ends, on its rank's communication thread, over `costs`' link (see
/// [`DataParallel`]). The stage gradients are `grad_bytes`: one value for every rank, one per
/// rank, or one per stage. The compute, and so the [`Stats`], are those of [`simulate`]; the
/// step ends at [`Trace::step_end`].
pub fn simulate_data_parallel(
    schedule: &Schedule,
    costs: &CostModel,
    dp: DataParallel,
    grad_bytes: &[u64],
) -> Result<Trace> {
    let mut trace = simulate(schedule, costs)?;
    if dp.sums() {
        trace.sums = dp.spans(&trace, costs, grad_bytes)?;
    }
    Ok(trace)
}

/// The [`Stats`] of one simulated step, equal to `Stats::of(&simulate(schedule, costs)?)` but
/// computed as the simulation runs, without keeping its spans: 16 bytes per action less to
/// allocate and write. Fails as [`simulate`] does.
pub fn simulate_stats(schedule: &Schedule, costs: &CostModel) -> Result<Stats> {
    let (_, tallies, peaks, _) = run(schedule, costs, false, None)?;
    Ok(Stats::from_tallies(&tallies, &peaks))
}

/// How many spans ahead of a running rank its start and end times are prefetched: one cache
/// line of `f64`s.
const SPANS_AHEAD: usize = 8;

/// One walk of `schedule` under `costs`: each rank's trace when `trace` (spans and memory curve;
/// empty ranks otherwise), the tally of its spans, its peaks (total, held) for the stats, and the
/// delay of every (stage, flow)'s messages ([`CostModel::message_delays`]).
/// Without the trace, no memory curve is made: the peaks are read as it is merged. `stash`, when
/// given, is what each rank holds of stashed weight versions after each action.
#[allow(clippy::type_complexity)]
fn run(
    schedule: &Schedule,
    costs: &CostModel,
    trace: bool,
    stash: Option<&[Vec<u64>]>,
) -> Result<(Vec<RankTrace>, Vec<Tally>, Vec<(u64, u64)>, Vec<[f64; 2]>)> {
    check_structure(schedule)?;
    let (stage_costs, statics) = costs.resolve(schedule)?;
    let (stages, m) = (schedule.stages(), schedule.m);
    // Without per-micro-batch bytes, held bytes stay at the static ones; without message bytes,
    // nothing is in flight: the walk then feeds the ledgers nothing.
    let keeps = stash.is_some_and(|s| s.iter().flatten().any(|&b| b > 0))
        || stage_costs.iter().any(|c| c.act_bytes > 0 || c.recompute_bytes > 0 || c.w_bytes > 0);
    // The stashed bytes each rank's ledger holds now.
    let mut stashed = vec![0u64; schedule.lanes.len()];
    let forward_only = schedule.is_forward_only();
    let sends = stage_costs.iter().any(|c| c.fwd_msg_bytes > 0 || c.bwd_msg_bytes > 0);
    // What each (stage, micro-batch) holds now, by `stage·m + micro-batch`.
    let mut held = vec![0u64; if keeps { stages * m } else { 0 }];
    let mut ranks: Vec<RankTrace> = schedule
        .lanes
        .iter()
        .map(|lane| {
            let room = if trace { lane.len() } else { 0 };
            RankTrace {
                actions: lane.clone(),
                start: Vec::with_capacity(room),
                end: Vec::with_capacity(room),
                memory: Vec::new(),
                host: Vec::new(),
            }
        })
        .collect();
    // Room for a change and a message per action: the ledgers never reallocate, and hold what
    // the estimate (`Footprint::simulation_bytes`) counts.
    let mut ledgers: Vec<Ledger> = statics
        .into_iter()
        .zip(&schedule.lanes)
        .map(|(base, lane)| {
            let n = lane.len();
            Ledger::with_capacity(base, if keeps { n } else { 0 }, if sends { n } else { 0 })
        })
        .collect();
    let mut tallies = vec![Tally::default(); schedule.lanes.len()];
    // Stages that offload: their `O` and `L` are timed over the host link, which must exist.
    let mut offloads = vec![false; stages];
    for a in schedule.actions().filter(|a| a.op.is_transfer()) {
        offloads[a.stage()] = true;
    }
    // Each stage's durations by op, side by side: 56 bytes a stage rather than its whole cost.
    let durations: Vec<[f64; Op::ALL.len()]> = stage_costs
        .iter()
        .enumerate()
        .map(|(s, c)| {
            let mut d = [0.0; Op::ALL.len()];
            for op in Op::ALL {
                d[op as usize] = match op {
                    Op::O | Op::L if offloads[s] => costs.transfer_time(op, s, c)?,
                    _ => c.duration(op),
                };
            }
            Ok(d)
        })
        .collect::<Result<_>>()?;
    // What each (stage, micro-batch) holds in host memory now, for the pairs that offload.
    let mut on_host = vec![0u64; if offloads.contains(&true) { stages * m } else { 0 }];
    let duration = |a: Action| durations[a.stage()][a.op as usize];
    let delays = costs.message_delays(schedule, &stage_costs);
    let mut post = Times::new(message_slots(stages, m), &delays);
    let walked = if trace || keeps || sends {
        walk(schedule, &mut post, duration, |ran| {
            let Ran { rank, step, action: a, start, end, received } = ran;
            tallies[rank].span(a.op, start, end);
            if trace {
                let kept = &mut ranks[rank];
                prefetch(kept.start.as_ptr().wrapping_add(step + SPANS_AHEAD));
                prefetch(kept.end.as_ptr().wrapping_add(step + SPANS_AHEAD));
                kept.start.push(start);
                kept.end.push(end);
            }
            if keeps {
                let now = stash.map_or(0, |s| s[rank][step]);
                let extra = (stashed[rank], now);
                stashed[rank] = now;
                let k = a.stage() * m + a.mb();
                if a.op.is_transfer() {
                    transfer(&mut ledgers[rank], &mut held[k], &mut on_host[k], ran);
                } else {
                    hold(&mut ledgers[rank], &stage_costs[a.stage()], &mut held[k], extra, forward_only, ran);
                }
            }
            if let (true, Some(sent)) = (sends, received) {
                // The walk received a message, so `a` consumes one.
                if let Some(msg) = consumes(a, stages) {
                    let from = &stage_costs[msg.from];
                    let bytes = match msg.flow {
                        Flow::Activation => from.fwd_msg_bytes,
                        Flow::Gradient => from.bwd_msg_bytes,
                    };
                    ledgers[rank].message(sent, start, bytes);
                }
            }
        })
    } else {
        // The stats alone: a small loop.
        walk(schedule, &mut post, duration, |ran| tallies[ran.rank].span(ran.action.op, ran.start, ran.end))
    };
    if walked.is_err() {
        // Only a schedule that breaks a rule gets stuck; validate explains which.
        validate(schedule)?;
        return Err(crate::Error::Deadlock {
            reason: "the simulator stopped before every action ran, though the schedule validates; please report this schedule".into(),
            grid: schedule.grid(),
        });
    };
    let mut peaks = Vec::with_capacity(ranks.len());
    for (rank, mut ledger) in ranks.iter_mut().zip(ledgers) {
        if trace {
            rank.host = ledger.take_host();
            rank.memory = ledger.finish();
            peaks.push((rank.peak_bytes(), rank.peak_held_bytes()));
        } else {
            peaks.push(ledger.peaks());
        }
    }
    Ok((ranks, tallies, peaks, delays))
}

impl StageCost {
    /// How long `op` takes on this stage (`B = I + W`, `R` defaults to `F`).
    pub fn duration(&self, op: Op) -> f64 {
        match op {
            Op::F => self.f,
            Op::B => self.i + self.w,
            Op::I => self.i,
            Op::W => self.w,
            Op::R => self.t_r(),
            // Without a host link the stage's copies take nothing; `CostModel::transfer_time`
            // times them over one.
            Op::O | Op::L => 0.0,
        }
    }
}

/// Feeds `ledger` the copy `ran` (an `O` or `L`) makes of its (stage, micro-batch): an offload
/// moves everything the pair holds on the device (`device`) to the host (`host`), a reload moves
/// it back. Stashed weight versions change only with the stage's own ops, so none change here.
fn transfer(ledger: &mut Ledger, device: &mut u64, host: &mut u64, ran: Ran) {
    let (moved, to_host) = match ran.action.op {
        Op::O => (*device, true),
        _ => (*host, false),
    };
    let (dev_before, host_before) = (ledger.held(), ledger.host_held());
    if to_host {
        ledger.host(ran.start, ran.end, host_before + moved);
        ledger.action(ran.start, ran.end, dev_before - moved);
        (*device, *host) = (0, *host + moved);
    } else {
        ledger.action(ran.start, ran.end, dev_before + moved);
        ledger.host(ran.start, ran.end, host_before - moved);
        (*device, *host) = (*device + moved, 0);
    }
}

/// Feeds `ledger` what the action `ran` leaves its (stage, micro-batch) holding under its
/// stage's `cost` (see the module doc); `held` is what that pair held before it; `stash` the
/// rank's stashed weight bytes before and after it; `forward_only`: the schedule keeps nothing
/// for a backward, and `F` holds its `act_bytes` only while it runs.
fn hold(ledger: &mut Ledger, cost: &StageCost, held: &mut u64, stash: (u64, u64), forward_only: bool, ran: Ran) {
    let before = ledger.held();
    if forward_only {
        ledger.action_holding(ran.start, ran.end, cost.act_bytes, before - stash.0 + stash.1);
        return;
    }
    let now = match ran.action.op {
        Op::F => *held + cost.act_bytes,
        Op::R => *held + cost.recompute_bytes,
        // What W needs can exceed what F kept (a Linear keeps its output gradient for W).
        Op::I => cost.w_bytes,
        Op::W | Op::B => 0,
        // `run` hands copies to `transfer`.
        Op::O | Op::L => *held,
    };
    // A backward holds what `F` and `R` keep, `act_bytes + recompute_bytes`, at some point: when
    // no `R` ran before it (`optimal`, which recomputes between its steps, or a skipped `R`), it
    // holds that only while it runs — working bytes above the larger of before and after.
    let working = match ran.action.op {
        Op::I | Op::B => cost.act_bytes.saturating_add(cost.recompute_bytes).saturating_sub((*held).max(now)),
        _ => 0,
    };
    // `I` grows at its start when W needs more, shrinks at its end when less; the ledger takes
    // one change per action, so a growing `I` is recorded as such.
    ledger.action_holding(ran.start, ran.end, working, before - *held - stash.0 + now + stash.1);
    *held = now;
}
