//! `auto`: a one-chunk-per-rank `F`/`I`/`W` schedule built for a cost model and a memory limit,
//! after the automatic scheduling of Qi, Wan, Huang and Lin ("Zero Bubble Pipeline
//! Parallelism", ICLR 2024, §3): warm up with as many forwards as memory and a per-rank count
//! allow, then alternate `F` and `I`, fill bubbles with `W`, and run a `W` wherever memory would
//! otherwise overflow; try several warm-up counts and keep the best simulated schedule.
//!
//! Here the list scheduler ([`auto_greedy`](super::auto_greedy)) runs from a few families of
//! knobs — per rank, the forwards before its first `I` (as many as end before its first gradient
//! can arrive, one more, or no bound), the micro-batches that may wait for their `I` (`p−r`,
//! `2(p−r)`, or all that memory holds) and the `W`s kept back for the cool-down (none, `r`, `2r`,
//! `p−1−r`) — then a local search moves each rank's knobs by one while the objective improves. The handcrafted
//! 1F1B (with its `B` split into `I` then `W`), ZB-H1 and ZB-H2 compete too when they fit the
//! limit, so `auto` is never worse than any of them that fits; one micro-batch at a time on each
//! rank (`F`, `I`, `W`) is the fallback that fits every limit `auto` accepts. Last, the best one's
//! `W`s are moved one place at a time while that helps ([`auto_polish`](super::auto_polish)).
//!
//! Invariant: the schedule returned validates and, under the simulator's byte rule, no rank
//! ever holds more than `limit` activation bytes on top of its static bytes.

use super::auto_greedy::{greedy, Knobs, Problem};
use super::auto_polish::{polish, Scored};
use super::{check_pm, finish, one_f_one_b, zb_h1, zb_h2};
use crate::action::{Action, Op};
use crate::cost::CostModel;
use crate::error::{Error, Result};
use crate::schedule::{Placement, Schedule};
use crate::simulate::simulate_stats;

/// What [`auto`] minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// The simulated makespan (one step, time from 0; ties broken by the steady period).
    #[default]
    Makespan,
    /// The steady period: the longest span of a rank, what a step costs when steps overlap with
    /// no barrier between them (the Zero Bubble paper's measure; ties broken by the makespan).
    SteadyPeriod,
}

/// The most micro-batch passes of the list scheduler the local search may spend, counted in
/// actions: a few seconds at p = 32, m = 256.
const SEARCH_BUDGET: usize = 40_000_000;

/// Simulations of the final polish, counted in actions, as for [`SEARCH_BUDGET`].
const POLISH_BUDGET: usize = 6_000_000;

/// Rounds of the local search at most.
const ROUNDS: usize = 6;

