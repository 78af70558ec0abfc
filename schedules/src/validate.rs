//! `validate`: the one check every schedule passes before it is simulated or executed.
//!
//! Rules, in the order they are checked (the first broken one is reported, with the schedule
//! grid and the offending step marked):
//! 1. shape: `p, v, m ≥ 1`, `p·v ≤ MAX_STAGES`, one lane per rank, `V` placement only with `v = 2`;
//! 2. every action names a stage `< p·v` and a micro-batch `< m`, on the rank holding the stage;
//! 3. every (stage, micro-batch) has exactly one `F`, and either one `B` or one `I` and one `W`,
//!    and at most one `R`; an `O` (offload) exactly when it has an `L` (reload), at most one of
//!    each; all micro-batches of a stage use the same kind of backward — unless
//!    the schedule is forward-only ([`Schedule::is_forward_only`]: inference and evaluation),
//!    where every pair has its `F` and nothing else;
//! 4. on its rank, `F` comes before `O`, `O` before `L`, `L` before `R`, `F` and `R` before
//!    `I`/`B`, `I` before `W` ([`deps::follows`](crate::deps::follows)): what was offloaded is back
//!    before anything reads it;
//! 5. no deadlock: running each lane in order, where an action waits for the message it
//!    consumes ([`deps`](crate::deps)), every lane finishes.
//!
//! Rules 2–4 are checked in one pass over the lanes, so where several are broken the one met
//! first in lane order is reported (a schedule naming more (stage, micro-batch) pairs than it has
//! actions for is refused by count before that pass); rule 5 comes last.
//!
//! Cost: linear in the number of actions. Rules 2–4 take a counter per stage and op when every
//! stage runs each op's micro-batches in increasing order (every generator does), else one byte
//! of bookkeeping per (stage, micro-batch); rule 5 takes the walk's one bit per message.
//! Positions for error messages are looked up only once a rule is broken.

use crate::action::{Action, Op, MAX_STAGES};
use crate::deps::{consumes, message_slots, split_stages};
use crate::error::{Error, Result};
use crate::grid;
use crate::schedule::{Placement, Schedule};
use crate::walk::{walk, Sent};

/// Checks `s` against every rule above.
pub fn validate(s: &Schedule) -> Result<()> {
    check_structure(s)?;
    let mut sent = Sent::new(message_slots(s.stages(), s.m));
    walk(s, &mut sent, |_| 0.0, |_| {}).map_err(|stuck| deadlock(s, &stuck))
}

/// Rules 1–4: everything but deadlocks, which a walk of the lanes finds. The simulator's own walk
/// finds them too, so it checks only these.
pub fn check_structure(s: &Schedule) -> Result<()> {
    check_shape(s)?;
    check_actions(s)
}

fn invalid(s: &Schedule, marks: &[(usize, usize)], reason: String) -> Error {
    Error::Invalid { reason, grid: grid::render_lanes(&s.lanes, marks) }
}

