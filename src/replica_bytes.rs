//! What a stage holds as one of several data-parallel replicas beyond one pipeline's model
//! states: under ZeRO stage 1 only its replica's slice of the optimizer object (the `f32` master
//! weights under mixed precision and the optimizer's moments), and — with any replicas — the
//! buffer its gradients are summed over the replicas in, one `f32` a trained parameter. The
//! one rule `pipesched memory` and `plan` predict with; the built stages hold it (the
//! executor's ledger measures theirs).
//!
//! Replica 0's slice is the largest ([`slice_of`]), so its bytes bound every replica's.

use pipesched_schedules::DataParallel;
use pipesched_stages::{ModelStates, OptimizerSpec, ParamCount, Precision};

use crate::exec::slice_of;
use crate::{Error, Result};

/// The bytes of a stage that data parallelism changes, on replica 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaBytes {
    /// `f32` master weights (mixed precision; of the slice under ZeRO-1).
    pub master: u64,
    /// The optimizer's moments (of the slice under ZeRO-1).
    pub optimizer: u64,
    /// The sum's buffer: 4 bytes a trained parameter with replicas, else 0.
    pub sum_buffer: u64,
}

impl ReplicaBytes {
    /// For a stage of `trained` trained parameters, trained with `optimizer` in `precision`,
    /// as replica 0 of `dp`.
    pub fn of(trained: u64, optimizer: &OptimizerSpec, precision: Precision, dp: DataParallel) -> Result<ReplicaBytes> {
        let kept = if dp.sharded {
            let count = usize::try_from(trained).map_err(|_| overflow(trained))?;
            slice_of(count, dp.replicas, 0).len() as u64
        } else {
            trained
        };
        let states =
            ModelStates::of(ParamCount::trained(kept), optimizer, precision).ok_or_else(|| overflow(trained))?;
        let sum_buffer = if dp.sums() { trained.checked_mul(4).ok_or_else(|| overflow(trained))? } else { 0 };
        Ok(ReplicaBytes { master: states.master, optimizer: states.optimizer, sum_buffer })
    }

    /// Master weights and moments.
    pub fn optimizer_held(&self) -> u64 {
        self.master.saturating_add(self.optimizer)
    }
}

fn overflow(trained: u64) -> Error {
    Error::Usage(format!("a stage of {trained} trained parameters: its bytes overflow 64 bits; use more stages"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_one_keeps_the_largest_slice_and_every_replica_a_sum_buffer() {
        let adam = OptimizerSpec::adam(1e-3);
        let one = ReplicaBytes::of(1001, &adam, Precision::F32, DataParallel::NONE).unwrap();
        assert_eq!(one, ReplicaBytes { master: 0, optimizer: 8 * 1001, sum_buffer: 0 });
        let two = ReplicaBytes::of(1001, &adam, Precision::F32, DataParallel::new(2, false).unwrap()).unwrap();
        assert_eq!(two, ReplicaBytes { master: 0, optimizer: 8 * 1001, sum_buffer: 4 * 1001 });
        // ZeRO-1 over 3: replica 0 keeps ⌈1001/3⌉ = 334; mixed precision adds its master weights.
        let zero = DataParallel::new(3, true).unwrap();
        let mixed = ReplicaBytes::of(1001, &adam, Precision::MixedBf16, zero).unwrap();
        assert_eq!(mixed, ReplicaBytes { master: 4 * 334, optimizer: 8 * 334, sum_buffer: 4 * 1001 });
        assert_eq!(mixed.optimizer_held(), 12 * 334);
    }
}
