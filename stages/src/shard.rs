//! A step's share of the global batch under data parallelism: replica `d` of `D` runs
//! micro-batches `d·m .. (d+1)·m` of the step's `D·m`. Its micro-batches draw their data and
//! their dropout masks under their global numbers, and its loss gradients are those of the mean
//! over all `D·m`, so the `D` replicas' gradients sum to the gradient of the whole step.
//!
//! Invariant: `first + m ≤ total` for the `m` micro-batches a stage runs.

use crate::error::{Error, Result};

/// Which of a step's micro-batches a stage runs: its own `0..m`, numbered globally from `first`,
/// out of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// The global number of the stage's micro-batch 0.
    pub first: usize,
    /// Micro-batches in the whole step, over every replica.
    pub total: usize,
}

impl Shard {
    /// The whole step of `m` micro-batches (no data parallelism).
    pub fn whole(m: usize) -> Shard {
        Shard { first: 0, total: m }
    }

    /// Replica `replica` of `replicas`, each running `m` micro-batches.
    pub fn of(replica: usize, replicas: usize, m: usize) -> Result<Shard> {
        let total = replicas.checked_mul(m);
        match (replica < replicas, total) {
            (true, Some(total)) => Ok(Shard { first: replica * m, total }),
            _ => Err(Error::Data(format!(
                "replica {replica} of {replicas} with {m} micro-batches each: give a replica below {replicas} and a step of fewer micro-batches"
            ))),
        }
    }

    /// The global number of micro-batch `mb`.
    pub fn global(&self, mb: usize) -> usize {
        self.first + mb
    }

    /// Whether `m` micro-batches from `first` fit in the step.
    pub fn holds(&self, m: usize) -> bool {
        self.first.checked_add(m).is_some_and(|end| end <= self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_split_the_step_in_order() {
        let s = Shard::of(2, 3, 4).unwrap();
        assert_eq!(s, Shard { first: 8, total: 12 });
        assert_eq!(s.global(3), 11);
        assert!(s.holds(4) && !s.holds(5));
        assert_eq!(Shard::whole(5), Shard::of(0, 1, 5).unwrap());
        assert!(Shard::of(3, 3, 4).is_err());
        assert!(Shard::of(1, 2, usize::MAX).is_err());
    }
}
