//! Byte predictions for one micro-batch of a stage, from shapes alone.
//!
//! The three numbers mean what the schedules crate's `StageCost` fields mean, and follow the
//! simulator's convention: `F` keeps `act_bytes` from its start until `I`/`B` ends; `R` adds
//! `recompute_bytes`; `I` shrinks the micro-batch to `w_bytes`; `W`/`B` frees it. Transient
//! temporaries inside one op are not counted. Invariant: a [`Stage`](crate::Stage)'s
//! `held_bytes_of(mb)` equals these numbers after every op (tested in `stage.rs` for every
//! policy), and `act_bytes + recompute_bytes` is the same for every policy (what `none` keeps).

use pipesched_schedules::StageCost;
use serde::{Deserialize, Serialize};

use crate::partition::StageSpec;
use crate::spec::{LayerSpec, ModelSpec};

const F32: u64 = 4;

/// Bytes one micro-batch holds on a stage in each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StageBytes {
    /// Kept by `F` until the backward (under the stage's recompute policy).
    pub act_bytes: u64,
    /// Re-created by `R` (what the policy dropped).
    pub recompute_bytes: u64,
    /// Kept from `I` until `W`.
    pub w_bytes: u64,
    /// The activation `F` sends to the next stage (none from the last stage).
    #[serde(default)]
    pub fwd_msg_bytes: u64,
    /// The input gradient `I`/`B` sends to the previous stage (none from the first stage).
    #[serde(default)]
    pub bwd_msg_bytes: u64,
}

impl StageBytes {
    /// A `StageCost` with these bytes and the given times.
    pub fn cost(&self, f: f64, i: f64, w: f64) -> StageCost {
        StageCost {
            act_bytes: self.act_bytes,
            recompute_bytes: self.recompute_bytes,
            w_bytes: self.w_bytes,
            fwd_msg_bytes: self.fwd_msg_bytes,
            bwd_msg_bytes: self.bwd_msg_bytes,
            ..StageCost::times(f, i, w)
        }
    }
}

impl StageSpec {
    /// Whether this stage ends the model (holds the head and the loss).
    pub fn is_last(&self, model: &ModelSpec) -> bool {
        self.layers.end == model.num_layers()
    }

    /// Parameters of this stage's layers (saturating; a validated model never gets there).
    pub fn param_count(&self, model: &ModelSpec) -> usize {
        self.checked_param_count(model).unwrap_or(usize::MAX)
    }

    /// Parameters of this stage's layers; `None` if the count overflows.
    pub fn checked_param_count(&self, model: &ModelSpec) -> Option<usize> {
        model.sum_over(&self.layers, 1, LayerSpec::checked_param_count)
    }

    /// Bytes one micro-batch of `batch` rows holds on this stage, per phase (saturating at
    /// `u64::MAX`; [`checked_bytes`](StageSpec::checked_bytes) says when that happens).
    pub fn predicted_bytes(&self, model: &ModelSpec, batch: usize) -> StageBytes {
        let max = StageBytes {
            act_bytes: u64::MAX,
            recompute_bytes: u64::MAX,
            w_bytes: u64::MAX,
            fwd_msg_bytes: u64::MAX,
            bwd_msg_bytes: u64::MAX,
        };
        self.checked_bytes(model, batch).unwrap_or(max)
    }

    /// Bytes one micro-batch of `batch` rows holds on this stage, per phase; `None` if a count
    /// overflows. Time independent of the number of layers.
    pub fn checked_bytes(&self, model: &ModelSpec, batch: usize) -> Option<StageBytes> {
        let last = self.is_last(model);
        let loss_saved = if last { model.loss.saved_floats(1, model.output) } else { 0 };
        let everything = model.sum_over(&self.layers, 1, LayerSpec::saved_per_row)?.checked_add(loss_saved)?;
        let w = model.sum_over(&self.layers, 1, LayerSpec::w_per_row)?;
        let kept = match self.policy.interval(self.layers.len()) {
            // The input of every checkpointed layer (positions 0, k, 2k, … of the stage), and the
            // target on the last stage.
            Some(k) => {
                let inputs = model.sum_over(&self.layers, k, |l| Some(l.input_width()))?;
                inputs.checked_add(if last { model.loss.target_width(model.output) } else { 0 })?
            }
            None => everything,
        };
        let bytes = |floats_per_row: usize| (floats_per_row as u64).checked_mul(batch as u64)?.checked_mul(F32);
        // What F sends on (the last layer's output) and what I/B sends back (the gradient of
        // the first layer's input); the model's ends send nothing.
        let out_width = if last {
            0
        } else {
            self.layers.end.checked_sub(1).and_then(|k| model.layer(k)).map_or(0, |l| l.output_width())
        };
        let in_width =
            if self.layers.start == 0 { 0 } else { model.layer(self.layers.start).map_or(0, |l| l.input_width()) };
        Some(StageBytes {
            act_bytes: bytes(kept)?,
            recompute_bytes: bytes(everything.saturating_sub(kept))?,
            w_bytes: bytes(w)?,
            fwd_msg_bytes: bytes(out_width)?,
            bwd_msg_bytes: bytes(in_width)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Partition;
    use crate::policy::{Policies, RecomputePolicy};

    fn single(model: &ModelSpec, policy: &str) -> StageBytes {
        let specs = model.stage_specs(1, &Partition::Even, &policy.parse::<Policies>().unwrap()).unwrap();
        specs[0].predicted_bytes(model, model.batch)
    }

    #[test]
    fn small_orders_policies_by_activation_bytes() {
        let m = ModelSpec::small();
        let none = single(&m, "none");
        let every2 = single(&m, "every:2");
        let sqrt = single(&m, "sqrt");
        let full = single(&m, "full");
        assert_eq!(none.recompute_bytes, 0);
        for mid in [every2, sqrt] {
            assert!(none.act_bytes > mid.act_bytes && mid.act_bytes > full.act_bytes, "{none:?} {mid:?} {full:?}");
        }
        for b in [every2, sqrt, full] {
            assert_eq!(b.act_bytes + b.recompute_bytes, none.act_bytes, "R re-creates what none keeps");
            assert_eq!(b.w_bytes, none.w_bytes);
        }
        // full keeps the model input and the regression targets: 128·(128 + 16) floats.
        assert_eq!(full.act_bytes, 4 * 128 * (128 + 16));
    }

    #[test]
    fn cost_carries_the_bytes() {
        let b = StageBytes { act_bytes: 10, recompute_bytes: 5, w_bytes: 3, ..StageBytes::default() };
        let c = b.cost(1.0, 2.0, 0.5);
        assert_eq!((c.act_bytes, c.recompute_bytes, c.w_bytes, c.f, c.t_r()), (10, 5, 3, 1.0, 1.0));
        assert!(!RecomputePolicy::None.drops());
    }
}
