//! What a stage holds for one micro-batch between its ops, and the in-order gradient
//! accumulator.
//!
//! ```text
//!            F (none)                    I                 W
//!  Idle ───────────────▶ Saved ─────────────▶ AwaitingW ──────▶ Done
//!    │  F (checkpoint)      ▲  R
//!    ├──────────▶ Checkpointed
//!    │  F (selective)       ▲  R
//!    └──────────▶ Partial ──┘
//! ```
//! `I` on a `Checkpointed` or `Partial` micro-batch (both in phase `Checkpointed`) runs `R` first;
//! on an `Interleaved` one (`optimal`, also `Checkpointed`) it runs the rest of the sequence. Invariant: a slot's `bytes()` is the sum
//! of the tensors it owns, so `held_bytes` counts exactly what is kept; the accumulator adds
//! micro-batch `j`'s gradients only after those of `0..j`, parking any that come early.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::layers::{Saved, WNeeds};
use crate::loss::LossSaved;
use crate::tensor::Tensor;

/// Where a micro-batch is on a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing has run yet in this step.
    Idle,
    /// `F` ran and kept only checkpoints, or each layer's selective state; `R` (or `I`, which
    /// recomputes inline) comes next.
    Checkpointed,
    /// Everything the backward needs is held (after `F` under `none`, or after `R`).
    Saved,
    /// `I` ran; what `W` needs is held.
    AwaitingW,
    /// `W` ran; its gradients are accumulated, or parked until earlier micro-batches' are.
    Done,
}

/// One micro-batch's state on a stage.
#[derive(Debug, Default)]
pub(crate) enum Slot {
    #[default]
    Idle,
    Checkpointed {
        /// Rows of the micro-batch.
        rows: usize,
        /// The inputs of the checkpointed layers, in layer order.
        inputs: Vec<Tensor>,
        /// The target, on the last stage.
        target: Option<Tensor>,
    },
    Saved {
        /// Rows of the micro-batch.
        rows: usize,
        /// Each layer's saved state, in layer order.
        layers: Vec<Saved>,
        /// The loss's saved state, on the last stage.
        loss: Option<LossSaved>,
    },
    /// What each layer's selective forward kept; `R` restores the rest.
    Partial {
        /// Rows of the micro-batch.
        rows: usize,
        /// Each layer's kept state, in layer order.
        layers: Vec<Saved>,
        /// The loss's saved state, on the last stage.
        loss: Option<LossSaved>,
    },
    /// What the first sweep of an `optimal` sequence kept; `I` runs the rest of the sequence.
    Interleaved {
        /// Rows of the micro-batch.
        rows: usize,
        /// Per layer, its input if the sweep kept it (`Fck`).
        inputs: Vec<Option<Tensor>>,
        /// Per layer, its saved state if the sweep kept everything (`Fall`).
        saved: Vec<Option<Saved>>,
        /// The loss's saved state, on the last stage.
        loss: Option<LossSaved>,
    },
    AwaitingW {
        /// What each layer's `W` needs, in layer order.
        needs: Vec<WNeeds>,
    },
    Done,
}

impl Slot {
    pub(crate) fn phase(&self) -> Phase {
        match self {
            Slot::Idle => Phase::Idle,
            Slot::Checkpointed { .. } | Slot::Partial { .. } | Slot::Interleaved { .. } => Phase::Checkpointed,
            Slot::Saved { .. } => Phase::Saved,
            Slot::AwaitingW { .. } => Phase::AwaitingW,
            Slot::Done => Phase::Done,
        }
    }

    /// Rows of the micro-batch, while its forward state is held.
    pub(crate) fn rows(&self) -> Option<usize> {
        match self {
            Slot::Checkpointed { rows, .. }
            | Slot::Saved { rows, .. }
            | Slot::Partial { rows, .. }
            | Slot::Interleaved { rows, .. } => Some(*rows),
            _ => None,
        }
    }

