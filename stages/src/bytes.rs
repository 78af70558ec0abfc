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
use crate::spec::ModelSpec;

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

    /// Parameters of this stage's layers.
    pub fn param_count(&self, model: &ModelSpec) -> usize {
        model.layers()[self.layers.clone()].iter().map(|l| l.param_count()).sum()
    }

    /// Bytes one micro-batch of `batch` rows holds on this stage, per phase.
    pub fn predicted_bytes(&self, model: &ModelSpec, batch: usize) -> StageBytes {
        let all = model.layers();
        let layers = &all[self.layers.clone()];
        let last = self.is_last(model);
        let loss_saved = if last { model.loss.saved_floats(batch, model.output) } else { 0 };
        let everything = layers.iter().map(|l| l.saved_floats(batch)).sum::<usize>() + loss_saved;
        let w = layers.iter().map(|l| l.w_floats(batch)).sum::<usize>();
        let kept = if self.policy.drops() {
            let inputs: usize =
                self.policy.checkpoints(layers.len()).iter().map(|&i| batch * layers[i].input_width()).sum();
            inputs + if last { batch * model.loss.target_width(model.output) } else { 0 }
        } else {
            everything
        };
        let first = self.layers.start == 0;
        StageBytes {
            act_bytes: kept as u64 * F32,
            recompute_bytes: everything.saturating_sub(kept) as u64 * F32,
            w_bytes: w as u64 * F32,
            fwd_msg_bytes: if last { 0 } else { (batch * layers.last().map_or(0, |l| l.output_width())) as u64 * F32 },
            bwd_msg_bytes: if first { 0 } else { (batch * layers.first().map_or(0, |l| l.input_width())) as u64 * F32 },
        }
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
