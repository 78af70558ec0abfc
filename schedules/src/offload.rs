//! Offload planning: inserting `O` (offload) and `L` (reload) actions into a schedule, as
//! PipeOffload (Wan et al., ICML 2025) does, for the micro-batches an [`Offload`] names.
//!
//! `O(s, j)` moves what `F(s, j)` kept for the backward off the device into host memory; `L(s, j)`
//! brings it back. `O` goes right after the forward, so the kept bytes leave the device as soon as
//! they exist; `L` right before the first action that reads them — the pair's `R` if it has one,
//! else its backward (`I` or `B`) — so they come back as late as the lane allows. Between the
//! two the pair holds nothing on the device: a rank's peak falls by what the micro-batches in
//! flight at its peak had offloaded, and its host memory holds that instead.
//!
//! Invariant: the result validates (`validate`'s rules 3 and 4 know `O` and `L`), and pairs the
//! plan does not name are untouched.

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;

use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::schedule::Schedule;
use crate::validate::validate;

/// Which (stage, micro-batch) pairs offload what their forward keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offload {
    /// Every micro-batch of every stage.
    All,
    /// Micro-batches `0, K, 2K, …` of every stage.
    Every(NonZeroUsize),
    /// Every micro-batch of the listed stages (in increasing order, no repeats).
    Stages(Vec<usize>),
}

impl Offload {
    /// Whether micro-batch `mb` of stage `stage` offloads.
    pub fn covers(&self, stage: usize, mb: usize) -> bool {
        match self {
            Offload::All => true,
            Offload::Every(k) => mb % k.get() == 0,
            Offload::Stages(list) => list.binary_search(&stage).is_ok(),
        }
    }

    /// Whether any micro-batch of `stage` offloads.
    pub fn covers_stage(&self, stage: usize) -> bool {
        self.covers(stage, 0)
    }

