//! Optimizers applied to a stage after the flush (once per step, after all micro-batches):
//! SGD with momentum, and Adam with bias correction.
//!
//! Invariant: an optimizer steps only on complete gradients (all `m` micro-batches
//! accumulated), updates every parameter element by element in a fixed order, and its state is
//! one (SGD) or two (Adam) `f32` tensors per parameter, counted by `state_bytes`. For parameters
//! stored in 16 bits (mixed precision) it also keeps an `f32` master copy of each: it divides the
//! loss scale out of the gradients in `f32`, updates the master weights, and writes them back
//! rounded to the parameters' format ([`ModelStates`](crate::ModelStates) counts all of it).

use serde::{Deserialize, Serialize};

use crate::backend;
use crate::element::Dtype;
use crate::error::{Error, Result};
use crate::model_states::{ModelStates, ParamCount};
use crate::precision::Precision;
use crate::stage::Stage;
use crate::tensor::Tensor;

/// Which optimizer, with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerSpec {
    /// `v ← μ·v + g; p ← p − lr·v`.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum `μ` in `[0, 1)`.
        momentum: f32,
    },
    /// Adam (Kingma & Ba) with bias-corrected moments.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Added to `√v̂`.
        eps: f32,
    },
}

impl OptimizerSpec {
    /// Adam with `β = (0.9, 0.999)`, `ε = 1e-8`.
    pub fn adam(lr: f32) -> OptimizerSpec {
        OptimizerSpec::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }

    /// SGD with momentum.
    pub fn sgd(lr: f32, momentum: f32) -> OptimizerSpec {
        OptimizerSpec::Sgd { lr, momentum }
    }

    /// State tensors per parameter tensor.
    pub fn states_per_param(&self) -> usize {
        match self {
            OptimizerSpec::Sgd { .. } => 1,
            OptimizerSpec::Adam { .. } => 2,
        }
    }

    /// Bytes the optimizer holds for `count` parameters trained in `precision`: its moments,
    /// and the `f32` master weights under mixed precision ([`ModelStates`], saturating).
    pub fn state_bytes(&self, count: u64, precision: Precision) -> u64 {
        ModelStates::of(ParamCount::trained(count), self, precision).map_or(u64::MAX, |s| s.optimizer_held())
    }

    fn validate(&self) -> Result<()> {
        let in01 = |x: f32| (0.0..1.0).contains(&x);
        let (lr, ok) = match *self {
            OptimizerSpec::Sgd { lr, momentum } => (lr, in01(momentum)),
            OptimizerSpec::Adam { lr, beta1, beta2, eps } => (lr, in01(beta1) && in01(beta2) && eps > 0.0),
        };
        if lr.is_finite() && lr > 0.0 && ok {
            return Ok(());
        }
        Err(Error::Optimizer(format!("{self:?}: lr must be > 0, momentum and betas in [0, 1), eps > 0")))
    }
}

impl Stage {
    /// Parameters, gradients and `optimizer` state: the bytes this stage holds for the whole step.
    pub fn static_bytes(&self, optimizer: &OptimizerSpec) -> u64 {
        self.param_bytes() + self.grad_bytes() + optimizer.state_bytes(self.param_count() as u64, self.storage())
    }
}

/// An optimizer's state for one stage.
#[derive(Debug)]
pub struct Optimizer {
    spec: OptimizerSpec,
    /// `states_per_param` tensors per parameter, parameter by parameter.
    state: Vec<Tensor>,
    /// Steps taken.
    t: u64,
    /// `f32` master weights, one per parameter, for parameters stored in 16 bits (else empty).
    master: Vec<Tensor>,
}

impl Optimizer {
    /// A copy of this optimizer and its state (on the state's device), or the device's error.
    pub fn try_clone(&self) -> Result<Optimizer> {
        let state = self.state.iter().map(Tensor::try_clone).collect::<Result<Vec<_>>>()?;
        let master = self.master.iter().map(Tensor::try_clone).collect::<Result<Vec<_>>>()?;
        Ok(Optimizer { spec: self.spec, state, t: self.t, master })
    }

    /// Zero state for `stage`'s parameters.
    pub fn new(spec: OptimizerSpec, stage: &Stage) -> Result<Optimizer> {
        spec.validate()?;
        let k = spec.states_per_param();
        let _scope = stage.enter();
        let mut state = Vec::new();
        let mut master = Vec::new();
        for p in stage.params() {
            let stored = matches!(p.dtype(), Dtype::Stored(_));
            for _ in 0..k {
                state.push(if stored { Tensor::zeros(p.rows(), p.cols()) } else { p.zeros_like(p.rows(), p.cols())? });
            }
            if stored {
                master.push(p.widened()?);
            }
        }
        Ok(Optimizer { spec, state, t: 0, master })
    }

    /// Zero state for parameters of `shapes` on `device`: for a range of a stage's parameters
    /// that one data-parallel replica updates (ZeRO stage 1: a `[1, len]` slice of them all,
    /// flattened in parameter order).
    pub fn for_shapes(spec: OptimizerSpec, shapes: &[[usize; 2]], device: crate::Device) -> Result<Optimizer> {
        spec.validate()?;
        let k = spec.states_per_param();
        let mut state = Vec::with_capacity(k * shapes.len());
        for &[rows, cols] in shapes {
            for _ in 0..k {
                state.push(Tensor::zeros(rows, cols).into_device(device)?);
            }
        }
        Ok(Optimizer { spec, state, t: 0, master: Vec::new() })
    }

