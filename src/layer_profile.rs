//! Per-layer profiling: every layer of a real stage run alone, op by op, on the stage's input
//! for one micro-batch (warm-up runs, then the median of several), with the bytes the stage's
//! own accounting gives each layer — the records a stage's cost is composed from, for any
//! partition and recompute policy ([`LayerCosts::compose`](pipesched_stages::LayerCosts::compose)).
//!
//! Each op runs on the calling thread (the profiler gives each rank a thread, as the pipeline
//! does), single-threaded as a stage runs its layers, and is timed on the host clock with the
//! device idle before and after it (a GPU stage is synchronised around every op, so its times
//! include no queued work of another op). Per layer: `F` keeps
//! what `none` keeps; `R` runs that forward again from the layer's input; a layer with a
//! selective form also times `restore` (`R` under `selective`) after its selective forward;
//! `I` and `W` run on what the timed `F` kept, the gradient flowing back layer by layer. The
//! ops run pass by pass, in the stage's order (every `F`, every `R`, every `I`, every `W`),
//! not layer by layer, so each meets the caches it meets in the stage.

use std::time::Instant;

use pipesched_stages::layers::Ctx;
use pipesched_stages::{Error, LayerCost, LayerTimes, LossCost, LossKind, OptimizerSpec, Result, Stage, Tensor};

use crate::exec::StageLayers;
use crate::report::median;

/// One run's times, per layer: `F`, `R`, `restore` (`None` without a selective form), `I`, `W`;
/// and the loss's `F` and `I`.
type Run = (Vec<[Option<f64>; 5]>, [f64; 2]);

/// The costs of `stage`'s layers (and its loss, on the last stage) for one micro-batch of
/// `input` (with `target` on the last stage, and elsewhere `grad`, the gradient the stage
/// receives): `warmup` unmeasured runs, then the median of `reps`, in milliseconds; bytes for
/// `input`'s rows, the optimizer's state as `optimizer` keeps it.
pub fn time_layers(
    stage: &Stage,
    optimizer: &OptimizerSpec,
    input: &Tensor,
    target: Option<&Tensor>,
    grad: Option<&Tensor>,
    warmup: usize,
    reps: usize,
) -> Result<StageLayers> {
    let _scope = stage.lane().map(|l| l.enter());
    let mut runs = Vec::with_capacity(reps);
    for run in 0..warmup + reps.max(1) {
        let times = one_run(stage, input, target, grad)?;
        if run >= warmup {
            runs.push(times);
        }
    }
    let mid = |pick: &dyn Fn(&Run) -> Option<f64>| median(runs.iter().filter_map(pick).collect());
    let rows = input.rows();
    let layers = stage
        .layer_bytes(rows, optimizer)
        .into_iter()
        .zip(stage.layers())
        .enumerate()
        .map(|(k, (bytes, layer))| {
            let op = |j: usize| mid(&|r: &Run| r.0[k][j]).unwrap_or(0.0);
            let restore = mid(&|r: &Run| r.0[k][2]);
            let times = LayerTimes { f: op(0), r: op(1), restore, i: op(3), w: op(4) };
            LayerCost { kind: layer.kind().to_string(), times, bytes }
        })
        .collect();
    let loss = match (stage.loss_kind(), stage.loss_bytes(rows)) {
        (Some(kind), Some((saved_bytes, target_bytes))) => Some(LossCost {
            kind,
            f: mid(&|r: &Run| Some(r.1[0])).unwrap_or(0.0),
            i: mid(&|r: &Run| Some(r.1[1])).unwrap_or(0.0),
            saved_bytes,
            target_bytes,
        }),
        _ => None,
    };
    Ok((layers, loss))
}

/// `op`'s result and its time in milliseconds, with the stage's device idle before and after.
fn timed<T>(stage: &Stage, op: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    stage.synchronize()?;
    let t = Instant::now();
    let out = op()?;
    stage.synchronize()?;
    Ok((out, t.elapsed().as_secs_f64() * 1e3))
}

/// One run of every layer's ops, in the order the stage runs them: `F` forward through the
/// stage (and its loss); `R`, a second forward from each layer's input, as a stage's
/// recomputation runs after its forward; `I` back through the layers; then `W` of every layer,
/// adding its gradients into accumulators as the stage does. So every op meets the caches the
/// stage leaves it (a layer's `W` timed right after its `I` ran up to 40 % faster than in the
/// stage, its inputs still in cache).
fn one_run(stage: &Stage, input: &Tensor, target: Option<&Tensor>, grad: Option<&Tensor>) -> Result<Run> {
    let layers = stage.layers();
    let start = stage.layer_range().start;
    let ctx = |k: usize| Ctx::new(0, 0, 0, start + k);
    let mut times = vec![[None; 5]; layers.len()];
    let mut saved = Vec::with_capacity(layers.len());
    let mut inputs = Vec::with_capacity(layers.len());
    let mut x = input.try_clone()?;
    for (k, layer) in layers.iter().enumerate() {
        inputs.push(x.try_clone()?);
        let ((y, s), f) = timed(stage, || layer.forward_saving(x, &ctx(k)))?;
        times[k][0] = Some(f);
        saved.push(s);
        x = y;
    }
    for (k, (layer, again)) in layers.iter().zip(inputs).enumerate() {
        let c = ctx(k);
        let partial = if layer.selective_per_row() < layer.saved_per_row() { Some(again.try_clone()?) } else { None };
        times[k][1] = Some(timed(stage, || layer.forward_saving(again, &c))?.1);
        if let Some(xp) = partial {
            let (_, kept) = layer.forward_selective(xp, &c)?;
            times[k][2] = Some(timed(stage, || layer.restore(kept, &c))?.1);
        }
    }
    let place = || format!("stage {} (layers {:?}) per-layer profile", stage.index(), stage.layer_range());
    let (mut g, loss) = match (stage.loss_kind(), target, grad) {
        (Some(kind), Some(t), _) => {
            let ((_, kept), f) = timed(stage, || kind.forward_tensor(&x, t))?;
            let (g, i) = timed(stage, || LossKind::backward(kept, 1))?;
            (g, [f, i])
        }
        (None, _, Some(g)) => (g.try_clone()?, [0.0; 2]),
        _ => {
            return Err(Error::Order {
                place: place(),
                reason: "needs the target on the last stage and the incoming gradient elsewhere".into(),
            })
        }
    };
    let mut needs = Vec::with_capacity(layers.len());
    for (k, (layer, s)) in layers.iter().zip(saved).enumerate().rev() {
        let ((dx, n), i) = timed(stage, || layer.backward_input(s, g, &ctx(k)))?;
        times[k][3] = Some(i);
        needs.push(n);
        g = dx;
    }
    needs.reverse();
    let mut sums = stage.grads().into_iter().map(Tensor::try_clone).collect::<Result<Vec<_>>>()?.into_iter();
    for (k, (layer, n)) in layers.iter().zip(&needs).enumerate() {
        let mut mine: Vec<Tensor> = sums.by_ref().take(layer.params().len()).collect();
        let (_, w) = timed(stage, || {
            for (sum, g) in mine.iter_mut().zip(layer.weight_grads(n)?) {
                sum.add_assign(&g)?;
            }
            Ok(())
        })?;
        times[k][4] = Some(w);
    }
    Ok((times, loss))
}
