//! Gradient checks: a layer's `I` ([`Layer::backward_input`]) and `W` ([`Layer::weight_grads`])
//! against central finite differences of its forward, run in `f64` — for any [`Layer`], built in
//! or a user's own — and, for comparison, in `f32`.
//!
//! # The check
//! For a layer `f` with parameters `θ`, an input `x` (`[rows, in]`) and fixed weights `r`
//! (`[rows, out]`, uniform in `[−1, 1)`, [`probe`]), the scalar `L = Σ f(x; θ) ⊙ r` (summed in
//! `f64`) has the gradients `∂L/∂x = I(r)` and `∂L/∂θ = W(r)`. Each element `v` of `x` and of every
//! parameter is moved to `v⁺ = v + h` and `v⁻ = v − h` (rounded to the element type),
//! `h = step · max(1, |v|)`, and the numeric derivative `(L(v⁺) − L(v⁻)) / (v⁺ − v⁻)` is compared
//! with the analytic one. The relative error of a tensor is
//! `max |analytic − numeric| / max |numeric|` over its elements. Dropout masks are functions of
//! the op's [`Ctx`], so every forward of a check draws the same mask and the function checked is
//! smooth (the softmaxes subtract a maximum, to which they are invariant).
//!
//! # Error model
//! A central difference errs by truncation, `h²·|f‴|/6`, and by rounding, about `u·|L|/h` with
//! `u` the unit roundoff of the forward (the forward's own rounding errors of `L`, relative `u`
//! times a modest growth factor, divided by `2h`). In `f64` (`u = 1.1e-16`) at `h = 1e-6`
//! ([`F64_STEP`]) both terms are about `1e-12·|f‴|` and `1e-10·|L|`: for the layers here
//! (`|L| ≲ 10²`, derivatives of order 1) they are orders of magnitude below the tolerance
//! [`F64_TOLERANCE`] = `1e-6`, so an error above it is a wrong formula (or a term a backward
//! forgets), not noise. In `f32` (`u = 6e-8`) no step is good: at `h = 1e-2` ([`F32_STEP`]) the
//! truncation term is about `1e-5` and the rounding term `1e-5·|L|`, so the `f32` figure is a
//! noise floor of `1e-5`…`1e-3` that says little about the formulas; it is reported beside the
//! `f64` one to show what the `f64` check adds. In `f64` the host kernels use libm's `exp` where
//! `f32` uses [`exp_approx`](crate::backend::exp_approx), and constants (GELU's `√(2/π)`) to
//! `f64` precision; scalar factors that enter as `f32` (the dropout scale `1/(1 − rate)`, the
//! score scale `1/√d`, LayerNorm's `ε`, a loss's `1/(rows·m)`) are the same constant in the
//! forward and the backward, except a loss's `1/(rows·m)`, which the forward computes in the
//! element type: [`check_loss`] is exact only where `rows·m` is a power of two.
//!
//! # Running a layer in `f64`
//! [`check`] converts the layer's parameters ([`Layer::params_mut`]) and the input to host
//! tensors of the check's type, runs the layer's own ops on them — the host kernels are generic
//! over the element ([`Element`]), so the same code runs in both types — perturbs parameters in
//! place, and afterwards puts every parameter back on its device in its type. That is exact:
//! every `f32` is an `f64`, and each perturbed element is restored to its saved value; it happens
//! whether or not the check succeeded. A layer is thus checked as it is, through `&mut`, with no
//! copy and nothing for it to implement. A layer that keeps tensors outside `params_mut`, or
//! runs products in `bf16`/`f16`, fails the check with an element-type error naming the op. A
//! layer that reads its tensors as `f32` directly ([`Tensor::data`]) must read them through
//! [`Tensor::host`] with a generic element instead to run in `f64` (`examples/own_layer.rs`
//! shows one).

use std::fmt;