    /// This optimizer updating parameters stored in 16 bits through `master`, their `f32`
    /// master weights, one per shape it was built for: the slice of a mixed-precision stage's
    /// parameters that one replica updates (ZeRO stage 1). An error for other shapes.
    pub fn with_master(mut self, master: Vec<Tensor>) -> Result<Optimizer> {
        let k = self.spec.states_per_param();
        let fits = master.len() * k == self.state.len()
            && master.iter().zip(self.state.chunks_exact(k)).all(|(m, st)| st.iter().all(|s| s.shape() == m.shape()));
        if !fits || master.iter().any(|m| m.dtype() != Dtype::F32) {
            return Err(Error::Optimizer(
                "master weights must be f32 tensors, one of each shape the optimizer was built for".into(),
            ));
        }
        self.master = master;
        Ok(self)
    }

    /// The settings.
    pub fn spec(&self) -> OptimizerSpec {
        self.spec
    }

    /// Bytes of state: the moments and any master weights.
    pub fn state_bytes(&self) -> u64 {
        self.state.iter().chain(&self.master).map(Tensor::bytes).sum()
    }

    /// Bytes of the `f32` master weights (0 unless the parameters are stored in 16 bits).
    pub fn master_bytes(&self) -> u64 {
        self.master.iter().map(Tensor::bytes).sum()
    }

    /// Updates `stage`'s parameters from its accumulated gradients. An error unless the
    /// gradients of every micro-batch of the step are in.
    pub fn step(&mut self, stage: &mut Stage) -> Result<()> {
        if !stage.grads_complete() {
            return Err(Error::Optimizer(format!(
                "stage {}: gradients are not complete (micro-batches 0..{} of {} accumulated); run every W/B of the step first",
                stage.index(),
                stage.accum.next,
                stage.microbatches()
            )));
        }
        let lane = stage.lane.clone();
        let _scope = lane.as_ref().map(crate::cuda::Lane::enter);
        let unscale = 1.0 / stage.loss_scale();
        self.update_scaled(stage.params_and_grads_mut(), unscale)
    }

    /// Updates each parameter of `pairs` (parameter, gradient) from its gradient, element by
    /// element: the tensors this optimizer was built for, in order (a stage's, or the slice of
    /// [`Optimizer::for_shapes`]). The same arithmetic for an element wherever it sits, so a
    /// slice updated on its own gives the bits the whole stage's update gives it.
    pub fn update(&mut self, pairs: Vec<(&mut Tensor, &Tensor)>) -> Result<()> {
        self.update_scaled(pairs, 1.0)
    }

    /// [`update`](Optimizer::update) from gradients `1 / unscale` times the loss's (a loss scale,
    /// a power of two): each gradient is multiplied by `unscale` in `f32` first. Parameters
    /// stored in 16 bits are updated through their `f32` master weights and written back rounded.
    pub fn update_scaled(&mut self, pairs: Vec<(&mut Tensor, &Tensor)>, unscale: f32) -> Result<()> {
        let k = self.spec.states_per_param();
        if !self.master.is_empty() && self.master.len() != pairs.len() {
            return Err(Error::Optimizer("this optimizer was built for a stage with other parameters".into()));
        }
        let shapes_match =
            pairs.iter().zip(self.state.chunks_exact(k)).all(|((p, _), st)| st.iter().all(|s| s.shape() == p.shape()));
        if pairs.len() * k != self.state.len() || !shapes_match {
            return Err(Error::Optimizer("this optimizer was built for a stage with other parameters".into()));
        }
        self.t += 1;
        for (j, ((p, g), st)) in pairs.into_iter().zip(self.state.chunks_exact_mut(k)).enumerate() {
            let wide;
            let g = if unscale != 1.0 || matches!(g.dtype(), Dtype::Stored(_)) {
                let mut w = g.widened()?;
                if unscale != 1.0 {
                    backend::scale(&mut w, unscale)?;
                }
                wide = w;
                &wide
            } else {
                g
            };
            let (target, format) = match (self.master.get_mut(j), p.dtype()) {
                (Some(m), Dtype::Stored(f)) => (m, Some(f)),
                _ => (&mut *p, None),
            };
            match (self.spec, st) {
                (OptimizerSpec::Sgd { lr, momentum }, [v]) => backend::sgd_step(target, g, v, lr, momentum)?,
                (OptimizerSpec::Adam { lr, beta1, beta2, eps }, [m, v]) => {
                    let c1 = 1.0 - beta1.powi(self.t as i32);
                    let c2 = 1.0 - beta2.powi(self.t as i32);
                    backend::adam_step(target, g, m, v, AdamScalars { lr, beta1, beta2, eps, c1, c2 })?;
                }
                _ => return Err(Error::Optimizer("internal: state does not match the optimizer kind".into())),
            }
            if let Some(f) = format {
                *p = target.try_clone()?.into_stored(f)?;
            }
        }
        Ok(())
    }
}

/// Adam's settings and this step's bias corrections `c1 = 1 − β1ᵗ`, `c2 = 1 − β2ᵗ`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamScalars {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub c1: f32,
    pub c2: f32,
}