    /// Every tensor the slot owns, in a fixed order.
    pub(crate) fn tensors(&self) -> Vec<&Tensor> {
        match self {
            Slot::Idle | Slot::Done => vec![],
            Slot::Checkpointed { inputs, target, .. } => inputs.iter().chain(target).collect(),
            Slot::Saved { layers, loss, .. } | Slot::Partial { layers, loss, .. } => {
                layers.iter().flat_map(|s| &s.0).chain(loss.iter().flat_map(LossSaved::tensors)).collect()
            }
            Slot::Interleaved { inputs, saved, loss, .. } => inputs
                .iter()
                .flatten()
                .chain(saved.iter().flatten().flat_map(|s| &s.0))
                .chain(loss.iter().flat_map(LossSaved::tensors))
                .collect(),
            Slot::AwaitingW { needs } => needs.iter().flat_map(|n| &n.0).collect(),
        }
    }

    /// Every tensor the slot owns, mutable, in the order of [`tensors`](Slot::tensors).
    pub(crate) fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        match self {
            Slot::Idle | Slot::Done => vec![],
            Slot::Checkpointed { inputs, target, .. } => inputs.iter_mut().chain(target).collect(),
            Slot::Saved { layers, loss, .. } | Slot::Partial { layers, loss, .. } => layers
                .iter_mut()
                .flat_map(|s| &mut s.0)
                .chain(loss.iter_mut().flat_map(LossSaved::tensors_mut))
                .collect(),
            Slot::Interleaved { inputs, saved, loss, .. } => inputs
                .iter_mut()
                .flatten()
                .chain(saved.iter_mut().flatten().flat_map(|s| &mut s.0))
                .chain(loss.iter_mut().flat_map(LossSaved::tensors_mut))
                .collect(),
            Slot::AwaitingW { needs } => needs.iter_mut().flat_map(|n| &mut n.0).collect(),
        }
    }

    /// Bytes of every tensor the slot owns.
    pub(crate) fn bytes(&self) -> u64 {
        self.tensors().iter().map(|t| t.bytes()).sum()
    }
}

/// Adds per-micro-batch gradients into the stage's buffers in increasing micro-batch order.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    /// The next micro-batch whose gradients may be added; all of `0..next` are in.
    pub(crate) next: usize,
    /// Gradients of micro-batches past `next`, waiting for it.
    pub(crate) parked: BTreeMap<usize, Vec<Tensor>>,
}

impl Accumulator {
    /// Takes micro-batch `mb`'s gradients: adds them (and any parked ones they unblock) if `mb` is
    /// next, parks them otherwise. The stage guarantees each `mb` arrives once per step.
    pub(crate) fn offer(&mut self, mb: usize, grads: Vec<Tensor>, into: &mut [Tensor]) -> Result<()> {
        if mb != self.next {
            self.parked.insert(mb, grads);
            return Ok(());
        }
        add_all(into, &grads)?;
        self.next += 1;
        while let Some(g) = self.parked.remove(&self.next) {
            add_all(into, &g)?;
            self.next += 1;
        }
        Ok(())
    }

    /// Bytes parked for `mb`.
    pub(crate) fn parked_bytes(&self, mb: usize) -> u64 {
        self.parked.get(&mb).map_or(0, |g| g.iter().map(Tensor::bytes).sum())
    }
}

fn add_all(into: &mut [Tensor], grads: &[Tensor]) -> Result<()> {
    for (acc, g) in into.iter_mut().zip(grads) {
        acc.add_assign(g)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parks_until_earlier_microbatches_arrive() {
        let mut acc = Accumulator::default();
        let mut sum = vec![Tensor::zeros(1, 1)];
        let g = |v: f32| vec![Tensor::scalar(v)];
        acc.offer(2, g(0.25), &mut sum).unwrap();
        acc.offer(1, g(1e8), &mut sum).unwrap();
        assert_eq!(sum[0].data(), &[0.0]);
        assert_eq!(acc.parked_bytes(2), 4);
        acc.offer(0, g(1.0), &mut sum).unwrap();
        assert_eq!(acc.next, 3);
        assert!(acc.parked.is_empty());
        // ((0 + 1) + 1e8) + 0.25 in f32: the order decides the bits.
        assert_eq!(sum[0].data()[0], ((1.0f32 + 1e8) + 0.25));
    }
}
