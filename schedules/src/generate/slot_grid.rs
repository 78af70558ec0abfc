//! `SlotGrid`: a V-placed schedule on a grid of unit time slots, built the way Qi, Wan, Amar and
//! Lin build their controllable-memory schedules ("Pipeline Parallelism with Controllable
//! Memory", NeurIPS 2024): a building block — the slots of one micro-batch's four passes on each
//! rank — is repeated every [`PERIOD`] slots, then compacted by moving passes into earlier free
//! slots, never past a dependency and never above the peak number of activations any rank held
//! before, and finally the weight-gradient passes `W` fill the free slots.
//!
//! Invariant: a rank holds at most one pass per slot, and every pass sits in a later slot than
//! each pass it depends on — so, once the `W` are in, a rank's passes read in slot order are a
//! valid lane. The order this produces is fixed by the block alone; the costs never enter.
//!
//! The whole method, as the authors' public scheduler runs it:
//! 1. repeat the block; put a `W` in each free slot while some `I` before it has no `W` yet;
//! 2. reorder the warm-up and the cool-down — the passes the sweep meets before rank 0's first
//!    `I` of stage 0, and after rank 0's last `F` of stage 0 — under that peak, counting the `W`
//!    where they sit;
//! 3. squeeze: every pass as early as its rank and its inputs allow, order kept;
//! 4. take the `W` out and reorder the cool-down again, now counting a pending `W` as run in
//!    each free slot; put the `W` back as in 1 and squeeze again;
//! 5. take the `W` out and put them back chunk by chunk: a free slot runs the oldest pending `W`
//!    of the rank's second stage if it has one, else of its first.

use crate::action::{Action, Op};

/// Slots one micro-batch takes on a rank in a building block: a forward and an input-gradient
/// backward of each of its two stages, and the two weight-gradient backwards.
const PERIOD: usize = 6;

/// The passes of a rank, in the paper's order (`F`, `f`, `B`, `b` there): forward of its first
/// stage (`r`), forward of its second stage (`2p−1−r`), input gradient of the second stage,
/// input gradient of the first; then `W`, numbered in the order they run until step 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    F0,
    F1,
    I1,
    I0,
    W,
}

/// The four passes a building block places.
const BLOCK: [Pass; 4] = [Pass::F0, Pass::F1, Pass::I1, Pass::I0];

/// One pass of one micro-batch (for `W`, its number on the rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    pass: Pass,
    mb: u32,
}

/// How a rank's activations are counted while reordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// The `W` sit in the grid: a forward holds one activation, a `W` frees one.
    Placed,
    /// No `W` in the grid: each free slot runs a pending `W` (one per `I` before it), as step
    /// 4's placement will.
    Pending,
}

/// Which passes a reorder may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moving {
    /// Step 2.
    WarmUpAndCoolDown,
    /// Step 4.
    CoolDown,
}

/// A rank's count at the end of a slot: activations held, and `I` whose `W` has not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Count {
    held: i64,
    pending: i64,
}

impl Count {
    fn after(self, cell: Option<Run>, memory: Memory) -> Count {
        let Count { held, pending } = self;
        match cell.map(|r| r.pass) {
            Some(Pass::F0 | Pass::F1) => Count { held: held + 1, pending },
            Some(Pass::I1 | Pass::I0) => Count { held, pending: pending + 1 },
            Some(Pass::W) => Count { held: held - 1, pending: pending - 1 },
            None if memory == Memory::Pending && pending > 0 => Count { held: held - 1, pending: pending - 1 },
            None => self,
        }
    }
}

/// The grid: for each rank, what runs in each slot, and where each pass sits.
pub(super) struct SlotGrid {
    m: usize,
    /// `cells[r][t]`: the pass rank `r` runs in slot `t`, if any.
    cells: Vec<Vec<Option<Run>>>,
    /// `at[r][pass][mb]`: the slot of that pass (`W` by number).
    at: Vec<[Vec<usize>; 5]>,
}

