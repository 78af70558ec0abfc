//! `validate`: the one check every schedule passes before it is simulated or executed.
//!
//! Rules, in the order they are checked (the first broken one is reported, with the schedule
//! grid and the offending step marked):
//! 1. shape: `p, v, m ≥ 1`, one lane per rank, `V` placement only with `v = 2`;
//! 2. every action names a stage `< p·v` and a micro-batch `< m`, on the rank holding the stage;
//! 3. every (stage, micro-batch) has exactly one `F`, and either one `B` or one `I` and one `W`,
//!    and at most one `R`;
//! 4. on its rank, `F` comes before `R`, `R` before `I`/`B`, `I` before `W`;
//! 5. no deadlock: running each lane in order, where an action waits until its inputs exist
//!    (DESIGN.md's blocking semantics: `F(s,j)` needs `F(s−1,j)`, `I/B(s,j)` needs
//!    `I/B(s+1,j)` and `F(s,j)`, `W(s,j)` needs `I(s,j)`), every lane finishes.

use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::grid;
use crate::schedule::{Placement, Schedule};

/// Checks `s` against every rule above.
pub fn validate(s: &Schedule) -> Result<()> {
    unit_clock(s).map(|_| ())
}

/// Validates `s` and returns, for every action, the tick it starts at on a unit clock (each
/// action takes one tick, transfers are free): `ticks[rank][step]`.
pub fn unit_clock(s: &Schedule) -> Result<Vec<Vec<usize>>> {
    check_shape(s)?;
    let table = Occurrences::collect(s)?;
    table.check_complete(s)?;
    table.check_order(s)?;
    run_to_completion(s)
}

fn invalid(s: &Schedule, marks: &[(usize, usize)], reason: String) -> Error {
    Error::Invalid { reason, grid: grid::render(&grid::packed_rows(s), marks) }
}

fn check_shape(s: &Schedule) -> Result<()> {
    let shape = |reason: String| Error::Invalid { reason, grid: String::new() };
    if s.p == 0 || s.v == 0 || s.m == 0 {
        return Err(shape(format!(
            "p (ranks), v (chunks per rank) and m (micro-batches) must all be at least 1; got p={}, v={}, m={}",
            s.p, s.v, s.m
        )));
    }
    if s.lanes.len() != s.p {
        return Err(shape(format!(
            "the schedule has p={} ranks but {} lanes; give one lane per rank",
            s.p,
            s.lanes.len()
        )));
    }
    if s.placement == Placement::V && s.v != 2 {
        return Err(shape(format!("V placement holds exactly 2 chunks per rank, but v={}", s.v)));
    }
    Ok(())
}

/// Where each (op, stage, micro-batch) occurs: `(rank, step)`.
struct Occurrences {
    m: usize,
    f: Vec<Option<(usize, usize)>>,
    b: Vec<Option<(usize, usize)>>,
    i: Vec<Option<(usize, usize)>>,
    w: Vec<Option<(usize, usize)>>,
    r: Vec<Option<(usize, usize)>>,
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::F => "forward",
        Op::B => "backward",
        Op::I => "input-gradient backward",
        Op::W => "weight-gradient backward",
        Op::R => "recompute",
    }
}

impl Occurrences {
    fn collect(s: &Schedule) -> Result<Occurrences> {
        let n = s.stages() * s.m;
        let mut t = Occurrences {
            m: s.m,
            f: vec![None; n],
            b: vec![None; n],
            i: vec![None; n],
            w: vec![None; n],
            r: vec![None; n],
        };
        for (rank, lane) in s.lanes.iter().enumerate() {
            for (step, a) in lane.iter().enumerate() {
                let here = [(rank, step)];
                if a.stage() >= s.stages() {
                    return Err(invalid(s, &here, format!(
                        "rank {rank}, step {step}: {a} names stage {}, but the model has {} stages (0..={}) with p={}, v={}",
                        a.stage, s.stages(), s.stages() - 1, s.p, s.v
                    )));
                }
                if a.mb() >= s.m {
                    return Err(invalid(s, &here, format!(
                        "rank {rank}, step {step}: {a} names micro-batch {}, but the schedule has m={} micro-batches (0..={})",
                        a.microbatch, s.m, s.m - 1
                    )));
                }
                let owner = s.rank_of(a.stage());
                if owner != rank {
                    return Err(invalid(s, &here, format!(
                        "rank {rank}, step {step}: {a} runs stage {} on rank {rank}, but {} placement puts stage {} on rank {owner}",
                        a.stage, s.placement, a.stage
                    )));
                }
                let slot = &mut t.slots(a.op)[a.stage() * s.m + a.mb()];
                if let Some((r0, k0)) = *slot {
                    return Err(invalid(
                        s,
                        &[(r0, k0), (rank, step)],
                        format!(
                            "duplicate {}: {a} appears at rank {r0}, step {k0} and again at rank {rank}, step {step}",
                            op_name(a.op)
                        ),
                    ));
                }
                *slot = Some((rank, step));
            }
        }
        Ok(t)
    }

