//! Weight updates inside a run: where each stage applies its optimizer, which weight version
//! each micro-batch uses, and how many versions a stage keeps at once.
//!
//! A run is one schedule of many micro-batches (steps back to back, or one stream with no flush
//! at all). Stage `s` updates after its last backward of every *group* of `every` consecutive
//! micro-batches (the `W`, or the `B`, completing the group's last gradients; gradients add up
//! within the group in micro-batch order, and the groups are applied in order). Version `u` of
//! a stage's weights is what `u` updates made of its initial weights.
//!
//! Micro-batch `j` (group `g = ⌊j / every⌋`) runs its `F`, `R`, `I` and `B` on stage `s` with
//! version `v(s, j)` — the same for all of them, the backward on what the forward saw (weight
//! stashing, Narayanan et al., SOSP 2019) — where, by [`Versioning`]:
//! - `Current`: `v = g`, every earlier group's update. Synchronous training; a forward of group
//!   `g` must come after the stage's last backward of group `g − 1` (else the run needs a
//!   barrier there).
//! - `Stashed` (PipeDream): `v` = the updates the stage has made when the forward runs, in its
//!   rank's lane order — the newest weights, stale by however many of the stage's backwards the
//!   schedule puts after it.
//! - `DoubleBuffered` (PipeDream-2BW, Narayanan et al., ICML 2021): `v = max(g − 1, 0)`, one
//!   update behind: the update after group `g` is `W(g+1) = W(g) − η·∇f(W(g−1))`. A forward of
//!   group `g` must come after the stage's last backward of group `g − 2`.
//!
//! In every case a stage's finishing backwards must come group by group (none of group `g + 1`
//! before the last of group `g`), so its gradient buffer holds one group at a time.
//!
//! Memory: version `u` lives from the update that makes it until the later of the next update
//! (it is the base the optimizer steps from) and the finishing backward of the last micro-batch
//! that uses it. The newest version is the stage's parameters, counted in its static bytes; every
//! other live version is *stashed* and counted as held bytes. After each action, before any
//! update that follows it, [`Updates::stash_bytes`] gives the rank's stashed bytes — what the
//! executor's ledger measures, and what [`simulate_updates`](crate::simulate_updates) adds to
//! the held bytes.
//!
//! Invariant: `versions[s][j] ≤` the updates stage `s` has made before `F(s, j)` in its lane.

use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::schedule::Schedule;
use crate::validate::check_structure;

/// Which weight version a micro-batch's forward (and so its backward) uses; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Versioning {
    /// Every earlier group's update (synchronous training).
    Current,
    /// The newest version when the forward runs, stashed for the backward (PipeDream).
    Stashed,
    /// One update behind the group's own: `max(g − 1, 0)` (PipeDream-2BW).
    DoubleBuffered,
}

/// A stage's stashed-version count around one action: after it, and after the update that may
/// follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StashCount {
    stage: usize,
    after_action: u32,
    after_update: u32,
}

/// Where each stage updates in a run, and the weight version of every (stage, micro-batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updates {
    /// Micro-batches per update.
    pub every: usize,
    /// Which version forwards use.
    pub versioning: Versioning,
    /// For each rank and lane position: whether the stage of that action updates after it.
    after: Vec<Vec<bool>>,
    /// `versions[s][j]`: the version micro-batch `j` uses on stage `s`.
    versions: Vec<Vec<u32>>,
    /// For each rank and lane position: the stage's stashed versions around the action.
    stash: Vec<Vec<StashCount>>,
    /// Per stage, the most versions it stashes at once.
    peaks: Vec<u32>,
}

impl Updates {
    /// The updates of `schedule` with one per `every` micro-batches on every stage and forwards
    /// on the weights `versioning` says; refused if `every` does not divide `m`, if a stage
    /// finishes a group's backwards before the group before is done, or if a forward would need
    /// a version its stage has not made yet (the schedule needs a barrier there).
    pub fn new(schedule: &Schedule, every: usize, versioning: Versioning) -> Result<Updates> {
        let bad = |reason: String| Error::BadArgs { schedule: schedule.name.clone(), reason };
        check_structure(schedule)?;
        if every == 0 || schedule.m % every != 0 {
            return Err(bad(format!("updates every {every} micro-batches do not divide m = {}", schedule.m)));
        }
        let (stages, m) = (schedule.stages(), schedule.m);
        let splits = schedule.split_stages();
        let finishes = |a: &Action| matches!((a.op, splits[a.stage()]), (Op::W, true) | (Op::B, false));
        // Per stage: backwards still to come in the group being finished, and updates made.
        let mut left = vec![every; stages];
        let mut made = vec![0u32; stages];
        let mut versions = vec![vec![u32::MAX; m]; stages];
        let mut after: Vec<Vec<bool>> = schedule.lanes.iter().map(|l| vec![false; l.len()]).collect();
        for (r, lane) in schedule.lanes.iter().enumerate() {
            for (k, a) in lane.iter().enumerate() {
                let (s, j) = (a.stage(), a.mb());
                let g = u32::try_from(j / every).map_err(|_| bad(format!("{a}: more than 2³² update groups")))?;
                if finishes(a) {
                    if g != made[s] {
                        return Err(bad(format!(
                            "rank {r}, step {k}: {a} finishes a backward of update group {g} while stage {s} has group {} to finish; a stage's backwards must complete group by group",
                            made[s]
                        )));
                    }
                    left[s] -= 1;
                    if left[s] == 0 {
                        after[r][k] = true;
                        made[s] += 1;
                        left[s] = every;
                    }
                } else if a.op == Op::F {
                    let v = match versioning {
                        Versioning::Current => g,
                        Versioning::Stashed => made[s],
                        Versioning::DoubleBuffered => g.saturating_sub(1),
                    };
                    if v > made[s] {
                        return Err(bad(format!(
                            "rank {r}, step {k}: {a} (update group {g}) needs version {v} of stage {s}'s weights, but the stage has made {} updates by then — the backwards of group {} come after it; this schedule needs a barrier between steps",
                            made[s],
                            v - 1
                        )));
                    }
                    versions[s][j] = v;
                }
            }
        }
        let stash = stash_counts(schedule, &versions, &after, &finishes);
        let mut peaks = vec![0u32; stages];
        for x in stash.iter().flatten() {
            peaks[x.stage] = peaks[x.stage].max(x.after_action).max(x.after_update);
        }
        Ok(Updates { every, versioning, after, versions, stash, peaks })
    }

