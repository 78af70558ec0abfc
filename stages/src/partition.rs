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
use crate::spec::{LayerSpec, ModelSpec};

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
                "{stages} stages for a model of {n} layers ({}); use 1 to {n} stages, or add layers",
                model.name
            )));
        }
        let counts = match self {
            Partition::Even => {
                // In u128: (s + 1)·n need not fit in a usize for a deep model.
                let at = |s: usize| (s as u128 * n as u128 / stages as u128) as usize;
                (0..stages).map(|s| at(s + 1) - at(s)).collect()
            }
            Partition::Balanced => {
                // Parameters of layers 0..i, in time independent of the number of layers.
                let prefix =
                    |i: usize| model.sum_over(&(0..i), 1, LayerSpec::checked_param_count).unwrap_or(usize::MAX);
                if model.checked_param_count().is_none() {
                    return Err(Error::Partition(format!(
                        "{}: the parameter count overflows; validate the model first",
                        model.name
                    )));
                }
                balanced(&prefix, n, stages)
            }
            Partition::Explicit(c) => {
                let total = c.iter().try_fold(0usize, |t, &x| t.checked_add(x));
                if c.len() != stages || total != Some(n) || c.contains(&0) {
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

/// Layer counts of `stages` contiguous, non-empty groups of layers weighing `weights` (one per
/// layer, e.g. a layer's time in integer units) whose heaviest group weighs least — the split
/// [`Partition::Balanced`] makes by parameter count, here by any weight. An error when there
/// are fewer layers than stages, no stage, or the weights' sum overflows.
pub fn balanced_by_weight(weights: &[u64], stages: usize) -> Result<Vec<usize>> {
    let n = weights.len();
    if stages == 0 || stages > n {
        return Err(Error::Partition(format!("{stages} stages for {n} layers; use 1 to {n} stages, or add layers")));
    }
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0usize);
    for &w in weights {
        let next = usize::try_from(w).ok().and_then(|w| prefix[prefix.len() - 1].checked_add(w));
        prefix.push(next.ok_or_else(|| Error::Partition("the layers' weights overflow when summed".into()))?);
    }
    Ok(balanced(&|i: usize| prefix[i], n, stages))
}

/// Layer counts of `stages` contiguous, non-empty groups of the `n` layers whose largest group
/// weighs least, where `prefix(i)` is the weight of layers `0..i` (non-decreasing). Among the
/// optimal splits it picks the one whose last group starts earliest, then the same for the
/// layers before it, recursively (what a dynamic program over split points finds when it keeps
/// the earliest split; the tests compare the two).
///
/// Why this is exact: for the layers `0..end` in `k` groups with least bound `B`, every start
/// `j ≥ k − 1` of the last group with `prefix(end) − prefix(j) ≤ B` leaves layers `0..j` that
/// still split into `k − 1` groups within `B` (truncating an optimal split only lightens its
/// groups), so the earliest such `j` is a binary search. `B` itself is a binary search over
/// bounds, each tested greedily (every group as long as the bound allows, found by binary search
/// over `prefix`). Time `O(stages² · log(weight) · log n)`, memory `O(stages)`: nothing grows
/// with the number of layers.
fn balanced(prefix: &dyn Fn(usize) -> usize, n: usize, stages: usize) -> Vec<usize> {
    let mut counts = vec![0; stages];
    let mut end = n;
    for k in (1..=stages).rev() {
        let bound = least_bound(prefix, end, k);
        let (mut lo, mut hi) = (k - 1, end - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if prefix(end) - prefix(mid) <= bound {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        counts[k - 1] = end - lo;
        end = lo;
    }
    counts
}

/// The least bound `B` such that layers `0..end` split into `k` non-empty groups of weight ≤ `B`
/// (`end ≥ k`).
fn least_bound(prefix: &dyn Fn(usize) -> usize, end: usize, k: usize) -> usize {
    let (mut lo, mut hi) = (0, prefix(end));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(prefix, end, k, mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Whether layers `0..end` split into at most `k` groups of weight ≤ `bound` each (then also
/// into exactly `k` non-empty ones, by splitting groups, when `end ≥ k`).
fn fits(prefix: &dyn Fn(usize) -> usize, end: usize, k: usize, bound: usize) -> bool {
    let (mut start, mut groups) = (0, 0);
    while start < end {
        if groups == k {
            return false;
        }
        // The furthest group end e in start..=end with prefix(e) − prefix(start) ≤ bound.
        let base = prefix(start);
        let (mut lo, mut hi) = (start, end);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if prefix(mid) - base <= bound {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo == start {
            return false;
        }
        start = lo;
        groups += 1;
    }
    true
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
    use crate::spec::Mlp;

    #[test]
    fn even_splits_spread_the_remainder() {
        let m = ModelSpec::small(); // 11 layers
        assert_eq!(Partition::Even.ranges(&m, 4).unwrap(), vec![0..2, 2..5, 5..8, 8..11]);
        assert_eq!(Partition::Even.ranges(&m, 1).unwrap(), vec![0..11]);
        assert_eq!(Partition::Even.ranges(&m, 11).unwrap().len(), 11);
    }

    fn of(weights: &[usize], stages: usize) -> Vec<usize> {
        let prefix = |i: usize| weights[..i].iter().sum::<usize>();
        balanced(&prefix, weights.len(), stages)
    }

    /// The dynamic program over split points (O(stages · n²)), keeping the earliest split: the
    /// reference the fast search must agree with.
    fn dynamic_program(weights: &[usize], stages: usize) -> Vec<usize> {
        let n = weights.len();
        let prefix: Vec<usize> = (0..=n).map(|i| weights[..i].iter().sum()).collect();
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

    #[test]
    fn balanced_minimises_the_largest_stage() {
        assert_eq!(of(&[1, 1, 1, 10], 2), vec![3, 1]);
        assert_eq!(balanced_by_weight(&[1, 1, 1, 10], 2).unwrap(), vec![3, 1]);
        assert_eq!(balanced_by_weight(&[4, 1, 1, 1, 1], 2).unwrap(), vec![1, 4]);
        assert!(balanced_by_weight(&[1], 2).is_err());
        assert_eq!(of(&[5, 5, 5, 5], 2), vec![2, 2]);
        let m = ModelSpec::small();
        let r = Partition::Balanced.ranges(&m, 2).unwrap();
        assert_eq!(r, vec![0..5, 5..11], "four blocks each side; the small layers follow");
    }

    #[test]
    fn balanced_agrees_with_the_dynamic_program() {
        // Weights from a fixed linear congruential sequence, with zeros and ties among them.
        let mut state = 12345u64;
        let mut next = |modulus: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % modulus) as usize
        };
        for case in 0..3000 {
            let n = 1 + next(14);
            let spread = [2, 5, 100][case % 3];
            let weights: Vec<usize> = (0..n).map(|_| next(spread)).collect();
            let stages = 1 + next(n as u64);
            assert_eq!(of(&weights, stages), dynamic_program(&weights, stages), "{weights:?} into {stages}");
        }
    }

    #[test]
    fn balanced_splits_a_deep_model_without_listing_its_layers() {
        // 10¹² blocks: the search never builds a list of layers or a table per layer.
        let deep = ModelSpec::small()
            .with_mlp(|s| *s = Mlp { hidden: 1, ffn: 1, input: 1, output: 1, blocks: 1_000_000_000_000 })
            .unwrap();
        let r = Partition::Balanced.ranges(&deep, 4).unwrap();
        assert_eq!(r.iter().map(|r| r.len()).sum::<usize>(), deep.num_layers());
        let weight = |r: &Range<usize>| deep.sum_over(r, 1, LayerSpec::checked_param_count).unwrap();
        let heaviest = r.iter().map(weight).max().unwrap();
        // Blocks weigh 6 each; the best possible largest stage holds ⌈(10¹² + 3 small layers)/4⌉ blocks' worth.
        assert!(heaviest <= 6 * (250_000_000_000 + 1), "{r:?}");
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
        let huge: Partition = format!("{},{}", usize::MAX, 7).parse().unwrap();
        assert!(huge.ranges(&m, 2).unwrap_err().to_string().contains("summing to 6"), "overflowing counts, no panic");
        let specs = m.stage_specs(2, &Partition::Even, &"full,none".parse().unwrap()).unwrap();
        assert_eq!(specs[1], StageSpec { index: 1, layers: 3..6, policy: RecomputePolicy::None, device: Device::Cpu });
    }
}
