//! Recompute (activation checkpointing) policies, per stage, and how they are written.
//!
//! `none` keeps every intermediate; `full` keeps only the stage input; `every:K` keeps the input
//! of layers 0, K, 2K, … of the stage; `sqrt` is `every:⌈√n⌉` for a stage of n layers (Chen et
//! al., 2016). The last stage also keeps its target while checkpointed. `R` re-runs the forward
//! of each segment from its checkpoint, consuming the checkpoints and re-creating everything
//! `none` would have kept: after `R` a micro-batch holds exactly what it holds under `none`.
//! So `every:K` and `sqrt` hold less than `none` between `F` and `R`, more than `full`, and cost
//! the same recompute as `full` (one forward of the stage): in this model of one `R` per
//! micro-batch, a checkpoint interval trades memory between `F` and `R` only.
//!
//! `selective` (Korthikanti et al., 2022) checkpoints nothing: every layer keeps what its
//! selective forward keeps — everything but what is large and cheap to re-create (attention drops
//! its probabilities, `heads·seq` floats per token, and keeps Q, K, V) — and `R` restores what was
//! dropped, layer by layer, from what was kept; after `R` the micro-batch again holds what `none`
//! holds. [`RecomputePolicy::kept`] is the one place a policy becomes what `F` keeps.
//!
//! `optimal:BYTES` leaves the model of one `R`: it runs, per micro-batch, the sequence the
//! dynamic program of Beaumont et al. ([`crate::checkpointing::solve`]) finds fastest for the
//! stage's chain of layers within BYTES (see `optimal.rs` for the chain, what the budget counts,
//! and the split into ops). `F` is the sequence's first sweep and keeps, per layer, nothing,
//! its input, or everything; the sequence never recomputes before its first backward, so there
//! is no `R` (`drops` is false) and `I` runs the rest of it, recomputations interleaved with the
//! layers' backwards.
//!
//! Invariant: `checkpoints(n)` always starts with layer 0 (when n > 0) and is strictly
//! increasing, so the segments it defines cover the stage exactly once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::byte_size::ByteSize;
use crate::error::{Error, Result};

/// What `F` keeps of a micro-batch on a stage, under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// What every layer's backward needs (`none`).
    Everything,
    /// What every layer's selective forward keeps (`selective`); `R` restores the rest.
    Selective,
    /// The input of layers 0, k, 2k, … of the stage, and the target on the last stage (`full`,
    /// `every:K`, `sqrt`); `R` re-runs each segment.
    Inputs(usize),
    /// What the first sweep of the optimal sequence within this many bytes keeps (`optimal`);
    /// `I` runs the rest of the sequence.
    Optimal(u64),
}

/// What a stage keeps of a micro-batch's forward for its backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RecomputePolicy {
    /// Keep every intermediate; `R` does nothing.
    #[default]
    None,
    /// Keep only the stage input; `R` re-runs the whole stage.
    Full,
    /// Keep the input of every K-th layer; `R` re-runs each segment from its checkpoint.
    Every(usize),
    /// `Every(⌈√layers⌉)`.
    Sqrt,
    /// Every layer keeps what its selective forward keeps; `R` restores the rest (attention's
    /// probabilities).
    Selective,
    /// The optimal persistent sequence of the stage's chain within this many bytes per
    /// micro-batch (`optimal:4MiB`): `F` keeps what its first sweep keeps, `I` interleaves the
    /// recomputations with the backwards; no `R`.
    Optimal(u64),
}

impl RecomputePolicy {
    /// Whether `R` has work to do: `F` drops something that `R` re-creates before `I`. False for
    /// `none`, and for `optimal`, whose recomputations all run inside `I`.
    pub fn drops(self) -> bool {
        !matches!(self, RecomputePolicy::None | RecomputePolicy::Optimal(_))
    }