    fn slots(&mut self, op: Op) -> &mut Vec<Option<(usize, usize)>> {
        match op {
            Op::F => &mut self.f,
            Op::B => &mut self.b,
            Op::I => &mut self.i,
            Op::W => &mut self.w,
            Op::R => &mut self.r,
        }
    }

    fn check_complete(&self, s: &Schedule) -> Result<()> {
        for stage in 0..s.stages() {
            for mb in 0..self.m {
                let k = stage * self.m + mb;
                let name = |op| Action::new(stage, op, mb);
                let rank = s.rank_of(stage);
                let any = [self.b[k], self.i[k], self.w[k], self.r[k]].into_iter().flatten().next();
                let Some(f) = self.f[k] else {
                    let marks: Vec<_> = any.into_iter().collect();
                    return Err(invalid(
                        s,
                        &marks,
                        format!(
                        "missing forward: stage {stage}, micro-batch {mb} has no {} (expected in rank {rank}'s lane)",
                        name(Op::F)
                    ),
                    ));
                };
                match (self.b[k], self.i[k], self.w[k]) {
                    (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                    (None, None, None) => {
                        return Err(invalid(s, &[f], format!(
                            "missing backward: {} (rank {}, step {}) has no backward; add {} or both {} and {} to rank {rank}'s lane",
                            name(Op::F), f.0, f.1, name(Op::B), name(Op::I), name(Op::W)
                        )))
                    }
                    (Some(b), _, _) => {
                        let other = self.i[k].or(self.w[k]).unwrap_or(b);
                        return Err(invalid(s, &[b, other], format!(
                            "stage {stage}, micro-batch {mb} has both a full backward {} and a split one (I/W); use one or the other",
                            name(Op::B)
                        )));
                    }
                    (None, Some(i), None) => {
                        return Err(invalid(s, &[i], format!(
                            "missing weight gradient: {} at rank {}, step {} has no matching {}",
                            name(Op::I), i.0, i.1, name(Op::W)
                        )))
                    }
                    (None, None, Some(w)) => {
                        return Err(invalid(s, &[w], format!(
                            "missing input gradient: {} at rank {}, step {} has no matching {} before it",
                            name(Op::W), w.0, w.1, name(Op::I)
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    fn check_order(&self, s: &Schedule) -> Result<()> {
        let before =
            |first: Option<(usize, usize)>, later: Option<(usize, usize)>, a: Action, b: Action, what: &str| match (
                first, later,
            ) {
                (Some(x), Some(y)) if y.1 < x.1 => Err(invalid(
                    s,
                    &[y, x],
                    format!("{what}: {b} at rank {}, step {} comes before {a} at step {}", y.0, y.1, x.1),
                )),
                _ => Ok(()),
            };
        for stage in 0..s.stages() {
            for mb in 0..self.m {
                let k = stage * self.m + mb;
                let a = |op| Action::new(stage, op, mb);
                let back = self.b[k].or(self.i[k]);
                let back_op = if self.b[k].is_some() { Op::B } else { Op::I };
                before(self.f[k], back, a(Op::F), a(back_op), "backward before its forward")?;
                before(self.f[k], self.r[k], a(Op::F), a(Op::R), "recompute before its forward")?;
                before(self.r[k], back, a(Op::R), a(back_op), "backward before its recompute")?;
                before(self.i[k], self.w[k], a(Op::I), a(Op::W), "W before I")?;
            }
        }
        Ok(())
    }
}

/// What an action waits for, as an index into the per-(kind, stage, micro-batch) done table.
/// Kinds: 0 = forward done, 1 = input gradient done (`I` or `B`), 2 = `I` done.
fn key(kind: usize, stage: usize, mb: usize, stages: usize, m: usize) -> usize {
    (kind * stages + stage) * m + mb
}

/// The inputs `a` waits for, as `(key, producing action)`.
/// `splits[s]` says whether stage `s` runs `I`/`W` (it names the producer in messages).
pub(crate) fn inputs(a: Action, stages: usize, m: usize, splits: &[bool]) -> impl Iterator<Item = (usize, Action)> {
    let (s, j) = (a.stage(), a.mb());
    let back_op = if splits.get(s + 1).copied().unwrap_or(false) { Op::I } else { Op::B };
    let first = match a.op {
        Op::F if s > 0 => Some((key(0, s - 1, j, stages, m), Action::new(s - 1, Op::F, j))),
        Op::B | Op::I | Op::R => Some((key(0, s, j, stages, m), Action::new(s, Op::F, j))),
        Op::W => Some((key(2, s, j, stages, m), Action::new(s, Op::I, j))),
        Op::F => None,
    };
    let second = match a.op {
        Op::B | Op::I if s + 1 < stages => Some((key(1, s + 1, j, stages, m), Action::new(s + 1, back_op, j))),
        _ => None,
    };
    first.into_iter().chain(second)
}

/// The done-table keys an action completes.
pub(crate) fn outputs(a: Action, stages: usize, m: usize) -> impl Iterator<Item = usize> {
    let (s, j) = (a.stage(), a.mb());
    let ks: [Option<usize>; 2] = match a.op {
        Op::F => [Some(key(0, s, j, stages, m)), None],
        Op::B => [Some(key(1, s, j, stages, m)), None],
        Op::I => [Some(key(1, s, j, stages, m)), Some(key(2, s, j, stages, m))],
        Op::W | Op::R => [None, None],
    };
    ks.into_iter().flatten()
}

/// Number of keys in the done table.
pub(crate) fn num_keys(stages: usize, m: usize) -> usize {
    3 * stages * m
}

/// Runs every lane in order on a unit clock; reports a deadlock with each stuck rank marked.
fn run_to_completion(s: &Schedule) -> Result<Vec<Vec<usize>>> {
    let (stages, m, p) = (s.stages(), s.m, s.p);
    // done[key] = tick at which the producing action ended, once it has run.
    let mut done: Vec<Option<usize>> = vec![None; num_keys(stages, m)];
    let mut waiters: Vec<Vec<usize>> = vec![Vec::new(); num_keys(stages, m)];
    let mut next = vec![0usize; p];
    let mut free = vec![0usize; p];
    let mut ticks: Vec<Vec<usize>> = s.lanes.iter().map(|l| Vec::with_capacity(l.len())).collect();
    let mut ready: Vec<usize> = (0..p).rev().collect();
    let splits: Vec<bool> = split_table(s);
    while let Some(r) = ready.pop() {
        'lane: while next[r] < s.lanes[r].len() {
            let a = s.lanes[r][next[r]];
            let mut start = free[r];
            for (k, _) in inputs(a, stages, m, &splits) {
                match done[k] {
                    Some(end) => start = start.max(end),
                    None => {
                        waiters[k].push(r);
                        break 'lane;
                    }
                }
            }
            ticks[r].push(start);
            free[r] = start + 1;
            next[r] += 1;
            for k in outputs(a, stages, m) {
                done[k] = Some(start + 1);
                ready.append(&mut waiters[k]);
            }
        }
    }
    if (0..p).all(|r| next[r] == s.lanes[r].len()) {
        return Ok(ticks);
    }
    let mut lines = Vec::new();
    let mut marks = Vec::new();
    for (r, &step) in next.iter().enumerate() {
        let Some(&a) = s.lanes[r].get(step) else { continue };
        marks.push((r, step));
        let missing: Vec<String> = inputs(a, stages, m, &splits)
            .filter(|(k, _)| done[*k].is_none())
            .map(|(_, need)| {
                let owner = s.rank_of(need.stage());
                match s.lanes[owner].iter().position(|&x| x == need) {
                    Some(step) => format!("{need} (rank {owner}, step {step})"),
                    None => format!("{need}, which is not in rank {owner}'s lane"),
                }
            })
            .collect();
        lines.push(format!("rank {r} is stuck at step {step} on {a}, waiting for {}", missing.join(" and ")));
    }
    Err(Error::Deadlock { reason: lines.join("; "), grid: grid::render(&grid::packed_rows(s), &marks) })
}

/// For each stage, whether its backward is split into `I` and `W` in this schedule.
pub(crate) fn split_table(s: &Schedule) -> Vec<bool> {
    let mut t = vec![false; s.stages()];
    for a in s.lanes.iter().flatten() {
        if a.op == Op::I && a.stage() < t.len() {
            t[a.stage()] = true;
        }
    }
    t
}