    /// Whether the stage of rank `rank`'s action at lane position `k` updates after it.
    pub fn after(&self, rank: usize, k: usize) -> bool {
        self.after.get(rank).and_then(|l| l.get(k)).copied().unwrap_or(false)
    }

    /// The weight version micro-batch `mb` uses on `stage` (`u32::MAX` where it has no forward).
    pub fn version(&self, stage: usize, mb: usize) -> u32 {
        self.versions.get(stage).and_then(|v| v.get(mb)).copied().unwrap_or(u32::MAX)
    }

    /// The versions every micro-batch uses on `stage`, by micro-batch.
    pub fn versions_of(&self, stage: usize) -> &[u32] {
        self.versions.get(stage).map_or(&[], Vec::as_slice)
    }

    /// The most versions stage `stage` ever stashes at once (besides its parameters).
    pub fn peak_stashed(&self, stage: usize) -> u32 {
        self.peaks.get(stage).copied().unwrap_or(0)
    }

    /// Whether these updates were worked out for `schedule` (its stages, and one flag per
    /// action of its lanes).
    pub fn fits(&self, schedule: &Schedule) -> bool {
        self.versions.len() == schedule.stages()
            && self.after.len() == schedule.lanes.len()
            && self.after.iter().zip(&schedule.lanes).all(|(a, l)| a.len() == l.len())
    }

    /// For each rank and lane position: the bytes of the versions the rank's stages have
    /// stashed after that action (before any update that follows it), a version of stage `s`
    /// being `version_bytes[s]` bytes (saturating at `u64::MAX`); an error unless there is one
    /// size per stage.
    pub fn stash_bytes(&self, version_bytes: &[u64]) -> Result<Vec<Vec<u64>>> {
        if version_bytes.len() != self.versions.len() {
            return Err(Error::Cost(format!(
                "{} weight-version sizes for {} stages; give one per stage",
                version_bytes.len(),
                self.versions.len()
            )));
        }
        // Each stage lives on one rank: a lane's total moves only with its own stages' counts
        // (in u128, exact; read out saturated).
        let mut count = vec![0u32; version_bytes.len()];
        Ok(self
            .stash
            .iter()
            .map(|lane| {
                let mut total = 0u128;
                let mut set = |stage: usize, n: u32, total: &mut u128| {
                    let b = u128::from(version_bytes[stage]);
                    *total = *total - u128::from(count[stage]) * b + u128::from(n) * b;
                    count[stage] = n;
                };
                lane.iter()
                    .map(|x| {
                        set(x.stage, x.after_action, &mut total);
                        let now = u64::try_from(total).unwrap_or(u64::MAX);
                        set(x.stage, x.after_update, &mut total);
                        now
                    })
                    .collect()
            })
            .collect())
    }
}

