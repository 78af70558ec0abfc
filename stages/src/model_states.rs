//! [`ModelStates`]: the bytes of a model's states — parameters, gradients, `f32` master weights
//! and optimizer state — by class, for a precision and an optimizer. The one place the rule for
//! these static bytes lives: built stages, footprints from shapes and the memory report all
//! count through it, and the tests compare it with what built stages and optimizers hold.
//!
//! Per parameter, with `s` the stored element's bytes ([`Precision::stored_bytes`]: 4, or 2
//! under mixed precision) and `k` the optimizer's state tensors (1 for SGD, 2 for Adam):
//! parameters `s`, gradients `s`, master weights `4` under mixed precision (else none: the
//! parameters are the master copy), optimizer state `4k`. Adam in `f32` is `4 + 4 + 8 = 16`
//! bytes a parameter; Adam in mixed precision `2 + 2 + 4 + 8 = 16`, as in ZeRO's accounting
//! (Rajbhandari et al., 2020: 2Ψ + 2Ψ + 12Ψ). Frozen parameters (the base of a model fine-tuned
//! through LoRA adapters) count `s` each as parameters and nothing else.

use serde::Serialize;

use crate::optim::OptimizerSpec;
use crate::precision::Precision;

/// Bytes of the states of some parameters, by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ModelStates {
    /// The parameters as the stages store them.
    pub params: u64,
    /// The gradient buffers.
    pub grads: u64,
    /// `f32` master weights (mixed precision only).
    pub master: u64,
    /// The optimizer's moments, `f32`.
    pub optimizer: u64,
}

/// Bytes of an `f32`.
const F32: u64 = 4;

/// Numbers of parameters: those trained (with gradients and optimizer state) and those held
/// frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ParamCount {
    /// Trained parameters.
    pub trained: u64,
    /// Frozen parameters.
    pub frozen: u64,
}

impl ParamCount {
    /// `n` parameters, all trained.
    pub fn trained(n: u64) -> ParamCount {
        ParamCount { trained: n, frozen: 0 }
    }

    /// Every parameter held; `None` on overflow.
    pub fn total(&self) -> Option<u64> {
        self.trained.checked_add(self.frozen)
    }

    /// The two counts added; `None` on overflow.
    pub fn checked_add(self, other: ParamCount) -> Option<ParamCount> {
        Some(ParamCount {
            trained: self.trained.checked_add(other.trained)?,
            frozen: self.frozen.checked_add(other.frozen)?,
        })
    }
}

impl ModelStates {
    /// The states of `count` parameters, the trained ones trained by `optimizer`, in
    /// `precision`; `None` on overflow.
    pub fn of(count: ParamCount, optimizer: &OptimizerSpec, precision: Precision) -> Option<ModelStates> {
        let stored = |n: u64| n.checked_mul(precision.stored_bytes());
        let count_all = count.total()?;
        let count = count.trained;
        Some(ModelStates {
            params: stored(count_all)?,
            grads: stored(count)?,
            master: if precision.is_mixed() { count.checked_mul(F32)? } else { 0 },
            optimizer: count.checked_mul(F32)?.checked_mul(optimizer.states_per_param() as u64)?,
        })
    }

    /// What the optimizer object holds: master weights and moments.
    pub fn optimizer_held(&self) -> u64 {
        self.master.saturating_add(self.optimizer)
    }

    /// All of them (saturating).
    pub fn total(&self) -> u64 {
        self.params.saturating_add(self.grads).saturating_add(self.optimizer_held())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_is_sixteen_bytes_a_parameter_in_f32_and_in_mixed_precision() {
        let adam = OptimizerSpec::adam(1e-3);
        let ten = ParamCount::trained(10);
        let f32_ = ModelStates::of(ten, &adam, Precision::F32).unwrap();
        assert_eq!(f32_, ModelStates { params: 40, grads: 40, master: 0, optimizer: 80 });
        for p in [Precision::MixedBf16, Precision::MixedF16] {
            let m = ModelStates::of(ten, &adam, p).unwrap();
            assert_eq!(m, ModelStates { params: 20, grads: 20, master: 40, optimizer: 80 });
            assert_eq!((m.total(), m.optimizer_held()), (160, 120));
        }
        // Products-only 16-bit precisions store f32.
        assert_eq!(ModelStates::of(ten, &adam, Precision::Bf16), Some(f32_));
        let sgd = ModelStates::of(ten, &OptimizerSpec::sgd(0.1, 0.9), Precision::MixedF16).unwrap();
        assert_eq!(sgd.total(), 20 + 20 + 40 + 40);
        assert_eq!(ModelStates::of(ParamCount::trained(u64::MAX / 2), &adam, Precision::F32), None);
        // Frozen parameters are held, and nothing else.
        let lora = ParamCount { trained: 10, frozen: 1000 };
        let m = ModelStates::of(lora, &adam, Precision::MixedBf16).unwrap();
        assert_eq!(m, ModelStates { params: 2020, grads: 20, master: 40, optimizer: 80 });
        assert_eq!(ModelStates::of(lora, &adam, Precision::F32).unwrap().total(), 4040 + 40 + 80);
    }
}
