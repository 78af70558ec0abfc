//! A layer pipesched does not ship, defined here — outside the library — and pipelined like the
//! built-in ones.
//!
//! `RmsNorm` (Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019) scales each
//! row by the reciprocal of its root mean square and a learnt gain: `y = g ⊙ x / √(mean(x²) + ε)`.
//! It implements [`Layer`]: a forward that keeps what its backward needs, an input-gradient
//! backward (`I`) that keeps what its weight-gradient backward (`W`) needs, and the counts of
//! those floats, from which the stages predict their bytes.
//!
//! Its arithmetic is written once, generic over the element type ([`Element`]), so the same code
//! runs in `f32`, in which it trains, and in `f64`, in which [`gradcheck`] checks its `I` and `W`
//! against central differences of the forward (relative error at most
//! [`gradcheck::F64_TOLERANCE`]; the `f32` figure is printed beside it). Then the model
//! puts it between built-in `Linear` layers: `Linear(16→24)`, then three times
//! `RmsNorm(24)` and `Linear(24→24)`, then `Linear(24→5)` and a cross-entropy loss over 5 classes.
//! For every schedule, recompute policy none and full, p = 1…4 and m ∈ {p, 2p+1} (where the
//! schedule takes them), it splits the model into stages, runs one step on the executor's threads,
//! and checks the gradients and the loss bit for bit against the sequential reference, and each
//! rank's measured peak of held bytes against the prediction from the layers' own counts. It
//! exits non-zero if any check fails.
//!
//! Run: `cargo run --release --example own_layer`

use std::ops::Range;

use pipesched::exec::{execute, ExecOptions};
use pipesched::model::RealStage;
use pipesched_schedules::{simulate, CostModel, Kind, Schedule, StageCosts, Stats};
use pipesched_stages::gradcheck::{self, Settings};
use pipesched_stages::layers::{Ctx, Layer, Linear, Saved, WNeeds};
use pipesched_stages::rng::Stream;
use pipesched_stages::{
    mean_loss, sequential_step, Device, Dtype, Element, Error, LossKind, OptimizerSpec, RecomputePolicy, Stage,
    StageSpec, Task, Tensor,
};

/// Added to the mean square before the square root.
const EPS: f32 = 1e-6;

/// Root-mean-square normalisation with a learnt gain, on the CPU.
#[derive(Debug, Clone)]
struct RmsNorm {
    /// `[1, width]`.
    gain: Tensor,
}

impl RmsNorm {
    /// A gain of `1 + 0.1·N(0, 1)` per column, drawn from `stream`, so the gain's gradient matters
    /// from the first step.
    fn new(width: usize, stream: Stream) -> RmsNorm {
        RmsNorm { gain: Tensor::from_fn(1, width, |_, c| 1.0 + 0.1 * stream.normal(c as u64)) }
    }

    fn width(&self) -> usize {
        self.gain.cols()
    }

    /// An error unless `t` is a host tensor of this layer's width.
    fn check(&self, t: &Tensor, what: &str) -> pipesched_stages::Result<()> {
        if !t.is_host() {
            return Err(Error::Shape {
                place: format!("RmsNorm {what}"),
                reason: "this layer runs on the CPU only".into(),
            });
        }
        if t.cols() != self.width() {
            return Err(Error::Shape {
                place: format!("RmsNorm {what}"),
                reason: format!("{:?}, width {}", t.shape(), self.width()),
            });
        }
        Ok(())
    }