use crate::device::Device;
use crate::element::{Dtype, Element};
use crate::error::{Error, Result};
use crate::layers::{Ctx, Layer};
use crate::loss::LossKind;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// The relative step of an `f64` check.
pub const F64_STEP: f64 = 1e-6;
/// The relative step of an `f32` check.
pub const F32_STEP: f64 = 1e-2;
/// The largest relative error an `f64` check of a correct layer shows, by the error model.
pub const F64_TOLERANCE: f64 = 1e-6;

/// How to check: the element type, the relative step, and whether the input is differentiable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The type the layer runs in for the check.
    pub dtype: Dtype,
    /// The relative step `h / max(1, |v|)`.
    pub step: f64,
    /// Whether to check `I` against differences of the input; `false` for inputs that are not
    /// numbers to differentiate by (token ids), whose `I` is then only run.
    pub input: bool,
}

impl Settings {
    /// In `f64` at [`F64_STEP`].
    pub fn f64() -> Settings {
        Settings { dtype: Dtype::F64, step: F64_STEP, input: true }
    }

    /// In `f32` at [`F32_STEP`].
    pub fn f32() -> Settings {
        Settings { dtype: Dtype::F32, step: F32_STEP, input: true }
    }

    /// These settings for an input of ids or classes: `I` is run but not checked.
    pub fn discrete_input(self) -> Settings {
        Settings { input: false, ..self }
    }
}

/// The relative errors of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The layer's [`kind`](Layer::kind).
    pub kind: String,
    /// The type the check ran in.
    pub dtype: Dtype,
    /// The relative error of `I`; `None` when the input was not checked.
    pub input: Option<f64>,
    /// The relative error of each parameter's gradient, with the parameter's name, in gradient
    /// order.
    pub params: Vec<(String, f64)>,
}

impl Report {
    /// The largest relative error (NaN if any is NaN).
    pub fn worst(&self) -> f64 {
        self.input.into_iter().chain(self.params.iter().map(|(_, e)| *e)).fold(0.0, |m, e| {
            if e.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(e)
            }
        })
    }

    /// Whether every relative error is at most `tolerance` (false if any is NaN).
    pub fn within(&self, tolerance: f64) -> bool {
        self.worst() <= tolerance
    }

    /// The largest relative error of the weight gradients (0 for a layer without parameters).
    pub fn worst_weight(&self) -> f64 {
        Report { input: None, ..self.clone() }.worst()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}: I ", self.kind, self.dtype)?;
        match self.input {
            Some(e) => write!(f, "{e:.1e}")?,
            None => write!(f, "not checked")?,
        }
        for (name, e) in &self.params {
            write!(f, ", {name} {e:.1e}")?;
        }
        Ok(())
    }
}

/// A `[rows, cols]` `f32` tensor of values uniform in `[−1, 1)`, the same for the same `salt`:
/// inputs and loss weights of checks.
pub fn probe(rows: usize, cols: usize, salt: u64) -> Tensor {
    let s = Stream::new(&[0xC4EC, salt]);
    Tensor::from_fn(rows, cols, |r, c| 2.0 * s.uniform((r * cols + c) as u64) - 1.0)
}

/// The salt of the loss weights `r`.
const WEIGHTS: u64 = 0x5EED;

/// Checks `layer`'s `I` and `W` on input `x` (of any type, on any device) under `ctx` against
/// central differences, in `settings.dtype` on the host; the layer's parameters are converted for
/// the check and restored, bit for bit and on their device, after it (module docs).
pub fn check(layer: &mut dyn Layer, x: &Tensor, ctx: &Ctx, settings: Settings) -> Result<Report> {
    if !(settings.step > 0.0 && settings.step < 1.0) {
        return Err(Error::Spec(format!("gradient check: step {} must be in (0, 1)", settings.step)));
    }
    let all = layer.params().into_iter().chain(layer.frozen());
    let original: Vec<(Dtype, Device)> = all.map(|p| (p.dtype(), p.device())).collect();
    let converted = convert(layer, |_| (settings.dtype, Device::Cpu));
    let result = converted.and_then(|()| match settings.dtype {
        Dtype::F32 => run::<f32>(layer, x, ctx, settings),
        Dtype::F64 => run::<f64>(layer, x, ctx, settings),
        Dtype::Stored(f) => Err(not_checkable(f)),
    });
    let restored = convert(layer, |k| original[k]);
    let report = result?;
    restored?;
    Ok(report)
}