/// Replays each lane with the versions fixed: version `u` of a stage lives from its update to
/// the later of the next update and its last user's finishing backward (see the module doc). One
/// pass, a counter per stage: a version joins the stash when an update leaves it in use, and
/// leaves it when its last user finishes below the newest.
fn stash_counts(
    schedule: &Schedule,
    versions: &[Vec<u32>],
    after: &[Vec<bool>],
    finishes: &dyn Fn(&Action) -> bool,
) -> Vec<Vec<StashCount>> {
    // Per stage: micro-batches still to finish per version, the newest version, and how many
    // versions below it are still in use.
    let mut uses: Vec<Vec<usize>> = versions
        .iter()
        .map(|v| {
            let used = v.iter().filter(|&&u| u != u32::MAX);
            let mut n = vec![0usize; used.clone().max().map_or(0, |&u| u as usize + 1)];
            for &u in used {
                n[u as usize] += 1;
            }
            n
        })
        .collect();
    let mut newest = vec![0u32; versions.len()];
    let mut stashed = vec![0u32; versions.len()];
    schedule
        .lanes
        .iter()
        .zip(after)
        .map(|(lane, after)| {
            lane.iter()
                .zip(after)
                .map(|(a, &updates)| {
                    let s = a.stage();
                    if finishes(a) {
                        let v = versions[s][a.mb()];
                        if let Some(n) = uses[s].get_mut(v as usize).filter(|n| **n > 0) {
                            *n -= 1;
                            if *n == 0 && v < newest[s] {
                                stashed[s] -= 1;
                            }
                        }
                    }
                    let after_action = stashed[s];
                    if updates {
                        if uses[s].get(newest[s] as usize).is_some_and(|&n| n > 0) {
                            stashed[s] += 1;
                        }
                        newest[s] += 1;
                    }
                    StashCount { stage: s, after_action, after_update: stashed[s] }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{back_to_back, one_f_one_b, zb_h1};

    #[test]
    fn each_stage_updates_after_its_last_backward_of_each_step() {
        let s = zb_h1(2, 3).unwrap();
        let run = back_to_back(&s, 2).unwrap();
        let u = Updates::new(&run, 3, Versioning::Current).unwrap();
        for (r, lane) in run.lanes.iter().enumerate() {
            let marked: Vec<Action> = (0..lane.len()).filter(|&k| u.after(r, k)).map(|k| lane[k]).collect();
            assert_eq!(marked, vec![Action::new(r, Op::W, 2), Action::new(r, Op::W, 5)]);
            assert_eq!(u.versions_of(r), &[0, 0, 0, 1, 1, 1]);
        }
        // Synchronous runs stash nothing.
        assert!(u.stash_bytes(&[100, 100]).unwrap().iter().flatten().all(|&b| b == 0));
        assert!(u.stash_bytes(&[100]).is_err());
    }

    #[test]
    fn a_forward_before_the_updates_it_needs_is_refused() {
        // One 1F1B step of 4 read as two groups of 2: rank 0 runs F2 before B1.
        let s = one_f_one_b(2, 4).unwrap();
        let e = Updates::new(&s, 2, Versioning::Current).unwrap_err().to_string();
        assert!(e.contains("needs a barrier between steps"), "{e}");
        assert!(Updates::new(&s, 3, Versioning::Current).unwrap_err().to_string().contains("do not divide"));
        // Stale versions let the same stream run.
        Updates::new(&s, 2, Versioning::DoubleBuffered).unwrap();
        Updates::new(&s, 1, Versioning::Stashed).unwrap();
    }

    #[test]
    fn pipedream_versions_lag_by_the_backwards_still_to_come() {
        // 1F1B over a stream, updating after every micro-batch: rank r has run the backwards of
        // micro-batches 0 … j−(p−r) before F(r, j), so it uses version max(0, j + 1 − (p − r)).
        let (p, m) = (4, 12);
        let s = one_f_one_b(p, m).unwrap();
        let u = Updates::new(&s, 1, Versioning::Stashed).unwrap();
        for r in 0..p {
            for j in 0..m {
                assert_eq!(u.version(r, j) as usize, (j + 1).saturating_sub(p - r), "stage {r}, mb {j}");
            }
            // p − r micro-batches in flight, each on its own version, besides the newest: the
            // first stage keeps p − 1 stashed (PipeDream: up to p versions on the first stage).
            assert_eq!(u.peak_stashed(r) as usize, p - r - 1, "stage {r}");
        }
    }

    #[test]
    fn two_buffered_weights_lag_one_update_and_stash_one_version() {
        let (p, m, every) = (3, 12, 4);
        let s = one_f_one_b(p, m).unwrap();
        let u = Updates::new(&s, every, Versioning::DoubleBuffered).unwrap();
        for r in 0..p {
            let want: Vec<u32> = (0..m).map(|j| (j / every).saturating_sub(1) as u32).collect();
            assert_eq!(u.versions_of(r), want.as_slice());
            // Two versions at most: the one in use and the newest.
            assert_eq!(u.peak_stashed(r), 1, "stage {r}");
        }
        let bytes = u.stash_bytes(&[10, 20, 30]).unwrap();
        assert_eq!(bytes.iter().map(|l| *l.iter().max().unwrap()).collect::<Vec<_>>(), vec![10, 20, 30]);
    }

    #[test]
    fn backwards_out_of_group_order_are_refused() {
        let s = one_f_one_b(1, 2).unwrap();
        let mut lanes: Vec<Vec<Action>> = s.lanes.iter().map(|l| l.to_vec()).collect();
        // F0 F1 B1 B0: group 1 finishes before group 0.
        lanes[0] = vec![
            Action::new(0, Op::F, 0),
            Action::new(0, Op::F, 1),
            Action::new(0, Op::B, 1),
            Action::new(0, Op::B, 0),
        ];
        let bad = Schedule::new("x", 1, 1, 2, s.placement, lanes);
        let e = Updates::new(&bad, 1, Versioning::Stashed).unwrap_err().to_string();
        assert!(e.contains("group by group"), "{e}");
    }
}