    /// `[y, x̂, 1/rms]` of a host input of `E` (the gain is of `E` too: converted by the check).
    fn forward_in<E: Element>(&self, x: &Tensor) -> pipesched_stages::Result<[Tensor; 3]> {
        let (rows, w) = (x.rows(), self.width());
        let (xs, gain) = (x.host::<E>()?, self.gain.host::<E>()?);
        let (mut xhat, mut rinv, mut y) = (vec![E::ZERO; rows * w], vec![E::ZERO; rows], vec![E::ZERO; rows * w]);
        for r in 0..rows {
            let row = &xs[r * w..(r + 1) * w];
            let ms = row.iter().map(|v| *v * *v).sum::<E>() / E::from_usize(w);
            let s = E::ONE / (ms + E::from_f32(EPS)).sqrt();
            rinv[r] = s;
            for (c, v) in row.iter().enumerate() {
                let h = *v * s;
                xhat[r * w + c] = h;
                y[r * w + c] = h * gain[c];
            }
        }
        Ok([Tensor::from_values(rows, w, y)?, Tensor::from_values(rows, w, xhat)?, Tensor::from_values(rows, 1, rinv)?])
    }

    /// `dx = (1/rms) · (d − x̂ · mean(d ⊙ x̂))` with `d = dy ⊙ g`, in `E`.
    fn backward_in<E: Element>(&self, xhat: &Tensor, rinv: &Tensor, dy: &Tensor) -> pipesched_stages::Result<Tensor> {
        let (rows, w) = (dy.rows(), self.width());
        let (dys, xhs, rs, gain) = (dy.host::<E>()?, xhat.host::<E>()?, rinv.host::<E>()?, self.gain.host::<E>()?);
        let mut dx = vec![E::ZERO; rows * w];
        for r in 0..rows {
            let (g, xh) = (&dys[r * w..(r + 1) * w], &xhs[r * w..(r + 1) * w]);
            let d: Vec<E> = g.iter().zip(gain).map(|(a, b)| *a * *b).collect();
            let mean_dx = d.iter().zip(xh).map(|(a, b)| *a * *b).sum::<E>() / E::from_usize(w);
            for c in 0..w {
                dx[r * w + c] = rs[r] * (d[c] - xh[c] * mean_dx);
            }
        }
        Tensor::from_values(rows, w, dx)
    }

    /// `dg = Σ_rows dy ⊙ x̂`, in `E`.
    fn gain_grad_in<E: Element>(&self, xhat: &Tensor, dy: &Tensor) -> pipesched_stages::Result<Tensor> {
        let w = self.width();
        let mut dg = vec![E::ZERO; w];
        for (g, h) in dy.host::<E>()?.chunks_exact(w).zip(xhat.host::<E>()?.chunks_exact(w)) {
            for ((o, g), h) in dg.iter_mut().zip(g).zip(h) {
                *o += *g * *h;
            }
        }
        Tensor::from_values(1, w, dg)
    }
}

impl Layer for RmsNorm {
    fn kind(&self) -> &str {
        "rms_norm"
    }
    fn input_width(&self) -> usize {
        self.width()
    }
    fn output_width(&self) -> usize {
        self.width()
    }
    fn params(&self) -> Vec<&Tensor> {
        vec![&self.gain]
    }
    fn params_mut(&mut self) -> Vec<&mut Tensor> {
        vec![&mut self.gain]
    }
    fn param_names(&self) -> Vec<String> {
        vec!["gain".into()]
    }

    /// Keeps `x̂ = x / rms` and `1 / rms` of each row.
    fn forward_saving(&self, x: Tensor, _ctx: &Ctx) -> pipesched_stages::Result<(Tensor, Saved)> {
        self.check(&x, "forward")?;
        let [y, xhat, rinv] = match x.dtype() {
            Dtype::F32 => self.forward_in::<f32>(&x)?,
            // f64 for gradient checks; a 16-bit stored tensor is refused by `host` (a layer in a
            // mixed-precision stage is given f32: the stage widens what it stores).
            Dtype::F64 | Dtype::Stored(_) => self.forward_in::<f64>(&x)?,
        };
        Ok((y, Saved(vec![xhat, rinv])))
    }

    /// `dx = (1/rms) · (d − x̂ · mean(d ⊙ x̂))` with `d = dy ⊙ g`; keeps `x̂` and `dy` for `W`.
    fn backward_input(&self, saved: Saved, dy: Tensor, _ctx: &Ctx) -> pipesched_stages::Result<(Tensor, WNeeds)> {
        self.check(&dy, "backward_input")?;
        let [xhat, rinv] = saved.take(self.kind())?;
        let dx = match dy.dtype() {
            Dtype::F32 => self.backward_in::<f32>(&xhat, &rinv, &dy)?,
            Dtype::F64 | Dtype::Stored(_) => self.backward_in::<f64>(&xhat, &rinv, &dy)?,
        };
        Ok((dx, WNeeds(vec![xhat, dy])))
    }