/// An `F`/`I`/`W` schedule for `p` ranks (one stage each) and `m` micro-batches that minimises
/// `objective` under `costs` while no rank holds more than `limit` bytes of activations (what
/// `F` keeps, `act_bytes`, and what `I` keeps until `W`, `w_bytes`) on top of its static
/// bytes. Refuses a limit below one micro-batch's bytes on some stage, naming the minimum.
/// `auto(3, 6, &costs, 6, Objective::Makespan)` with `t_F = t_I = t_W = 1`, 2 bytes kept by
/// `F` and 1 from `I` until `W` — a limit of three micro-batches, where nothing beats ZB-H1's
/// shape:
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15   16   17   18   19
/// rank 0  0F0  0F1  0F2    .    .  0I0  0W0  0F3  0I1  0W1  0F4  0I2  0W2  0F5  0I3  0W3  0I4  0W4  0I5  0W5
/// rank 1    .  1F0  1F1    .  1I0  1F2  1I1  1W0  1F3  1I2  1W1  1F4  1I3  1W2  1F5  1I4  1W3  1I5  1W4  1W5
/// rank 2    .    .  2F0  2I0  2F1  2I1  2F2  2I2  2W0  2F3  2I3  2W1  2F4  2I4  2W2  2F5  2I5  2W3  2W4  2W5
/// ```
pub fn auto(p: usize, m: usize, costs: &CostModel, limit: u64, objective: Objective) -> Result<Schedule> {
    check_pm("auto", p, 1, m)?;
    let pb = problem(p, m, costs, limit)?;
    let key = |makespan: f64, steady: f64| match objective {
        Objective::Makespan => (makespan, steady),
        Objective::SteadyPeriod => (steady, makespan),
    };
    let better = |a: (f64, f64), b: (f64, f64)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).is_lt();
    // The handcrafted schedules that fit, and the fallback.
    let mut fixed = vec![one_at_a_time(p, m), split(one_f_one_b(p, m)?), zb_h1(p, m)?.lanes_vec()];
    if m >= 2 * p {
        fixed.push(zb_h2(p, m)?.lanes_vec());
    }
    let mut best: Option<Scored> = None;
    for lanes in fixed.into_iter().filter(|l| fits(&pb, l)) {
        let st = simulate_stats(&finish("auto", p, 1, m, lanes.clone())?, costs)?;
        let k = key(st.makespan, st.steady_period);
        if best.as_ref().is_none_or(|b| better(k, b.0)) {
            best = Some((k, lanes));
        }
    }
    // The list scheduler from each family of knobs, then a local search from the best.
    let caps: Vec<usize> = (0..p).map(|r| pb.memory_cap(r)).collect();
    let mut start: Option<((f64, f64), Knobs)> = None;
    let mut passes = 0usize;
    let run = |k: &Knobs, passes: &mut usize| {
        *passes += 1;
        greedy(&pb, k).map(|plan| (key(plan.makespan, plan.steady), plan.lanes))
    };
    let warm = warm_up(&pb);
    for before in [0, 1, 2] {
        for inflight in [1, 2, 0] {
            for hold in [0, 1, 2, 3] {
                for fit in [false, true] {
                    let k = Knobs {
                        warm: (0..p).map(|r| if before == 2 { m } else { (warm[r] + before).min(m) }).collect(),
                        cap: (0..p)
                            .map(|r| if inflight == 0 { caps[r] } else { caps[r].min(inflight * (p - r)) })
                            .collect(),
                        reserve: (0..p).map(|r| if hold == 3 { p - 1 - r } else { hold * r }).collect(),
                        fit,
                    };
                    if let Some((got, _)) = run(&k, &mut passes) {
                        if start.as_ref().is_none_or(|s| better(got, s.0)) {
                            start = Some((got, k));
                        }
                    }
                }
            }
        }
    }
    if let Some((mut here, mut k)) = start {
        let budget = SEARCH_BUDGET / (3 * p * m).max(1);
        for _ in 0..ROUNDS {
            let mut moved = false;
            for (r, field, step) in moves(p) {
                if passes >= budget {
                    break;
                }
                let mut next = k.clone();
                if !nudge(&mut next, r, field, step, &caps, m) {
                    continue;
                }
                if let Some((got, _)) = run(&next, &mut passes) {
                    if better(got, here) {
                        (here, k, moved) = (got, next, true);
                    }
                }
            }
            if !moved || passes >= budget {
                break;
            }
        }
        if best.as_ref().is_none_or(|b| better(here, b.0)) {
            let plan = greedy(&pb, &k).expect("the knobs just ran");
            best = Some((here, plan.lanes));
        }
    }
    let (here, lanes) = best.expect("the one-at-a-time schedule fits every accepted limit");
    let budget = POLISH_BUDGET / (3 * p * m).max(1);
    let fits_lane = |r: usize, lane: &[Action]| fits_one(&pb, r, lane);
    let (_, lanes) = polish(costs, m, lanes, here, key, fits_lane, budget)?;
    finish("auto", p, 1, m, lanes)
}

/// The per-rank problem of `costs` for `p` ranks and `m` micro-batches under `limit`.
fn problem(p: usize, m: usize, costs: &CostModel, limit: u64) -> Result<Problem> {
    let shape = Schedule::new("auto", p, 1, m, Placement::Loop, vec![Vec::new(); p]);
    let (stages, _) = costs.resolve(&shape)?;
    let delays = costs.message_delays(&shape, &stages);
    let need = |r: usize| stages[r].act_bytes.max(stages[r].w_bytes);
    if let Some(r) = (0..p).find(|&r| need(r) > limit) {
        let most = (0..p).map(need).max().unwrap_or(0);
        return Err(Error::BadArgs {
            schedule: "auto".into(),
            reason: format!(
                "a memory limit of {limit} bytes is less than one micro-batch's activations on stage {r} ({} bytes kept by F, {} from I until W); give a limit of at least {most} bytes",
                stages[r].act_bytes, stages[r].w_bytes
            ),
        });
    }
    Ok(Problem {
        p,
        m,
        f: stages.iter().map(|c| c.f).collect(),
        i: stages.iter().map(|c| c.i).collect(),
        w: stages.iter().map(|c| c.w).collect(),
        act: stages.iter().map(|c| c.act_bytes).collect(),
        keep: stages.iter().map(|c| c.w_bytes).collect(),
        fwd: delays.iter().map(|d| d[0]).collect(),
        bwd: delays.iter().map(|d| d[1]).collect(),
        limit,
    })
}

/// For each rank, how many forwards end by the time its first gradient can arrive, when every
/// rank before it runs its forwards back to back (at least 1): the warm-up of the Zero Bubble
/// heuristic, before memory caps it.
fn warm_up(pb: &Problem) -> Vec<usize> {
    let p = pb.p;
    let first_start: Vec<f64> = (0..p)
        .scan(0.0, |t, r| {
            let here = *t;
            *t += pb.f[r] + pb.fwd[r];
            Some(here)
        })
        .collect();
    let last_f_end = first_start[p - 1] + pb.f[p - 1];
    let mut arrival = last_f_end;
    let mut warm = vec![1; p];
    for r in (0..p).rev() {
        if r + 1 < p {
            arrival += pb.i[r + 1] + pb.bwd[r + 1];
        }
        let room = (arrival - first_start[r]) / pb.f[r];
        warm[r] = if room.is_finite() { (room.floor() as usize).clamp(1, pb.m) } else { pb.m };
    }
    warm
}