    /// What `F` keeps of a micro-batch on a stage of `layers` layers: the one place each policy
    /// is turned into what the stage does and what its bytes are.
    pub fn kept(self, layers: usize) -> Kept {
        match self {
            RecomputePolicy::None => Kept::Everything,
            RecomputePolicy::Selective => Kept::Selective,
            RecomputePolicy::Full => Kept::Inputs(layers.max(1)),
            RecomputePolicy::Every(k) => Kept::Inputs(k.max(1)),
            RecomputePolicy::Sqrt => Kept::Inputs(ceil_sqrt(layers).max(1)),
            RecomputePolicy::Optimal(budget) => Kept::Optimal(budget),
        }
    }

    /// Indices (within the stage) of the layers whose input `F` keeps as segment starts for
    /// `R`; empty under `none`, `selective` and `optimal` (whose checkpoints depend on the
    /// layers' sizes: see `OptimalPlan`).
    pub fn checkpoints(self, layers: usize) -> Vec<usize> {
        match self.kept(layers) {
            Kept::Inputs(k) => (0..layers).step_by(k).collect(),
            Kept::Everything | Kept::Selective | Kept::Optimal(_) => vec![],
        }
    }
}

fn ceil_sqrt(n: usize) -> usize {
    let mut k = (n as f64).sqrt() as usize;
    while k * k < n {
        k += 1;
    }
    while k > 0 && (k - 1) * (k - 1) >= n {
        k -= 1;
    }
    k
}

impl fmt::Display for RecomputePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecomputePolicy::None => write!(f, "none"),
            RecomputePolicy::Full => write!(f, "full"),
            RecomputePolicy::Every(k) => write!(f, "every:{k}"),
            RecomputePolicy::Sqrt => write!(f, "sqrt"),
            RecomputePolicy::Selective => write!(f, "selective"),
            RecomputePolicy::Optimal(budget) => write!(f, "optimal:{}", ByteSize(*budget).exact()),
        }
    }
}

impl FromStr for RecomputePolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<RecomputePolicy> {
        let t = s.trim();
        match t {
            "none" => return Ok(RecomputePolicy::None),
            "full" => return Ok(RecomputePolicy::Full),
            "sqrt" => return Ok(RecomputePolicy::Sqrt),
            "selective" => return Ok(RecomputePolicy::Selective),
            _ => {}
        }
        if let Some(budget) = t.strip_prefix("optimal:") {
            return budget
                .parse::<ByteSize>()
                .map(|b| RecomputePolicy::Optimal(b.0))
                .map_err(|e| Error::Policy(format!("{t:?}: BYTES in optimal:BYTES, the budget per micro-batch: {e}")));
        }
        match t.strip_prefix("every:").map(|k| k.trim().parse::<usize>()) {
            Some(Ok(k)) if k >= 1 => Ok(RecomputePolicy::Every(k)),
            Some(_) => Err(Error::Policy(format!("{t:?}: K in every:K must be a whole number ≥ 1, e.g. every:2"))),
            None => Err(Error::Policy(format!(
                "{t:?} is not a policy; write none, full, every:K (K ≥ 1), sqrt, selective or optimal:BYTES (e.g. optimal:4MiB)"
            ))),
        }
    }
}

impl TryFrom<String> for RecomputePolicy {
    type Error = Error;
    fn try_from(s: String) -> Result<RecomputePolicy> {
        s.parse()
    }
}

impl From<RecomputePolicy> for String {
    fn from(p: RecomputePolicy) -> String {
        p.to_string()
    }
}

/// Policies for the stages of a pipeline: one for all, or one per stage (`"full,none"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies(pub Vec<RecomputePolicy>);

impl Policies {
    /// One policy for every stage.
    pub fn all(p: RecomputePolicy) -> Policies {
        Policies(vec![p])
    }

    /// The policy of each of `stages` stages.
    pub fn for_stages(&self, stages: usize) -> Result<Vec<RecomputePolicy>> {
        match self.0.len() {
            1 => Ok(vec![self.0[0]; stages]),
            n if n == stages => Ok(self.0.clone()),
            n => Err(Error::Policy(format!(
                "{n} policies given ({self}) for {stages} stages; give one for all stages or exactly one per stage"
            ))),
        }
    }
}