    /// `dg = Σ_rows dy ⊙ x̂`.
    fn weight_grads(&self, needs: &WNeeds) -> pipesched_stages::Result<Vec<Tensor>> {
        let [xhat, dy] = needs.get(self.kind())?;
        Ok(vec![match dy.dtype() {
            Dtype::F32 => self.gain_grad_in::<f32>(xhat, dy)?,
            Dtype::F64 | Dtype::Stored(_) => self.gain_grad_in::<f64>(xhat, dy)?,
        }])
    }

    /// `x̂` (width) and `1/rms` (1).
    fn saved_per_row(&self) -> usize {
        self.width() + 1
    }
    /// `x̂` and `dy`.
    fn w_per_row(&self) -> usize {
        2 * self.width()
    }
}

const INPUT: usize = 16;
const WIDTH: usize = 24;
const CLASSES: usize = 5;
const LAYERS: usize = 8;
const SEED: u64 = 7;
const BATCH: usize = 6;

/// Layer `index` of the model, its parameters drawn from `(SEED, index)` alone, so every split of
/// the model — and the reference — builds the same one.
fn layer(index: usize) -> Box<dyn Layer> {
    let stream = Stream::new(&[SEED, index as u64]);
    match index {
        0 => Box::new(Linear::new(INPUT, WIDTH, stream, 1.0)),
        i if i == LAYERS - 1 => Box::new(Linear::new(WIDTH, CLASSES, stream, 1.0)),
        i if i % 2 == 1 => Box::new(RmsNorm::new(WIDTH, stream)),
        _ => Box::new(Linear::new(WIDTH, WIDTH, stream, 1.0)),
    }
}

/// The model split into `n` stages of consecutive layers (the first `LAYERS % n` one longer).
fn stages(n: usize, policy: RecomputePolicy) -> pipesched_stages::Result<Vec<Stage>> {
    let mut start = 0;
    (0..n)
        .map(|index| {
            let len = LAYERS / n + usize::from(index < LAYERS % n);
            let layers: Range<usize> = start..start + len;
            start += len;
            let spec = StageSpec { index, layers: layers.clone(), policy, device: Device::Cpu };
            let last = layers.end == LAYERS;
            Stage::from_layers(&spec, layers.map(layer).collect(), last.then_some(LossKind::CrossEntropy), SEED)
        })
        .collect()
}