/// Puts parameter `k` of `layer` (its trained ones, then its frozen ones) in type and on device
/// `to(k)` (a no-op for those already there).
fn convert(layer: &mut dyn Layer, to: impl Fn(usize) -> (Dtype, Device)) -> Result<()> {
    let trained = layer.params().len();
    for (k, p) in layer.params_mut().into_iter().enumerate() {
        convert_one(p, to(k))?;
    }
    for (k, p) in layer.frozen_mut().into_iter().enumerate() {
        convert_one(p, to(trained + k))?;
    }
    Ok(())
}

/// Puts `p` in type and on device `(dtype, device)`.
fn convert_one(p: &mut Tensor, (dtype, device): (Dtype, Device)) -> Result<()> {
    if p.dtype() == dtype && p.device() == device {
        return Ok(());
    }
    let host = match dtype {
        Dtype::F64 => p.to_f64()?,
        Dtype::F32 => p.to_host()?.to_f32()?,
        Dtype::Stored(f) => return Err(not_checkable(f)),
    };
    *p = host.into_device(device)?;
    Ok(())
}

/// The check in `E`, on a layer whose parameters are host tensors of `E`.
fn run<E: Element>(layer: &mut dyn Layer, x: &Tensor, ctx: &Ctx, settings: Settings) -> Result<Report> {
    let kind = layer.kind().to_string();
    let x = x.to_host()?.into_dtype(E::DTYPE)?;
    let r = probe(x.rows(), layer.output_width(), WEIGHTS).into_dtype(E::DTYPE)?;
    let weights = r.values_f64()?;
    let (_, saved) = layer.forward_saving(x.try_clone()?, ctx)?;
    let (dx, needs) = layer.backward_input(saved, r, ctx)?;
    let grads = layer.weight_grads(&needs)?;
    let shapes: Vec<[usize; 2]> = layer.params().iter().map(|p| p.shape()).collect();
    if grads.len() != shapes.len() || grads.iter().zip(&shapes).any(|(g, s)| g.shape() != *s) {
        return Err(Error::Shape {
            place: format!("gradient check of {kind}"),
            reason: format!(
                "weight_grads gave {:?} for parameters {shapes:?}; one gradient per parameter, of its shape",
                grads.iter().map(Tensor::shape).collect::<Vec<_>>()
            ),
        });
    }
    if dx.shape() != x.shape() {
        return Err(Error::Shape {
            place: format!("gradient check of {kind}"),
            reason: format!("backward_input gave {:?} for an input of {:?}", dx.shape(), x.shape()),
        });
    }
    let loss = |layer: &dyn Layer, x: Tensor| -> Result<f64> {
        let y = layer.forward(x, ctx)?.values_f64()?;
        if y.len() != weights.len() {
            return Err(Error::Shape {
                place: format!("gradient check of {kind}"),
                reason: format!("forward gave {} values, {} expected", y.len(), weights.len()),
            });
        }
        Ok(y.iter().zip(&weights).map(|(a, b)| a * b).sum())
    };
    let input = if settings.input {
        let mut numeric = Vec::with_capacity(x.len());
        for k in 0..x.len() {
            let v = x.host::<E>()?[k];
            let (up, down) = moved(v, settings.step);
            let mut xp = x.try_clone()?;
            xp.host_mut::<E>()?[k] = up;
            let lp = loss(layer, xp)?;
            let mut xm = x.try_clone()?;
            xm.host_mut::<E>()?[k] = down;
            let lm = loss(layer, xm)?;
            numeric.push((lp - lm) / (up.to_f64() - down.to_f64()));
        }
        Some(relative_error(&dx.values_f64()?, &numeric))
    } else {
        None
    };
    let names = layer.param_names();
    let mut params = Vec::with_capacity(grads.len());
    for (p, grad) in grads.iter().enumerate() {
        let mut numeric = Vec::with_capacity(grad.len());
        for k in 0..grad.len() {
            let v = layer.params()[p].host::<E>()?[k];
            let (up, down) = moved(v, settings.step);
            layer.params_mut()[p].host_mut::<E>()?[k] = up;
            let lp = loss(layer, x.try_clone()?);
            layer.params_mut()[p].host_mut::<E>()?[k] = down;
            let lm = loss(layer, x.try_clone()?);
            layer.params_mut()[p].host_mut::<E>()?[k] = v;
            numeric.push((lp? - lm?) / (up.to_f64() - down.to_f64()));
        }
        let name = names.get(p).cloned().unwrap_or_else(|| format!("parameter {p}"));
        params.push((name, relative_error(&grad.values_f64()?, &numeric)));
    }
    Ok(Report { kind, dtype: E::DTYPE, input, params })
}

