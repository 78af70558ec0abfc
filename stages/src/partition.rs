//! Partitioning a model's layers into contiguous pipeline stages, and `StageSpec`: one stage's
//! layers, recompute policy and device.
//!
//! Invariant: the ranges returned cover `0..layers` in order, each non-empty, so stage `s` feeds
//! stage `s + 1` and the last stage holds the head and the loss.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::policy::{Policies, RecomputePolicy};
use crate::spec::ModelSpec;

/// How to split the layers among stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    /// Stage `s` of `N` gets layers `⌊s·n/N⌋ .. ⌊(s+1)·n/N⌋`.
    Even,
    /// Contiguous stages minimising the largest stage's parameter count.
    Balanced,
    /// These many layers per stage, in order.
    Explicit(Vec<usize>),
}

/// One pipeline stage: which layers, which recompute policy, which device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Position in the pipeline, `0..S`.
    pub index: usize,
    /// Global indices of its layers.
    pub layers: Range<usize>,
    /// What it keeps between `F` and its backward.
    pub policy: RecomputePolicy,
    /// Where it runs.
    #[serde(default)]
    pub device: Device,
}

impl Partition {
    /// The layer ranges of `stages` stages of `model`.
    pub fn ranges(&self, model: &ModelSpec, stages: usize) -> Result<Vec<Range<usize>>> {
        let n = model.num_layers();
        if stages == 0 || stages > n {
            return Err(Error::Partition(format!(
                "{stages} stages for a model of {n} layers ({}, {} blocks); use 1 to {n} stages, or add blocks",
                model.name, model.blocks
            )));
        }
        let counts = match self {
            Partition::Even => (0..stages).map(|s| (s + 1) * n / stages - s * n / stages).collect(),
            Partition::Balanced => {
                balanced(&model.layers().iter().map(|l| l.param_count()).collect::<Vec<_>>(), stages)
            }
            Partition::Explicit(c) => {
                if c.len() != stages || c.iter().sum::<usize>() != n || c.contains(&0) {
                    return Err(Error::Partition(format!(
                        "layer counts {self} do not split {n} layers into {stages} non-empty stages; give {stages} counts ≥ 1 summing to {n}"
                    )));
                }
                c.clone()
            }
        };
        let mut start = 0;
        Ok(counts
            .iter()
            .map(|c| {
                start += c;
                start - c..start
            })
            .collect())
    }
}

/// Layer counts of `stages` contiguous groups minimising the largest group's weight (dynamic
/// programming over split points; ties go to the earliest split).
fn balanced(weights: &[usize], stages: usize) -> Vec<usize> {
    let n = weights.len();
    let prefix: Vec<usize> = std::iter::once(0)
        .chain(weights.iter().scan(0, |s, w| {
            *s += w;
            Some(*s)
        }))
        .collect();
    // best[k][i]: smallest max-weight splitting the first i layers into k groups; cut[k][i]: where
    // the last group starts.
    let mut best = vec![vec![usize::MAX; n + 1]; stages + 1];
    let mut cut = vec![vec![0; n + 1]; stages + 1];
    best[0][0] = 0;
    for k in 1..=stages {
        for i in k..=n {
            for j in (k - 1)..i {
                if best[k - 1][j] == usize::MAX {
                    continue;
                }
                let cost = best[k - 1][j].max(prefix[i] - prefix[j]);
                if cost < best[k][i] {
                    best[k][i] = cost;
                    cut[k][i] = j;
                }
            }
        }
    }
    let mut counts = vec![0; stages];
    let mut i = n;
    for k in (1..=stages).rev() {
        counts[k - 1] = i - cut[k][i];
        i = cut[k][i];
    }
    counts
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Even => write!(f, "even"),
            Partition::Balanced => write!(f, "balanced"),
            Partition::Explicit(c) => {
                let parts: Vec<String> = c.iter().map(|x| x.to_string()).collect();
                write!(f, "{}", parts.join(","))
            }
        }
    }
}

impl FromStr for Partition {
    type Err = Error;

    /// `even`, `balanced`, or layer counts per stage such as `2,3,3`.
    fn from_str(s: &str) -> Result<Partition> {
        match s.trim() {
            "even" => Ok(Partition::Even),
            "balanced" => Ok(Partition::Balanced),
            t => t
                .split(',')
                .map(|c| c.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Partition::Explicit)
                .map_err(|_| {
                    Error::Partition(format!(
                        "{t:?} is not a partition; write even, balanced, or layer counts per stage like 2,3,3"
                    ))
                }),
        }
    }
}

impl ModelSpec {
    /// The specs of `stages` stages of this model: layers by `partition`, policies from
    /// `policies` (one for all or one per stage), all on the CPU.
    pub fn stage_specs(&self, stages: usize, partition: &Partition, policies: &Policies) -> Result<Vec<StageSpec>> {
        self.validate()?;
        let ranges = partition.ranges(self, stages)?;
        let policies = policies.for_stages(stages)?;
        Ok(ranges
            .into_iter()
            .zip(policies)
            .enumerate()
            .map(|(index, (layers, policy))| StageSpec { index, layers, policy, device: Device::Cpu })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_splits_spread_the_remainder() {
        let m = ModelSpec::small(); // 11 layers
        assert_eq!(Partition::Even.ranges(&m, 4).unwrap(), vec![0..2, 2..5, 5..8, 8..11]);
        assert_eq!(Partition::Even.ranges(&m, 1).unwrap(), vec![0..11]);
        assert_eq!(Partition::Even.ranges(&m, 11).unwrap().len(), 11);
    }

    #[test]
    fn balanced_minimises_the_largest_stage() {
        assert_eq!(balanced(&[1, 1, 1, 10], 2), vec![3, 1]);
        assert_eq!(balanced(&[5, 5, 5, 5], 2), vec![2, 2]);
        let m = ModelSpec::small();
        let r = Partition::Balanced.ranges(&m, 2).unwrap();
        assert_eq!(r, vec![0..5, 5..11], "four blocks each side; the small layers follow");
    }

    #[test]
    fn explicit_and_errors() {
        let m = ModelSpec::tiny(); // 6 layers
        let p: Partition = "1,2,3".parse().unwrap();
        assert_eq!(p.ranges(&m, 3).unwrap(), vec![0..1, 1..3, 3..6]);
        assert_eq!(p.to_string(), "1,2,3");
        let e = p.ranges(&m, 2).unwrap_err().to_string();
        assert!(e.contains("give 2 counts ≥ 1 summing to 6"), "{e}");
        let e = Partition::Even.ranges(&m, 7).unwrap_err().to_string();
        assert!(e.contains("7 stages for a model of 6 layers"), "{e}");
        assert!(Partition::Even.ranges(&m, 0).is_err());
        assert!("3,x".parse::<Partition>().unwrap_err().to_string().contains("even, balanced"));
        let specs = m.stage_specs(2, &Partition::Even, &"full,none".parse().unwrap()).unwrap();
        assert_eq!(specs[1], StageSpec { index: 1, layers: 3..6, policy: RecomputePolicy::None, device: Device::Cpu });
    }
}