impl fmt::Display for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|p| p.to_string()).collect();
        write!(f, "{}", parts.join(","))
    }
}

impl FromStr for Policies {
    type Err = Error;

    fn from_str(s: &str) -> Result<Policies> {
        if s.trim().is_empty() {
            return Err(Error::Policy("empty policy list; write e.g. `none`, `full` or `full,none`".into()));
        }
        s.split(',').map(str::parse).collect::<Result<Vec<_>>>().map(Policies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RecomputePolicy::*;

    #[test]
    fn parse_and_print_round_trip() {
        for (text, p) in
            [("none", None), ("full", Full), ("every:2", Every(2)), ("sqrt", Sqrt), ("selective", Selective)]
        {
            assert_eq!(text.parse::<RecomputePolicy>().unwrap(), p);
            assert_eq!(p.to_string(), text);
        }
        assert_eq!(" every: 3 ".parse::<RecomputePolicy>().unwrap(), Every(3));
        assert_eq!("optimal:4MiB".parse::<RecomputePolicy>().unwrap(), Optimal(4 << 20));
        assert_eq!("optimal: 1.5KiB".parse::<RecomputePolicy>().unwrap(), Optimal(1536));
        assert_eq!(Optimal(4 << 20).to_string(), "optimal:4MiB");
        assert_eq!(Optimal(1000).to_string(), "optimal:1000B");
        assert_eq!("optimal:1000B".parse::<RecomputePolicy>().unwrap(), Optimal(1000));
        assert!(!Optimal(1).drops() && Full.drops());
        let list: Policies = "full,none,every:2".parse().unwrap();
        assert_eq!(list.0, vec![Full, None, Every(2)]);
        assert_eq!(list.to_string(), "full,none,every:2");
    }

    #[test]
    fn bad_policies_are_clear_errors() {
        let e = "every:0".parse::<RecomputePolicy>().unwrap_err().to_string();
        assert!(e.contains("≥ 1"), "{e}");
        let e = "optimal:4 parsecs".parse::<RecomputePolicy>().unwrap_err().to_string();
        assert!(e.contains("optimal:BYTES") && e.contains("unknown unit `parsecs`"), "{e}");
        let e = "optimal:".parse::<RecomputePolicy>().unwrap_err().to_string();
        assert!(e.contains("no byte size given"), "{e}");
        let e = "optimal:-1MiB".parse::<RecomputePolicy>().unwrap_err().to_string();
        assert!(e.contains("negative"), "{e}");
        let e = "some".parse::<RecomputePolicy>().unwrap_err().to_string();
        assert!(e.contains("none, full, every:K"), "{e}");
        assert!("full,,none".parse::<Policies>().is_err());
        let e = Policies(vec![Full, None]).for_stages(3).unwrap_err().to_string();
        assert!(e.contains("2 policies given (full,none) for 3 stages"), "{e}");
        assert_eq!(Policies::all(Sqrt).for_stages(3).unwrap(), vec![Sqrt; 3]);
    }

    #[test]
    fn checkpoints_cover_the_stage() {
        assert_eq!(None.checkpoints(5), Vec::<usize>::new());
        assert_eq!(Selective.checkpoints(5), Vec::<usize>::new());
        assert!(Selective.drops() && !None.drops());
        assert_eq!(Full.checkpoints(5), vec![0]);
        assert_eq!(Every(2).checkpoints(5), vec![0, 2, 4]);
        assert_eq!(Every(9).checkpoints(5), vec![0]);
        assert_eq!(Sqrt.checkpoints(11), vec![0, 4, 8]);
        assert_eq!(Sqrt.checkpoints(9), vec![0, 3, 6]);
        for n in 1..50 {
            let k = ceil_sqrt(n);
            assert!(k * k >= n && (k - 1) * (k - 1) < n, "{n}");
        }
    }
}