/// `v ± step·max(1, |v|)`, rounded to `E`.
fn moved<E: Element>(v: E, step: f64) -> (E, E) {
    let h = step * v.to_f64().abs().max(1.0);
    (E::from_f64(v.to_f64() + h), E::from_f64(v.to_f64() - h))
}

/// `max |analytic − numeric| / max |numeric|` (the difference itself if the numeric gradient is
/// zero).
fn relative_error(analytic: &[f64], numeric: &[f64]) -> f64 {
    let diff = analytic.iter().zip(numeric).map(|(a, n)| (a - n).abs()).fold(0.0, f64::max);
    let scale = numeric.iter().map(|n| n.abs()).fold(0.0, f64::max);
    diff / scale.max(f64::MIN_POSITIVE)
}

/// Checks a loss's backward (the gradient of `loss / m` with respect to the prediction) against
/// central differences of its forward, in `settings.dtype`: the relative error. `target` is
/// converted to the check's type (class indices are exact in both).
pub fn check_loss(kind: LossKind, pred: &Tensor, target: &Tensor, m: usize, settings: Settings) -> Result<f64> {
    if m == 0 || !(settings.step > 0.0 && settings.step < 1.0) {
        return Err(Error::Spec(format!(
            "loss gradient check: m = {m} and step {} (need m ≥ 1, step in (0, 1))",
            settings.step
        )));
    }
    match settings.dtype {
        Dtype::F32 => loss_in::<f32>(kind, pred, target, m, settings.step),
        Dtype::F64 => loss_in::<f64>(kind, pred, target, m, settings.step),
        Dtype::Stored(f) => Err(not_checkable(f)),
    }
}

/// Gradient checks run in `f32` or `f64`: 16-bit storage rounds away the differences they take.
fn not_checkable(format: crate::precision::Format) -> Error {
    Error::Spec(format!(
        "gradient check in {format} storage: check in f32 or f64, whose rounding is below the differences taken"
    ))
}