impl SlotGrid {
    /// The lanes of the schedule `block` builds for `m` micro-batches: `block[r]` gives the
    /// slots of rank `r`'s four passes of micro-batch 0, in [`BLOCK`]'s order; micro-batch `j`
    /// sits `PERIOD·j` slots later.
    pub(super) fn lanes(block: &[[usize; 4]], m: usize) -> Vec<Vec<Action>> {
        let mut grid = SlotGrid::repeat(block, m);
        grid.place_w();
        grid.reorder(Moving::WarmUpAndCoolDown, Memory::Placed);
        grid.squeeze();
        grid.take_w();
        grid.reorder(Moving::CoolDown, Memory::Pending);
        grid.place_w();
        grid.squeeze();
        grid.into_lanes()
    }

    fn repeat(block: &[[usize; 4]], m: usize) -> SlotGrid {
        let at = block
            .iter()
            .map(|first| first.map(|t| (0..m).map(|j| t + PERIOD * j).collect()))
            .map(|[f0, f1, i1, i0]| [f0, f1, i1, i0, Vec::new()])
            .collect();
        let mut grid = SlotGrid { m, cells: Vec::new(), at };
        grid.fill_cells();
        grid
    }

    fn p(&self) -> usize {
        self.at.len()
    }

    /// Rebuilds `cells` from `at` (the old rows freed first).
    fn fill_cells(&mut self) {
        self.cells.clear();
        self.cells = self
            .at
            .iter()
            .map(|at| {
                let len = at.iter().filter_map(|slots| slots.last()).max().map_or(0, |t| t + 1);
                let mut row = vec![None; len];
                for (k, slots) in at.iter().enumerate() {
                    let pass = if k < 4 { BLOCK[k] } else { Pass::W };
                    for (mb, &t) in slots.iter().enumerate() {
                        debug_assert!(row[t].is_none(), "two passes in one slot");
                        row[t] = Some(Run { pass, mb: mb as u32 });
                    }
                }
                row
            })
            .collect();
    }

    /// Steps 1 and 4: a `W` in each free slot while one is pending, the rest after the last
    /// pass.
    fn place_w(&mut self) {
        for (row, at) in self.cells.iter_mut().zip(&mut self.at) {
            let w = &mut at[Pass::W as usize];
            let mut pending = 0;
            for (t, cell) in row.iter_mut().enumerate() {
                match cell {
                    Some(Run { pass: Pass::I1 | Pass::I0, .. }) => pending += 1,
                    None if pending > 0 => {
                        *cell = Some(Run { pass: Pass::W, mb: w.len() as u32 });
                        w.push(t);
                        pending -= 1;
                    }
                    _ => {}
                }
            }
            for _ in 0..pending {
                row.push(Some(Run { pass: Pass::W, mb: w.len() as u32 }));
                w.push(row.len() - 1);
            }
        }
    }

    /// Takes every `W` out of the grid.
    fn take_w(&mut self) {
        for (row, at) in self.cells.iter_mut().zip(&mut self.at) {
            for t in at[Pass::W as usize].drain(..) {
                row[t] = None;
            }
            while row.last() == Some(&None) {
                row.pop();
            }
        }
    }

    /// The first slot `run` may take on rank `r`: after its input on the neighbouring rank,
    /// the pass before it on this rank (`F` of the first stage before `F` of the second,
    /// before `I` of the second, before `I` of the first), its own previous micro-batch, and —
    /// for `W` number `n` — the `n`-th `I` of the rank (`i_done`: the slots of its first `I`,
    /// sorted).
    fn ready(&self, r: usize, run: Run, i_done: &[usize]) -> usize {
        let at = &self.at[r];
        let (k, mb) = (run.pass as usize, run.mb as usize);
        let previous = mb.checked_sub(1).map(|j| at[k][j]);
        let (before, input) = match run.pass {
            Pass::W => (Some(i_done[mb]), None),
            Pass::F0 => (None, r.checked_sub(1)),
            Pass::I1 => (Some(at[k - 1][mb]), r.checked_sub(1)),
            Pass::F1 | Pass::I0 => (Some(at[k - 1][mb]), Some(r + 1).filter(|&q| q < self.p())),
        };
        let input = input.map(|q| self.at[q][k][mb]);
        [previous, before, input].into_iter().flatten().max().map_or(0, |t| t + 1)
    }