    /// Refuses a plan naming a stage the schedule does not have (`stages` of them).
    pub fn check(&self, stages: usize) -> Result<()> {
        if let Offload::Stages(list) = self {
            if let Some(&bad) = list.iter().find(|&&s| s >= stages) {
                return Err(Error::Cost(format!(
                    "--offload names stage {bad}, but the schedule has {stages} stages (0..={}); name stages that exist",
                    stages.saturating_sub(1)
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Offload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offload::All => write!(f, "all"),
            Offload::Every(k) => write!(f, "every:{k}"),
            Offload::Stages(list) => {
                write!(f, "{}", list.iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
            }
        }
    }
}

impl FromStr for Offload {
    type Err = Error;

    /// `all`, `every:K` (K ≥ 1) or a comma-separated list of stage numbers (`0,1`).
    fn from_str(text: &str) -> Result<Offload> {
        let bad = |why: &str| {
            Error::Cost(format!(
                "--offload {text:?}: {why}; give all, every:K (every K-th micro-batch of every stage) or stage numbers like 0,1"
            ))
        };
        let text = text.trim();
        if text == "all" {
            return Ok(Offload::All);
        }
        if let Some(k) = text.strip_prefix("every:") {
            let k: usize = k.trim().parse().map_err(|_| bad("K must be a whole number"))?;
            return NonZeroUsize::new(k).map(Offload::Every).ok_or_else(|| bad("K must be at least 1"));
        }
        let mut list = text
            .split(',')
            .map(|s| s.trim().parse::<usize>().map_err(|_| bad(&format!("{:?} is not a stage number", s.trim()))))
            .collect::<Result<Vec<_>>>()?;
        list.sort_unstable();
        list.dedup();
        Ok(Offload::Stages(list))
    }
}

/// `schedule` with `O(s, j)` right after `F(s, j)` and `L(s, j)` right before the first of
/// `R(s, j)`, `I(s, j)`, `B(s, j)`, for every pair `offload` covers, validated. Pairs that
/// already offload are kept as they are (so planning twice changes nothing).
pub fn with_offload(schedule: &Schedule, offload: &Offload) -> Result<Schedule> {
    offload.check(schedule.stages())?;
    if schedule.is_forward_only() {
        return Err(Error::BadArgs {
            schedule: schedule.name.clone(),
            reason: "a forward-only pass keeps nothing for a backward, so there is nothing to offload; drop --offload"
                .into(),
        });
    }
    let m = schedule.m;
    let mut planned = vec![false; schedule.stages() * m];
    for a in schedule.actions().filter(|a| a.op == Op::O) {
        planned[a.stage() * m + a.mb()] = true;
    }
    let mut reloaded = planned.clone();
    let mut out = schedule.clone();
    for lane in &mut out.lanes {
        let mut next = Vec::with_capacity(lane.len() + lane.len() / 2);
        for &a in lane.iter() {
            let k = a.stage() * m + a.mb();
            let reads = a.op == Op::R || a.op.is_input_backward();
            if reads && offload.covers(a.stage(), a.mb()) && !reloaded[k] {
                reloaded[k] = true;
                next.push(Action::new(a.stage(), Op::L, a.mb()));
            }
            next.push(a);
            if a.op == Op::F && offload.covers(a.stage(), a.mb()) && !planned[k] {
                planned[k] = true;
                next.push(Action::new(a.stage(), Op::O, a.mb()));
            }
        }
        *lane = next.into();
    }
    if !out.name.ends_with("+offload") {
        out.name = format!("{}+offload", out.name);
    }
    validate(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::Kind;

    fn lane(s: &Schedule, r: usize) -> Vec<String> {
        s.lanes[r].iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn offloads_after_the_forward_and_reloads_before_the_first_reader() {
        let s = Kind::ZbH1.generate(2, 1, 2).unwrap();
        let o = with_offload(&s, &Offload::Stages(vec![0])).unwrap();
        assert_eq!(lane(&o, 0), ["0F0", "0O0", "0F1", "0O1", "0L0", "0I0", "0W0", "0L1", "0I1", "0W1"]);
        assert_eq!(o.lanes[1], s.lanes[1]);
        assert_eq!(o.name, "zb-h1+offload");
        assert_eq!(with_offload(&o, &Offload::Stages(vec![0])).unwrap(), o);
        // With recompute the reload comes before R, which reads the checkpoints.
        let r = crate::with_recompute(&s, &[true, false]).unwrap();
        let both = with_offload(&r, &Offload::Every(NonZeroUsize::new(2).unwrap())).unwrap();
        assert_eq!(lane(&both, 0), ["0F0", "0O0", "0F1", "0L0", "0R0", "0I0", "0W0", "0R1", "0I1", "0W1"]);
        assert_eq!(lane(&both, 1), ["1F0", "1O0", "1L0", "1I0", "1F1", "1I1", "1W0", "1W1"]);
    }

    #[test]
    fn every_generator_validates_with_offload() {
        for kind in Kind::ALL {
            for (p, m) in [(1, 2), (2, 4), (3, 6), (4, 8)] {
                let s = kind.generate(p, kind.default_chunks(), m).unwrap();
                let o = with_offload(&s, &Offload::All).unwrap();
                assert_eq!(o.num_actions(), s.num_actions() + 2 * s.stages() * m, "{kind}");
            }
        }
    }

    #[test]
    fn parses_and_prints_plans() {
        assert_eq!("all".parse::<Offload>().unwrap(), Offload::All);
        assert_eq!("every:3".parse::<Offload>().unwrap().to_string(), "every:3");
        assert_eq!("2, 0,2".parse::<Offload>().unwrap(), Offload::Stages(vec![0, 2]));
        for bad in ["every:0", "every:x", "", "a,b", "-1"] {
            let e = bad.parse::<Offload>().unwrap_err().to_string();
            assert!(e.contains("--offload"), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_stages_out_of_range_and_forward_only_schedules() {
        let s = Kind::OneFOneB.generate(2, 1, 2).unwrap();
        let e = with_offload(&s, &Offload::Stages(vec![2])).unwrap_err().to_string();
        assert!(e.contains("names stage 2, but the schedule has 2 stages"), "{e}");
        let f = Kind::Forward.generate(2, 1, 2).unwrap();
        assert!(with_offload(&f, &Offload::All).unwrap_err().to_string().contains("nothing to offload"));
    }
}