/// [`check_loss`] in `E`.
fn loss_in<E: Element>(kind: LossKind, pred: &Tensor, target: &Tensor, m: usize, step: f64) -> Result<f64> {
    let pred = pred.to_host()?.into_dtype(E::DTYPE)?;
    let target = target.to_host()?.into_dtype(E::DTYPE)?;
    let (_, saved) = kind.forward_tensor(&pred, &target)?;
    let analytic = LossKind::backward(saved, m)?.values_f64()?;
    let value = |p: Tensor| -> Result<f64> { Ok(kind.forward_tensor(&p, &target)?.0.values_f64()?[0] / m as f64) };
    let mut numeric = Vec::with_capacity(pred.len());
    for k in 0..pred.len() {
        let v = pred.host::<E>()?[k];
        let (up, down) = moved(v, step);
        let mut pp = pred.try_clone()?;
        pp.host_mut::<E>()?[k] = up;
        let mut pm = pred.try_clone()?;
        pm.host_mut::<E>()?[k] = down;
        numeric.push((value(pp)? - value(pm)?) / (up.to_f64() - down.to_f64()));
    }
    Ok(relative_error(&analytic, &numeric))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Attention, Block, Dropout, Embedding, LayerNorm, Linear, Saved, WNeeds};

    /// A layer checked through its selective-recompute path: `forward_selective` then `restore`
    /// in place of `forward_saving`.
    #[derive(Debug)]
    struct Selectively<L>(L);

    impl<L: Layer> Layer for Selectively<L> {
        fn kind(&self) -> &str {
            self.0.kind()
        }
        fn input_width(&self) -> usize {
            self.0.input_width()
        }
        fn output_width(&self) -> usize {
            self.0.output_width()
        }
        fn params(&self) -> Vec<&Tensor> {
            self.0.params()
        }
        fn params_mut(&mut self) -> Vec<&mut Tensor> {
            self.0.params_mut()
        }
        fn param_names(&self) -> Vec<String> {
            self.0.param_names()
        }
        fn forward_saving(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
            let (y, kept) = self.0.forward_selective(x, ctx)?;
            Ok((y, self.0.restore(kept, ctx)?))
        }
        fn backward_input(&self, saved: Saved, dy: Tensor, ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
            self.0.backward_input(saved, dy, ctx)
        }
        fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>> {
            self.0.weight_grads(needs)
        }
        fn saved_per_row(&self) -> usize {
            self.0.saved_per_row()
        }
        fn w_per_row(&self) -> usize {
            self.0.w_per_row()
        }
    }

    /// Dropout on its own as a layer: the mask of `ctx` on the input and on the gradient.
    #[derive(Debug)]
    struct Dropped(Dropout, usize);

    impl Layer for Dropped {
        fn kind(&self) -> &str {
            "dropout"
        }
        fn input_width(&self) -> usize {
            self.1
        }
        fn output_width(&self) -> usize {
            self.1
        }
        fn params(&self) -> Vec<&Tensor> {
            Vec::new()
        }
        fn params_mut(&mut self) -> Vec<&mut Tensor> {
            Vec::new()
        }
        fn param_names(&self) -> Vec<String> {
            Vec::new()
        }
        fn forward_saving(&self, mut x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
            self.0.apply(&mut x, ctx)?;
            Ok((x, Saved::default()))
        }
        fn backward_input(&self, _saved: Saved, mut dy: Tensor, ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
            self.0.apply(&mut dy, ctx)?;
            Ok((dy, WNeeds::default()))
        }
        fn weight_grads(&self, _needs: &WNeeds) -> Result<Vec<Tensor>> {
            Ok(Vec::new())
        }
        fn saved_per_row(&self) -> usize {
            0
        }
        fn w_per_row(&self) -> usize {
            0
        }
    }

    /// A `Linear` whose weight gradient is off by a relative `1e-5`: a wrong formula the `f64`
    /// check must catch.
    #[derive(Debug)]
    struct Skewed(Linear);

    impl Layer for Skewed {
        fn kind(&self) -> &str {
            "skewed linear"
        }
        fn input_width(&self) -> usize {
            Layer::input_width(&self.0)
        }
        fn output_width(&self) -> usize {
            Layer::output_width(&self.0)
        }
        fn params(&self) -> Vec<&Tensor> {
            Layer::params(&self.0)
        }
        fn params_mut(&mut self) -> Vec<&mut Tensor> {
            Layer::params_mut(&mut self.0)
        }
        fn param_names(&self) -> Vec<String> {
            self.0.param_names()
        }
        fn forward_saving(&self, x: Tensor, ctx: &Ctx) -> Result<(Tensor, Saved)> {
            self.0.forward_saving(x, ctx)
        }
        fn backward_input(&self, saved: Saved, dy: Tensor, ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
            Layer::backward_input(&self.0, saved, dy, ctx)
        }
        fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>> {
            let mut g = Layer::weight_grads(&self.0, needs)?;
            crate::backend::scale(&mut g[0], 1.0 + 1e-5)?;
            Ok(g)
        }
        fn saved_per_row(&self) -> usize {
            self.0.saved_per_row()
        }
        fn w_per_row(&self) -> usize {
            self.0.w_per_row()
        }
    }

    fn linear() -> Linear {
        let mut l = Linear::new(5, 4, Stream::new(&[1]), 1.0);
        l.bias = probe(1, 4, 7);
        l
    }

    fn norm() -> LayerNorm {
        let mut n = LayerNorm::new(6);
        n.gamma = probe(1, 6, 11);
        n.beta = probe(1, 6, 12);
        n
    }

    fn block(rate: f32) -> Block {
        let mut b = Block::new(6, 10, Dropout { rate }, Stream::new(&[5]), 0.7);
        b.norm.gamma = probe(1, 6, 30);
        b.norm.beta = probe(1, 6, 31);
        b.fc1.bias = probe(1, 10, 32);
        b
    }

    fn attention(rate: f32) -> Attention {
        let mut a = Attention::new(8, 2, 3, Dropout { rate }, Stream::new(&[7]), 0.8).unwrap();
        a.norm.gamma = probe(1, 8, 50);
        a.norm.beta = probe(1, 8, 51);
        a.qkv.bias = probe(1, 24, 52);
        a
    }

    fn embedding() -> Embedding {
        let mut e = Embedding::new(5, 4, 3, Stream::new(&[2])).unwrap();
        e.tokens = probe(5, 4, 70);
        e.positions = probe(3, 4, 71);
        e
    }

    /// Every built-in layer kind, with its input and the settings its input needs.
    fn cases() -> Vec<(String, Box<dyn Layer>, Tensor, bool)> {
        let ids = Tensor::new(6, 1, vec![4.0, 0.0, 4.0, 1.0, 1.0, 3.0]).unwrap();
        let case = |name: &str, l: Box<dyn Layer>, x: Tensor| (name.to_string(), l, x, true);
        vec![
            ("embedding".into(), Box::new(embedding()) as Box<dyn Layer>, ids, false),
            case("linear", Box::new(linear()), probe(3, 5, 2)),
            case("layer norm", Box::new(norm()), probe(3, 6, 13)),
            case("dropout 0.3", Box::new(Dropped(Dropout { rate: 0.3 }, 7)), probe(4, 7, 20)),
            case("block", Box::new(block(0.0)), probe(3, 6, 33)),
            case("block, dropout 0.3", Box::new(block(0.3)), probe(3, 6, 33)),
            case("attention", Box::new(attention(0.0)), probe(6, 8, 53)),
            case("attention, dropout 0.3", Box::new(attention(0.3)), probe(6, 8, 53)),
            case("attention, selective, dropout 0.3", Box::new(Selectively(attention(0.3))), probe(6, 8, 53)),
        ]
    }

    #[test]
    fn every_layer_matches_central_differences_in_f64() {
        let ctx = Ctx::new(9, 2, 1, 4);
        println!("\n| layer | f64: I | f64: W (worst) | f32: I | f32: W (worst) |");
        println!("|---|---|---|---|---|");
        for (name, mut layer, x, differentiable) in cases() {
            let before: Vec<Tensor> = layer.params().into_iter().cloned().collect();
            let settings = |s: Settings| if differentiable { s } else { s.discrete_input() };
            let wide = check(layer.as_mut(), &x, &ctx, settings(Settings::f64())).unwrap();
            let single = check(layer.as_mut(), &x, &ctx, settings(Settings::f32())).unwrap();
            assert!(wide.within(F64_TOLERANCE), "{name}: {wide}");
            assert_eq!(wide.params.len(), before.len(), "{name}");
            assert_eq!(wide.input.is_some(), differentiable);
            let after = layer.params();
            assert!(after.iter().zip(&before).all(|(a, b)| a.bit_eq(b)), "{name}: parameters restored bit for bit");
            let i = |r: &Report| r.input.map_or("—".to_string(), |e| format!("{e:.1e}"));
            let w =
                |r: &Report| if r.params.is_empty() { "—".to_string() } else { format!("{:.1e}", r.worst_weight()) };
            println!("| {name} | {} | {} | {} | {} |", i(&wide), w(&wide), i(&single), w(&single));
        }
    }

    #[test]
    fn losses_match_central_differences_in_f64() {
        let logits = Tensor::from_fn(4, 5, |r, c| 2.0 * probe(4, 5, 40).get(r, c).unwrap());
        let classes = Tensor::new(4, 1, vec![0.0, 4.0, 2.0, 2.0]).unwrap();
        let pred = probe(4, 4, 42);
        let target = probe(4, 4, 41);
        println!();
        // rows·m a power of two: the loss's 1/(rows·m) is exact in both types (module docs).
        for (name, kind, p, t, m) in
            [("cross-entropy", LossKind::CrossEntropy, &logits, &classes, 1), ("mse", LossKind::Mse, &pred, &target, 2)]
        {
            let wide = check_loss(kind, p, t, m, Settings::f64()).unwrap();
            let single = check_loss(kind, p, t, m, Settings::f32()).unwrap();
            println!("| {name} loss | {wide:.1e} | — | {single:.1e} | — |");
            assert!(wide <= F64_TOLERANCE, "{name}: {wide}");
        }
        let e = check_loss(LossKind::Mse, &pred, &target, 0, Settings::f64()).unwrap_err().to_string();
        assert!(e.contains("m = 0"), "{e}");
    }

    #[test]
    fn a_gradient_off_by_1e5_fails_in_f64() {
        let mut skewed = Skewed(linear());
        let x = probe(3, 5, 2);
        let ctx = Ctx::new(1, 0, 0, 0);
        let wide = check(&mut skewed, &x, &ctx, Settings::f64()).unwrap();
        let single = check(&mut skewed, &x, &ctx, Settings::f32()).unwrap();
        eprintln!("{wide}\n{single}");
        assert!(wide.input.unwrap() <= F64_TOLERANCE, "I is right");
        assert!(wide.params[1].1 <= F64_TOLERANCE, "the bias gradient is right");
        let w = wide.params[0].1;
        assert!((0.5e-5..2e-5).contains(&w), "the weight gradient is 1e-5 off: {w}");
        assert!(!wide.within(F64_TOLERANCE));
    }

    #[test]
    fn a_failed_check_restores_the_layer_and_says_why() {
        let mut l = linear().with_precision(crate::Precision::Bf16);
        let before: Vec<Tensor> = Layer::params(&l).into_iter().cloned().collect();
        let e = check(&mut l, &probe(3, 5, 2), &Ctx::new(1, 0, 0, 0), Settings::f64()).unwrap_err();
        assert!(matches!(e, Error::Dtype { .. }) && e.to_string().contains("bf16 products"), "{e}");
        assert!(Layer::params(&l).iter().zip(&before).all(|(a, b)| a.bit_eq(b)));
        let bad = Settings { step: 0.0, ..Settings::f64() };
        assert!(check(&mut l, &probe(3, 5, 2), &Ctx::new(1, 0, 0, 0), bad).unwrap_err().to_string().contains("step 0"));
        // A layer fed an input of the other type: an element-type error, not a panic.
        let n = norm();
        let e = n.forward(&probe(3, 6, 1).to_f64().unwrap()).unwrap_err().to_string();
        assert!(e.contains("f64 and f32"), "{e}");
    }

    #[test]
    fn the_f32_instantiation_is_the_f32_code() {
        // The f64 forward of a layer agrees with its f32 forward to f32 accuracy, and converting
        // an f32 layer's output of a check's f64 run back gives close values.
        let ctx = Ctx::new(9, 2, 1, 4);
        let mut a = attention(0.3);
        let x = probe(6, 8, 53);
        let y32 = Layer::forward(&a, x.clone(), &ctx).unwrap();
        for p in Layer::params_mut(&mut a) {
            *p = p.to_f64().unwrap();
        }
        let y64 = Layer::forward(&a, x.to_f64().unwrap(), &ctx).unwrap();
        assert_eq!(y64.dtype(), Dtype::F64);
        let diff = y32.max_abs_diff(&y64).unwrap();
        assert!(diff < 1e-5, "{diff}");
    }
}