    /// Steps 2 and 4: sweeps the grid slot by slot (ranks in order within a slot) and moves each
    /// pass of the phases `moving` names into the earliest free slot it is ready for, if there
    /// the rank's count stays within the peak every rank kept before the sweep.
    fn reorder(&mut self, moving: Moving, memory: Memory) {
        let p = self.p();
        let mut counts: Vec<Vec<Count>> = self.cells.iter().map(|row| walk(row, memory)).collect();
        let cap = counts.iter().flatten().map(|c| c.held).max().unwrap_or(0).max(0);
        // Per rank, the slots of the `I` the sweep has passed, sorted: they come before every `I`
        // it has not, and `W` number `n` is ready only after `n + 1` of them.
        let mut i_done: Vec<Vec<usize>> = vec![Vec::new(); p];
        let (mut steady, mut cool_down) = (false, false);
        let width = self.cells.iter().map(Vec::len).max().unwrap_or(0);
        for t in 0..width {
            for r in 0..p {
                let Some(run) = self.cells[r].get(t).copied().flatten() else { continue };
                let is_i = matches!(run.pass, Pass::I1 | Pass::I0);
                if !steady && !cool_down && r == 0 && run.pass == Pass::I0 {
                    steady = true;
                }
                let fixed = steady || (!cool_down && moving == Moving::CoolDown);
                if steady && run.pass == Pass::F0 && run.mb as usize == self.m - 1 {
                    (steady, cool_down) = (false, true);
                }
                let ready = if fixed { t } else { self.ready(r, run, &i_done[r]) };
                debug_assert!(ready <= t, "a pass before its input");
                let row = &self.cells[r];
                let to = match memory {
                    Memory::Placed => first_fit_placed(row, &counts[r], run, ready, t, cap),
                    Memory::Pending => {
                        (ready..t).find(|&s| row[s].is_none() && fits_pending(row, &counts[r], run, t, s, cap))
                    }
                }
                .unwrap_or(t);
                if is_i {
                    // Mostly the latest: a moved `I` may pass a few.
                    let done = &mut i_done[r];
                    let at = done.len() - done.iter().rev().take_while(|&&s| s > to).count();
                    done.insert(at, to);
                }
                if to == t {
                    continue;
                }
                // Move it, and redo the counts it changed.
                let row = &mut self.cells[r];
                row[to] = Some(run);
                row[t] = None;
                let mut c = if to == 0 { Count::default() } else { counts[r][to - 1] };
                for u in to..row.len() {
                    c = c.after(row[u], memory);
                    if u >= t && c == counts[r][u] {
                        break;
                    }
                    counts[r][u] = c;
                }
                self.at[r][run.pass as usize][run.mb as usize] = to;
            }
        }
    }

    /// Step 3: every pass starts as soon as its rank is free and its input from the
    /// neighbouring rank has ended, one slot each, in the order of the grid.
    fn squeeze(&mut self) {
        let p = self.p();
        let mut free = vec![0; p];
        let width = self.cells.iter().map(Vec::len).max().unwrap_or(0);
        for t in 0..width {
            for (r, free) in free.iter_mut().enumerate() {
                let Some(run) = self.cells[r].get(t).copied().flatten() else { continue };
                let (k, mb) = (run.pass as usize, run.mb as usize);
                let input = match run.pass {
                    Pass::F0 | Pass::I1 if r > 0 => Some(self.at[r - 1][k][mb] + 1),
                    Pass::F1 | Pass::I0 if r + 1 < p => Some(self.at[r + 1][k][mb] + 1),
                    _ => None,
                };
                let start = input.map_or(*free, |t| t.max(*free));
                self.at[r][k][mb] = start;
                *free = start + 1;
            }
        }
        self.fill_cells();
    }