/// Runs one pipelined step of `schedule` and compares it with the sequential reference; returns
/// what differs, if anything.
fn check(schedule: &Schedule, policy: RecomputePolicy) -> Result<Option<String>, Box<dyn std::error::Error>> {
    let (step, m) = (3, schedule.m);
    let task = Task::for_widths(INPUT, CLASSES, LossKind::CrossEntropy, SEED);
    let optimizer = OptimizerSpec::adam(1e-3);
    let mut pipelined: Vec<RealStage> = stages(schedule.stages(), policy)?
        .into_iter()
        .map(|s| RealStage::new(s, optimizer))
        .collect::<Result<_, _>>()?;
    for s in &mut pipelined {
        s.begin_step(&task, step, m, BATCH)?;
    }
    let trace = execute(schedule, &mut pipelined, &ExecOptions::default())?;
    let losses: Vec<f32> = pipelined.last().map_or(Ok(vec![]), |s| s.losses())?.into_iter().flatten().collect();
    let loss = mean_loss(&losses);

    let mut reference = stages(schedule.stages(), RecomputePolicy::None)?;
    let out = sequential_step(&mut reference, &task, step, m, BATCH)?;
    if out.loss.to_bits() != loss.to_bits() {
        return Ok(Some(format!("loss {loss} against the reference's {}", out.loss)));
    }
    for (k, (mine, theirs)) in pipelined.iter().zip(&reference).enumerate() {
        let (a, b) = (mine.stage().grads(), theirs.grads());
        if a.len() != b.len() {
            return Ok(Some(format!("stage {k} has {} gradients, the reference {}", a.len(), b.len())));
        }
        for (a, b) in a.into_iter().zip(b) {
            if !a.bit_eq(b) {
                return Ok(Some(format!("stage {k}'s gradients differ by up to {:?}", a.max_abs_diff(b))));
            }
        }
    }

    // Bytes: what each rank held at its peak, against a simulation of the stages' predictions.
    let mut statics = vec![0u64; schedule.p];
    for (k, s) in pipelined.iter().enumerate() {
        statics[schedule.rank_of(k)] += s.stage().static_bytes(&optimizer);
    }
    let costs = pipelined.iter().map(|s| s.stage().predicted_bytes(BATCH).cost(1.0, 1.0, 1.0)).collect();
    let model = CostModel {
        costs: StageCosts::Stages(costs),
        latency: 0.0,
        bandwidth: None,
        static_bytes: statics,
        host_link: None,
        time_unit: "ms".into(),
    };
    let (measured, predicted) =
        (Stats::of(&trace).peak_held_bytes, Stats::of(&simulate(schedule, &model)?).peak_held_bytes);
    if measured != predicted {
        return Ok(Some(format!("peak held bytes per rank {measured:?}, predicted {predicted:?}")));
    }
    Ok(None)
}

/// [`gradcheck`] of the layer, in `f64` and in `f32`: the relative errors of `I` and `W`.
fn gradient_checks() -> pipesched_stages::Result<[gradcheck::Report; 2]> {
    let mut norm = RmsNorm::new(WIDTH, Stream::new(&[SEED, 99]));
    let s = Stream::new(&[SEED, 1]);
    let x = Tensor::from_fn(3, WIDTH, |r, c| s.normal((r * WIDTH + c) as u64));
    let ctx = Ctx::new(SEED, 0, 0, 0);
    Ok([
        gradcheck::check(&mut norm, &x, &ctx, Settings::f64())?,
        gradcheck::check(&mut norm, &x, &ctx, Settings::f32())?,
    ])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let [wide, single] = gradient_checks()?;
    println!(
        "RmsNorm's I and W against central differences: {wide} (step {:e}); {single} (step {:e})",
        gradcheck::F64_STEP,
        gradcheck::F32_STEP
    );
    if !wide.within(gradcheck::F64_TOLERANCE) {
        return Err(format!("RmsNorm's gradients disagree with central differences in f64: {wide}").into());
    }
    let (mut checked, mut failed) = (0, 0);
    for kind in Kind::ALL {
        for p in 1..=4 {
            let v = kind.default_chunks();
            if p * v > LAYERS {
                continue;
            }
            for m in [p, 2 * p + 1] {
                // Interleaved takes m a multiple of p, ZB-H2 and DualPipeV m ≥ 2p: skip what they refuse.
                let Ok(schedule) = kind.generate(p, v, m) else { continue };
                for policy in [RecomputePolicy::None, RecomputePolicy::Full] {
                    let schedule = if policy.drops() {
                        pipesched_schedules::with_recompute(&schedule, &vec![true; schedule.stages()])?
                    } else {
                        schedule.clone()
                    };
                    checked += 1;
                    if let Some(diff) = check(&schedule, policy)? {
                        failed += 1;
                        println!("FAIL {kind} p={p} m={m} {policy}: {diff}");
                    }
                }
            }
        }
    }
    println!("RmsNorm, defined outside pipesched: {checked} pipelined steps, {} bitwise equal to the sequential reference with measured peak bytes equal to predicted", checked - failed);
    if failed > 0 {
        return Err(format!("{failed} of {checked} checks failed").into());
    }
    Ok(())
}

#[test]
fn the_layer_defined_here_pipelines_bit_for_bit_under_every_schedule() {
    main().unwrap();
}