/// Whether every lane stays within the limit under the byte rule (a lane's peak follows from its
/// order alone).
fn fits(pb: &Problem, lanes: &[Vec<Action>]) -> bool {
    lanes.iter().enumerate().all(|(r, lane)| fits_one(pb, r, lane))
}

/// Whether rank `r`'s lane stays within the limit.
fn fits_one(pb: &Problem, r: usize, lane: &[Action]) -> bool {
    let mut mem = 0u64;
    lane.iter().all(|a| {
        mem = match a.op {
            Op::F => mem + pb.act[r],
            Op::I => mem - pb.act[r] + pb.keep[r],
            _ => mem - pb.keep[r],
        };
        mem <= pb.limit
    })
}

/// Each rank runs `F`, `I` and `W` of one micro-batch before the next one's: one micro-batch's
/// bytes at a time.
fn one_at_a_time(p: usize, m: usize) -> Vec<Vec<Action>> {
    (0..p).map(|r| (0..m).flat_map(|j| [Op::F, Op::I, Op::W].map(|op| Action::new(r, op, j))).collect()).collect()
}

/// `s` with every `B` split into `I` then `W`.
fn split(s: Schedule) -> Vec<Vec<Action>> {
    let each = |a: &Action| match a.op {
        Op::B => vec![Action { op: Op::I, ..*a }, Action { op: Op::W, ..*a }],
        _ => vec![*a],
    };
    s.lanes.iter().map(|lane| lane.iter().flat_map(each).collect()).collect()
}

impl Schedule {
    /// The lanes as plain vectors.
    fn lanes_vec(&self) -> Vec<Vec<Action>> {
        self.lanes.iter().map(|l| l.to_vec()).collect()
    }
}

/// Which knob a move changes.
#[derive(Debug, Clone, Copy)]
enum Field {
    Warm,
    Cap,
    Reserve,
    Fit,
}

/// The moves of one round: each rank's warm-up, cap and reserve by ±1, every rank's at once, and `fit`
/// toggled. `None` as the rank: every rank.
fn moves(p: usize) -> Vec<(Option<usize>, Field, i64)> {
    let mut all = vec![(None, Field::Fit, 0)];
    for field in [Field::Warm, Field::Cap, Field::Reserve] {
        for step in [1, -1] {
            all.push((None, field, step));
            all.extend((0..p).map(|r| (Some(r), field, step)));
        }
    }
    all
}

/// Applies one move to `k`; `false` if it changes nothing.
fn nudge(k: &mut Knobs, rank: Option<usize>, field: Field, step: i64, caps: &[usize], m: usize) -> bool {
    if let Field::Fit = field {
        k.fit = !k.fit;
        return true;
    }
    let before = k.clone();
    let ranks: Vec<usize> = rank.map_or_else(|| (0..caps.len()).collect(), |r| vec![r]);
    for r in ranks {
        let (x, lo, hi) = match field {
            Field::Warm => (&mut k.warm[r], 1, m),
            Field::Cap => (&mut k.cap[r], 1, caps[r]),
            _ => (&mut k.reserve[r], 0, m),
        };
        *x = (*x as i64 + step).clamp(lo as i64, hi as i64) as usize;
    }
    *k != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{StageCost, StageCosts};

    /// Per-rank times with `act` bytes kept by `F` and `keep` from `I` until `W`.
    pub(crate) fn model(f: f64, i: f64, w: f64, act: u64, keep: u64) -> CostModel {
        let mut c = CostModel::per_rank(f, i, w);
        c.costs = StageCosts::PerRank(StageCost { act_bytes: act, w_bytes: keep, ..StageCost::times(f, i, w) });
        c
    }

    #[test]
    fn doc_picture_is_the_output() {
        let s = auto(3, 6, &model(1.0, 1.0, 1.0, 2, 1), 6, Objective::Makespan).unwrap();
        assert_eq!(s.grid(), super::super::doc_picture(include_str!("auto.rs"), 0));
    }

    #[test]
    fn refuses_a_limit_below_one_microbatch_naming_the_minimum() {
        let e = auto(4, 8, &model(1.0, 1.0, 1.0, 100, 120), 119, Objective::Makespan).unwrap_err().to_string();
        assert!(e.contains("at least 120 bytes") && e.contains("limit of 119 bytes"), "{e}");
        assert!(auto(4, 8, &model(1.0, 1.0, 1.0, 100, 120), 120, Objective::Makespan).is_ok());
    }

    #[test]
    fn the_tightest_limit_runs_one_microbatch_at_a_time() {
        let costs = model(1.0, 1.0, 1.0, 10, 5);
        let s = auto(3, 4, &costs, 10, Objective::Makespan).unwrap();
        let st = simulate_stats(&s, &costs).unwrap();
        assert!(st.peak_held_bytes.iter().all(|&b| b <= 10), "{:?}", st.peak_held_bytes);
    }
}