    /// Step 5, and the lanes: each rank's passes in slot order, its `W` put back chunk by chunk.
    fn into_lanes(self) -> Vec<Vec<Action>> {
        let p = self.p();
        self.cells
            .into_iter()
            .enumerate()
            .map(|(r, row)| {
                let stages = [r, 2 * p - 1 - r];
                // Per chunk: `I` run, `W` run.
                let (mut done_i, mut done_w) = ([0usize; 2], [0usize; 2]);
                let mut lane = Vec::with_capacity(6 * self.m);
                let w = |chunk: usize, done_w: &mut [usize; 2]| {
                    done_w[chunk] += 1;
                    Action::new(stages[chunk], Op::W, done_w[chunk] - 1)
                };
                for cell in row {
                    let mb = cell.map_or(0, |run| run.mb as usize);
                    match cell.map(|run| run.pass) {
                        Some(Pass::F0) => lane.push(Action::new(stages[0], Op::F, mb)),
                        Some(Pass::F1) => lane.push(Action::new(stages[1], Op::F, mb)),
                        Some(Pass::I1) => {
                            lane.push(Action::new(stages[1], Op::I, mb));
                            done_i[1] += 1;
                        }
                        Some(Pass::I0) => {
                            lane.push(Action::new(stages[0], Op::I, mb));
                            done_i[0] += 1;
                        }
                        Some(Pass::W) | None => {
                            if let Some(chunk) = [1, 0].into_iter().find(|&c| done_w[c] < done_i[c]) {
                                lane.push(w(chunk, &mut done_w));
                            }
                        }
                    }
                }
                for chunk in [1, 0] {
                    while done_w[chunk] < self.m {
                        lane.push(w(chunk, &mut done_w));
                    }
                }
                lane
            })
            .collect()
    }
}

/// A rank's count at the end of every slot of `row`.
fn walk(row: &[Option<Run>], memory: Memory) -> Vec<Count> {
    let mut c = Count::default();
    row.iter()
        .map(|&cell| {
            c = c.after(cell, memory);
            c
        })
        .collect()
}

/// With the `W` in the grid: the earliest free slot in `ready..from` that `run` (now in slot
/// `from`) can move to with the rank's count staying within `cap`. Moving an `I` changes no
/// count and moving a `W` lowers some; moving a forward to `to` adds one activation to the
/// counts of `to..from` and changes no other.
fn first_fit_placed(
    row: &[Option<Run>],
    counts: &[Count],
    run: Run,
    ready: usize,
    from: usize,
    cap: i64,
) -> Option<usize> {
    if !matches!(run.pass, Pass::F0 | Pass::F1) {
        return (ready..from).find(|&s| row[s].is_none());
    }
    let mut fit = None;
    let mut most = i64::MIN;
    for s in (ready..from).rev() {
        most = most.max(counts[s].held);
        if most + 1 > cap {
            break;
        }
        if row[s].is_none() {
            fit = Some(s);
        }
    }
    fit
}

/// With the `W` pending: whether moving `run` from slot `from` to the free slot `to < from`
/// keeps the rank's count within `cap`. The counts before `to` do not change, and once the new
/// counts meet the old ones at or after `from` the rest do not either; in between the free
/// slots may run their pending `W` at other times, so the counts are walked.
fn fits_pending(row: &[Option<Run>], counts: &[Count], run: Run, from: usize, to: usize, cap: i64) -> bool {
    let mut c = if to == 0 { Count::default() } else { counts[to - 1] };
    for (u, &cell) in row.iter().enumerate().skip(to) {
        let cell = match u {
            _ if u == to => Some(run),
            _ if u == from => None,
            _ => cell,
        };
        c = c.after(cell, Memory::Pending);
        if c.held > cap {
            return false;
        }
        if u >= from && c == counts[u] {
            break;
        }
    }
    true
}