fn check_shape(s: &Schedule) -> Result<()> {
    let shape = |reason: String| Error::Invalid { reason, grid: String::new() };
    if s.p == 0 || s.v == 0 || s.m == 0 {
        return Err(shape(format!(
            "p (ranks), v (chunks per rank) and m (micro-batches) must all be at least 1; got p={}, v={}, m={}",
            s.p, s.v, s.m
        )));
    }
    if s.p.checked_mul(s.v).is_none_or(|n| n > MAX_STAGES) {
        return Err(shape(format!(
            "p·v = {}·{} model stages is more than pipesched's limit of {MAX_STAGES}",
            s.p, s.v
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

/// Rule 2 for the action `a` at `rank`, `step`: indices in range, on the rank that holds its
/// stage (`owner_of[stage]`).
fn check_range(s: &Schedule, owner_of: &[usize], rank: usize, step: usize, a: Action) -> Result<()> {
    let here = [(rank, step)];
    if a.stage() >= s.stages() {
        return Err(invalid(
            s,
            &here,
            format!(
                "rank {rank}, step {step}: {a} names stage {}, but the model has {} stages (0..={}) with p={}, v={}",
                a.stage,
                s.stages(),
                s.stages() - 1,
                s.p,
                s.v
            ),
        ));
    }
    if a.mb() >= s.m {
        return Err(invalid(
            s,
            &here,
            format!(
                "rank {rank}, step {step}: {a} names micro-batch {}, but the schedule has m={} micro-batches (0..={})",
                a.microbatch,
                s.m,
                s.m - 1
            ),
        ));
    }
    let owner = owner_of[a.stage()];
    if owner != rank {
        return Err(invalid(s, &here, format!(
            "rank {rank}, step {step}: {a} runs stage {} on rank {rank}, but {} placement puts stage {} on rank {owner}",
            a.stage, s.placement, a.stage
        )));
    }
    Ok(())
}

/// One bit per op, for the per-(stage, micro-batch) table of ops seen: `F` 1, `B` 2, `I` 4, `W` 8,
/// `R` 16, `O` 32, `L` 64.
const fn bit(op: Op) -> u8 {
    1 << op as u8
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::F => "forward",
        Op::B => "backward",
        Op::I => "input-gradient backward",
        Op::W => "weight-gradient backward",
        Op::R => "recompute",
        Op::O => "offload",
        Op::L => "reload",
    }
}

/// Where `a` sits: `(rank, step)` of its first occurrence after `from` on the rank holding its
/// stage. Only called once a rule is broken.
fn find(s: &Schedule, a: Action, from: usize) -> Option<(usize, usize)> {
    let rank = s.rank_of(a.stage());
    s.lanes[rank].iter().skip(from).position(|&x| x == a).map(|k| (rank, k + from))
}

/// Rules 2, 3 and 4: at a glance for a schedule in micro-batch order ([`in_microbatch_order`]),
/// else by [`check_pairs`].
fn check_actions(s: &Schedule) -> Result<()> {
    let (stages, m) = (s.stages(), s.m);
    let actions = s.num_actions();
    // Each (stage, micro-batch) needs at least two actions; the table is one byte per pair, so
    // it is never larger than the lanes themselves.
    if stages.saturating_mul(m) > actions.max(1 << 16) {
        return Err(Error::Invalid {
            reason: format!(
                "the schedule has {stages} stages × m={m} micro-batches, which need at least {} actions (a forward and a backward each), but its lanes hold {actions}",
                2u128 * stages as u128 * m as u128
            ),
            grid: String::new(),
        });
    }
    let owner_of: Vec<usize> = (0..stages).map(|st| s.rank_of(st)).collect();
    if in_microbatch_order(s, &owner_of) {
        return Ok(());
    }
    check_pairs(s, &owner_of)
}

/// Rules 2, 3 and 4 in one pass over the lanes, with one byte per (stage, micro-batch) for the ops
/// seen so far: duplicates are found as they appear; an action whose predecessor
/// ([`deps::follows`](crate::deps::follows), and a stage's `R` before its backward) has not been
/// seen yet comes before it — the first such is kept and reported only if nothing is missing
/// (rule 3 goes first); then a scan of the table finds what is missing. `owner_of[stage]` is the
/// rank holding the stage.
fn check_pairs(s: &Schedule, owner_of: &[usize]) -> Result<()> {
    let (stages, m) = (s.stages(), s.m);
    let mut seen = vec![0u8; stages * m];
    // The first order violation: (rank, step, the action, its missing predecessor, what).
    let mut out_of_order: Option<OutOfOrder> = None;
    for (rank, lane) in s.lanes.iter().enumerate() {
        for (step, &b) in lane.iter().enumerate() {
            let (stage, mb) = (b.stage(), b.mb());
            if stage >= stages || mb >= m || owner_of[stage] != rank {
                check_range(s, owner_of, rank, step, b)?;
            }
            let slot = &mut seen[stage * m + mb];
            let before = *slot;
            *slot |= bit(b.op);
            // Only a broken rule pays for more than these two tests.
            if before & bit(b.op) != 0 {
                return Err(duplicate(s, rank, step, b));
            }
            if out_of_order.is_none() && !in_order(before, b.op) {
                out_of_order = Some(order_break(s, rank, step, b, before));
            }
        }
    }
    check_complete(s, &seen)?;
    if let Some((rank, step, b, a, what)) = out_of_order {
        let later = find(s, a, step).map_or(step, |x| x.1);
        return Err(invalid(
            s,
            &[(rank, step), (rank, later)],
            format!("{what}: {b} at rank {rank}, step {step} comes before {a} at step {later}"),
        ));
    }
    Ok(())
}

/// Rules 2–4 at a glance for the common shape, every generator's: each stage runs each op on
/// micro-batches 0, 1, 2, … in lane order. Then a pair's op has run exactly when that op's count
/// on the stage has passed the micro-batch, and every pair is complete exactly when the counts
/// reach `m`: a counter per stage and op instead of a byte per pair. `true` means rules 2–4 hold;
/// `false` says nothing, and [`check_pairs`] decides (and explains).
fn in_microbatch_order(s: &Schedule, owner_of: &[usize]) -> bool {
    let (stages, m) = (s.stages(), s.m);
    // By stage and op: the micro-batch the op runs next.
    let mut next = vec![[0; Op::ALL.len()]; stages];
    for (rank, lane) in s.lanes.iter().enumerate() {
        for &a in lane.iter() {
            let (stage, mb) = (a.stage(), a.mb());
            if stage >= stages || owner_of[stage] != rank {
                return false;
            }
            let n = &mut next[stage];
            let ran = |op: Op| n[op as usize] > mb;
            let after = AFTER[a.op as usize].is_none_or(ran);
            let recompute_in_time = a.op != Op::R || !(ran(Op::B) || ran(Op::I));
            let reload_in_time = a.op != Op::L || !(ran(Op::B) || ran(Op::I) || ran(Op::R));
            if mb != n[a.op as usize] || mb >= m || !after || !recompute_in_time || !reload_in_time {
                return false;
            }
            n[a.op as usize] += 1;
        }
    }
    let [f, b, i, w, r, o, l] = Op::ALL.map(|op| op as usize);
    let forward_only =
        next.iter().all(|n| n[f] == m && n[b] == 0 && n[i] == 0 && n[w] == 0 && n[r] == 0 && n[o] == 0 && n[l] == 0);
    // Every `L` came after its `O`, so equal counts of 0 or m pair them all up.
    let paired = |n: &[usize; 7]| n[o] == n[l] && (n[o] == 0 || n[o] == m);
    forward_only
        || next.iter().all(|n| {
            n[f] == m && paired(n) && ((n[b] == m && n[i] == 0 && n[w] == 0) || (n[b] == 0 && n[i] == m && n[w] == m))
        })
}

/// Rule 4 by op (`F B I W R O L`, [`deps::follows`](crate::deps::follows)): the op that must have
/// run on the pair before it. An `R` must also come before the pair's backward, and an `L` before
/// its `R` and backward.
const AFTER: [Option<Op>; 7] = [None, Some(Op::F), Some(Op::F), Some(Op::I), Some(Op::F), Some(Op::F), Some(Op::O)];

/// Where rule 4 is first broken: (rank, step, the action, its missing predecessor, what).
type OutOfOrder = (usize, usize, Action, Action, &'static str);

/// Whether an action `op` may come after the ops in `seen` (bits of its (stage, micro-batch)):
/// rule 4, as [`order_break`] spells it out.
fn in_order(seen: u8, op: Op) -> bool {
    let after = AFTER[op as usize].is_none_or(|x| seen & bit(x) != 0);
    let backward = bit(Op::B) | bit(Op::I);
    after && (op != Op::R || seen & backward == 0) && (op != Op::L || seen & (backward | bit(Op::R)) == 0)
}

/// The duplicate `b` at `rank`, `step`: the error, with where it first appears.
#[cold]
fn duplicate(s: &Schedule, rank: usize, step: usize, b: Action) -> Error {
    let first = find(s, b, 0).unwrap_or((rank, step));
    invalid(
        s,
        &[first, (rank, step)],
        format!(
            "duplicate {}: {b} appears at rank {}, step {} and again at rank {rank}, step {step}",
            op_name(b.op),
            first.0,
            first.1
        ),
    )
}

/// How `b` at `rank`, `step` breaks rule 4, coming after the ops in `seen` (`in_order` said it
/// does).
#[cold]
fn order_break(s: &Schedule, rank: usize, step: usize, b: Action, seen: u8) -> OutOfOrder {
    let need = |op: Op| Action::new(b.stage(), op, b.mb());
    match b.op {
        Op::R if seen & bit(Op::F) == 0 => (rank, step, b, need(Op::F), "recompute before its forward"),
        // An R after the backward: the backward came before its recompute.
        Op::R => {
            let back = if seen & bit(Op::B) != 0 { Op::B } else { Op::I };
            let k = find(s, need(back), 0).map_or(step, |x| x.1);
            (rank, k, need(back), b, "backward before its recompute")
        }
        Op::O => (rank, step, b, need(Op::F), "offload before its forward"),
        Op::L if seen & bit(Op::O) == 0 => (rank, step, b, need(Op::O), "reload before its offload"),
        // An L after the recompute or backward: those read what was still on the host.
        Op::L => {
            let first = [Op::R, Op::B, Op::I].into_iter().find(|&op| seen & bit(op) != 0).unwrap_or(Op::I);
            let k = find(s, need(first), 0).map_or(step, |x| x.1);
            (rank, k, need(first), b, "recompute or backward before its reload")
        }
        Op::W => (rank, step, b, need(Op::I), "W before I"),
        Op::F | Op::I | Op::B => (rank, step, b, need(Op::F), "backward before its forward"),
    }
}

/// Rule 3's scan: every (stage, micro-batch) has a forward and one kind of backward — or, in a
/// forward-only schedule, its forward alone. `seen` holds the ops each has.
fn check_complete(s: &Schedule, seen: &[u8]) -> Result<()> {
    let (stages, m) = (s.stages(), s.m);
    let forward_only = seen.iter().all(|&ops| ops & !bit(Op::F) == 0);
    let backward = bit(Op::B) | bit(Op::I) | bit(Op::W);
    for stage in 0..stages {
        for mb in 0..m {
            let ops = seen[stage * m + mb];
            let back = ops & backward;
            let paired = (ops & bit(Op::O) == 0) == (ops & bit(Op::L) == 0);
            if ops & bit(Op::F) != 0
                && paired
                && (forward_only || back == bit(Op::B) || back == bit(Op::I) | bit(Op::W))
            {
                continue; // complete; only broken pairs pay for the messages below
            }
            let name = |op| Action::new(stage, op, mb);
            let at = |op| find(s, name(op), 0);
            let rank = s.rank_of(stage);
            let has = |op| ops & bit(op) != 0;
            if !has(Op::F) {
                let marks: Vec<_> = [Op::B, Op::I, Op::W, Op::R, Op::O, Op::L]
                    .into_iter()
                    .filter(|&o| has(o))
                    .find_map(at)
                    .into_iter()
                    .collect();
                return Err(invalid(
                    s,
                    &marks,
                    format!(
                        "missing forward: stage {stage}, micro-batch {mb} has no {} (expected in rank {rank}'s lane)",
                        name(Op::F)
                    ),
                ));
            }
            // Positions are looked up only once a rule is broken.
            let f = || at(Op::F).unwrap_or((rank, 0));
            if !paired {
                let (has_op, lacks) = if has(Op::O) { (Op::O, Op::L) } else { (Op::L, Op::O) };
                let here = at(has_op).unwrap_or_else(f);
                return Err(invalid(
                    s,
                    &[here],
                    format!(
                        "{} without its {}: {} at rank {}, step {} has no matching {}; an offloaded micro-batch must be reloaded before its backward, so give both or neither",
                        op_name(has_op),
                        op_name(lacks),
                        name(has_op),
                        here.0,
                        here.1,
                        name(lacks)
                    ),
                ));
            }
            match (has(Op::B), has(Op::I), has(Op::W)) {
                (true, false, false) | (false, true, true) => {}
                (false, false, false) => {
                    let f = f();
                    return Err(invalid(s, &[f], format!(
                        "missing backward: {} (rank {}, step {}) has no backward; add {} or both {} and {} to rank {rank}'s lane",
                        name(Op::F), f.0, f.1, name(Op::B), name(Op::I), name(Op::W)
                    )));
                }
                (true, _, _) => {
                    let b = at(Op::B).unwrap_or_else(f);
                    let other = at(Op::I).or_else(|| at(Op::W)).unwrap_or(b);
                    return Err(invalid(s, &[b, other], format!(
                        "stage {stage}, micro-batch {mb} has both a full backward {} and a split one (I/W); use one or the other",
                        name(Op::B)
                    )));
                }
                (false, true, false) => {
                    let i = at(Op::I).unwrap_or_else(f);
                    return Err(invalid(
                        s,
                        &[i],
                        format!(
                            "missing weight gradient: {} at rank {}, step {} has no matching {}",
                            name(Op::I),
                            i.0,
                            i.1,
                            name(Op::W)
                        ),
                    ));
                }
                (false, false, true) => {
                    let w = at(Op::W).unwrap_or_else(f);
                    return Err(invalid(
                        s,
                        &[w],
                        format!(
                            "missing input gradient: {} at rank {}, step {} has no matching {} before it",
                            name(Op::W),
                            w.0,
                            w.1,
                            name(Op::I)
                        ),
                    ));
                }
            }
        }
    }
    // A stage's gradients all come from one kind of backward: the dependency rule names a
    // message's producer by its stage (`deps::Message::producer`).
    for stage in 0..stages {
        let kind = |mb: usize| seen[stage * m + mb] & bit(Op::B) != 0;
        if let Some(mb) = (1..m).find(|&mb| kind(mb) != kind(0)) {
            let (full, split) = if kind(0) { (0, mb) } else { (mb, 0) };
            let b = find(s, Action::new(stage, Op::B, full), 0);
            let i = find(s, Action::new(stage, Op::I, split), 0);
            return Err(invalid(
                s,
                &[b, i].into_iter().flatten().collect::<Vec<_>>(),
                format!(
                    "stage {stage} mixes backward kinds: micro-batch {full} has a full backward {} but micro-batch {split} a split one {}; give every micro-batch of a stage the same kind (B, or I and W)",
                    Action::new(stage, Op::B, full),
                    Action::new(stage, Op::I, split)
                ),
            ));
        }
    }
    Ok(())
}

/// The deadlock error: for every rank that could not finish, the action it is stuck on and the
/// action whose message it waits for, with where that action is.
fn deadlock(s: &Schedule, next: &[usize]) -> Error {
    let splits = split_stages(s);
    let mut lines = Vec::new();
    let mut marks = Vec::new();
    for (r, &step) in next.iter().enumerate() {
        let Some(&a) = s.lanes[r].get(step) else { continue };
        marks.push((r, step));
        let waits = match consumes(a, s.stages()) {
            Some(msg) => {
                let need = msg.producer(&splits);
                let owner = s.rank_of(need.stage());
                match find(s, need, 0) {
                    Some((_, k)) => format!("{need} (rank {owner}, step {k})"),
                    None => format!("{need}, which is not in rank {owner}'s lane"),
                }
            }
            None => "nothing (please report this schedule)".into(),
        };
        lines.push(format!("rank {r} is stuck at step {step} on {a}, waiting for {waits}"));
    }
    Error::Deadlock { reason: lines.join("; "), grid: grid::render_lanes(&s.lanes, &marks) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deps;
    use crate::generate::Kind;
    use proptest::prelude::*;

    fn owners(s: &Schedule) -> Vec<usize> {
        (0..s.stages()).map(|st| s.rank_of(st)).collect()
    }

    #[test]
    fn rule_4_is_the_dependency_rule() {
        for op in Op::ALL {
            assert_eq!(AFTER[op as usize], deps::follows(Action::new(0, op, 0)).map(|a| a.op), "{op}");
        }
    }

    #[test]
    fn generated_schedules_are_in_microbatch_order() {
        for kind in Kind::ALL {
            for (p, m) in [(1, 2), (2, 4), (3, 6), (4, 8)] {
                let s = kind.generate(p, kind.default_chunks(), m).unwrap();
                assert!(in_microbatch_order(&s, &owners(&s)), "{kind} p={p} m={m}");
                let r = crate::with_recompute(&s, &vec![true; s.stages()]).unwrap();
                assert!(in_microbatch_order(&r, &owners(&r)), "{kind} p={p} m={m} with recompute");
                let o = crate::with_offload(&r, &crate::Offload::All).unwrap();
                assert!(in_microbatch_order(&o, &owners(&o)), "{kind} p={p} m={m} with offload");
            }
        }
    }

    /// One edit of a lane: swap two actions, or change one's stage, op or micro-batch, or drop
    /// or repeat one. Positions are taken modulo what the schedule has.
    #[derive(Debug, Clone)]
    enum Edit {
        Swap(usize, usize, usize),
        Stage(usize, usize, u16),
        Op(usize, usize, usize),
        Microbatch(usize, usize, u32),
        Drop(usize, usize),
        Repeat(usize, usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let at = || (any::<usize>(), any::<usize>());
        prop_oneof![
            (at(), any::<usize>()).prop_map(|((r, k), j)| Edit::Swap(r, k, j)),
            (at(), 0u16..6).prop_map(|((r, k), x)| Edit::Stage(r, k, x)),
            (at(), 0usize..Op::ALL.len()).prop_map(|((r, k), x)| Edit::Op(r, k, x)),
            (at(), 0u32..10).prop_map(|((r, k), x)| Edit::Microbatch(r, k, x)),
            at().prop_map(|(r, k)| Edit::Drop(r, k)),
            at().prop_map(|(r, k)| Edit::Repeat(r, k)),
        ]
    }

    fn apply(s: &Schedule, edits: &[Edit]) -> Schedule {
        let mut lanes: Vec<Vec<Action>> = s.lanes.iter().map(|l| l.to_vec()).collect();
        for e in edits {
            let (r, k) = match *e {
                Edit::Swap(r, k, _) | Edit::Stage(r, k, _) | Edit::Op(r, k, _) => (r, k),
                Edit::Microbatch(r, k, _) | Edit::Drop(r, k) | Edit::Repeat(r, k) => (r, k),
            };
            let lane = &mut lanes[r % s.p];
            if lane.is_empty() {
                continue;
            }
            let k = k % lane.len();
            match *e {
                Edit::Swap(_, _, j) => {
                    let j = j % lane.len();
                    lane.swap(k, j);
                }
                Edit::Stage(_, _, x) => lane[k].stage = x,
                Edit::Op(_, _, x) => lane[k].op = Op::ALL[x],
                Edit::Microbatch(_, _, x) => lane[k].microbatch = x,
                Edit::Drop(..) => drop(lane.remove(k)),
                Edit::Repeat(..) => lane.insert(k, lane[k]),
            }
        }
        Schedule::new(&s.name, s.p, s.v, s.m, s.placement, lanes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// The quick check never passes what the pass over every pair refuses.
        #[test]
        fn the_quick_check_passes_only_what_the_full_one_passes(
            kind in proptest::sample::select(Kind::ALL.to_vec()),
            p in 1usize..4,
            rounds in 1usize..3,
            recompute in any::<bool>(),
            offload in any::<bool>(),
            edits in proptest::collection::vec(edit(), 1..4),
        ) {
            let m = p * rounds * 2;
            let mut s = kind.generate(p, kind.default_chunks(), m).unwrap();
            if recompute {
                s = crate::with_recompute(&s, &vec![true; s.stages()]).unwrap();
            }
            if offload {
                s = crate::with_offload(&s, &crate::Offload::All).unwrap();
            }
            let edited = apply(&s, &edits);
            let owner_of = owners(&edited);
            if in_microbatch_order(&edited, &owner_of) {
                prop_assert!(check_pairs(&edited, &owner_of).is_ok(), "{edits:?}");
            }
        }
    }
}
