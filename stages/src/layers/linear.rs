//! `Linear`: `y = x·W + b`, with its backward split into the input gradient (`I`) and the weight
//! gradient (`W`).
//!
//! Invariant: `weight` is `[in, out]` and `bias` is `[1, out]`; every method checks the shapes it
//! is given against them. `I` needs only `W` and `dy`; `W` needs only the layer input `x` and
//! `dy`, which is exactly what a stage keeps for it between the two ops.
//!
//! A frozen layer (LoRA's base) trains neither `weight` nor `bias`: its `W` computes only its
//! [`Adapter`]'s gradients (from the same `x` and `dy`) if it has one; without one it trains
//! nothing, so it keeps nothing for `W` (nor its input, which only `W` reads).

use crate::error::{Error, Result};
use crate::layers::{held_frozen, keep_if, trained, weight_product, Adapter, Ctx, Layer, Saved, WNeeds};
use crate::matmul::GemmShape;
use crate::matmul::{matmul_into, Trans};
use crate::precision::Precision;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// A fully connected layer.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[in, out]`.
    pub(crate) weight: Tensor,
    /// `[1, out]`.
    pub(crate) bias: Tensor,
    /// Format of the products' operands and results.
    pub(crate) precision: Precision,
    /// Whether `weight` and `bias` are frozen.
    pub(crate) frozen: bool,
    /// The low-rank update trained in their place (a frozen layer only).
    pub(crate) adapter: Option<Adapter>,
}

impl Linear {
    /// A layer with weights drawn from `N(0, gain²/in)` by `stream` (element `k` of the weight
    /// is draw `k`) and zero bias.
    pub fn new(input: usize, output: usize, stream: Stream, gain: f32) -> Linear {
        let std = gain / (input.max(1) as f32).sqrt();
        let weight = Tensor::from_fn(input, output, |r, c| std * stream.normal((r * output + c) as u64));
        Linear { weight, bias: Tensor::zeros(1, output), precision: Precision::F32, frozen: false, adapter: None }
    }

    /// The layer with its products in `precision`.
    pub fn with_precision(self, precision: Precision) -> Linear {
        Linear { precision, ..self }
    }

    /// A layer from given weight `[in, out]` and bias `[1, out]`.
    pub fn from_parts(weight: Tensor, bias: Tensor) -> Result<Linear> {
        if bias.shape() != [1, weight.cols()] {
            return Err(shape(
                "Linear::from_parts",
                format!("bias {:?} for weight {:?}", bias.shape(), weight.shape()),
            ));
        }
        Ok(Linear { weight, bias, precision: Precision::F32, frozen: false, adapter: None })
    }

    /// Input width.
    pub fn input_width(&self) -> usize {
        self.weight.rows()
    }

    /// Output width.
    pub fn output_width(&self) -> usize {
        self.weight.cols()
    }

    /// The layer with `weight` and `bias` frozen, training `adapter` in their place if given
    /// (an error if its widths are not the layer's).
    pub fn freeze(self, adapter: Option<Adapter>) -> Result<Linear> {
        if let Some(a) = &adapter {
            let [(input, _), (_, output)] = a.linear_maps();
            if (input, output) != (self.input_width(), self.output_width()) {
                return Err(shape(
                    "Linear::freeze",
                    format!("an adapter for {input}→{output} on a layer of {:?}", self.weight.shape()),
                ));
            }
        }
        Ok(Linear { frozen: true, adapter, ..self })
    }

    /// The parameters it trains, in gradient order: weight, bias — or, frozen, its adapter's
    /// (none without one).
    pub fn params(&self) -> Vec<&Tensor> {
        match &self.adapter {
            Some(a) => a.params().into(),
            None => trained(self.frozen, [&self.weight, &self.bias]),
        }
    }

    /// The parameters it trains, mutable, in gradient order.
    pub fn params_mut(&mut self) -> Vec<&mut Tensor> {
        match &mut self.adapter {
            Some(a) => a.params_mut().into(),
            None => trained(self.frozen, [&mut self.weight, &mut self.bias]),
        }
    }

    /// Names of the parameters it trains, in gradient order.
    pub fn param_names(&self) -> Vec<String> {
        let names = match &self.adapter {
            Some(_) => Adapter::param_names().into(),
            None => trained(self.frozen, ["weight", "bias"]),
        };
        names.into_iter().map(String::from).collect()
    }

    /// The frozen parameters: weight and bias, or none.
    pub fn frozen(&self) -> Vec<&Tensor> {
        held_frozen(self.frozen, [&self.weight, &self.bias])
    }

    /// The frozen parameters, mutable.
    pub fn frozen_mut(&mut self) -> Vec<&mut Tensor> {
        held_frozen(self.frozen, [&mut self.weight, &mut self.bias])
    }

    /// Names of the frozen parameters.
    pub fn frozen_names(&self) -> Vec<String> {
        held_frozen(self.frozen, ["weight", "bias"]).into_iter().map(String::from).collect()
    }

    /// Whether it trains anything: its weight and bias, or an adapter.
    pub fn trains(&self) -> bool {
        !self.frozen || self.adapter.is_some()
    }

    /// `y = x·W + b` for `x` of shape `[batch, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.cols() != self.input_width() {
            return Err(shape("Linear forward", format!("input {:?}, layer is {:?}", x.shape(), self.weight.shape())));
        }
        let mut y = x.scratch_like(x.rows(), self.output_width())?;
        matmul_into(&mut y, x, Trans::No, &self.weight, Trans::No, self.precision)?;
        y.add_row(&self.bias)?;
        if let Some(a) = &self.adapter {
            a.add_forward(x, &mut y, self.precision)?;
        }
        Ok(y)
    }

    /// `I`: the input gradient `dx = dy·Wᵀ`.
    pub fn backward_input(&self, dy: &Tensor) -> Result<Tensor> {
        if dy.cols() != self.output_width() {
            return Err(shape(
                "Linear backward_input",
                format!("dy {:?}, layer is {:?}", dy.shape(), self.weight.shape()),
            ));
        }
        let mut dx = dy.scratch_like(dy.rows(), self.input_width())?;
        matmul_into(&mut dx, dy, Trans::No, &self.weight, Trans::Yes, self.precision)?;
        if let Some(a) = &self.adapter {
            a.add_input_grad(dy, &mut dx, self.precision)?;
        }
        Ok(dx)
    }

    /// `W`: this micro-batch's parameter gradients `[xᵀ·dy, column sums of dy]`, in gradient
    /// order, for the caller to accumulate — frozen, its adapter's `[dA, dB]`, or none.
    pub fn weight_grads(&self, x: &Tensor, dy: &Tensor) -> Result<Vec<Tensor>> {
        if !self.trains() {
            return Ok(Vec::new());
        }
        if x.rows() != dy.rows() || x.cols() != self.input_width() || dy.cols() != self.output_width() {
            return Err(shape(
                "Linear weight_grads",
                format!("x {:?}, dy {:?}, layer is {:?}", x.shape(), dy.shape(), self.weight.shape()),
            ));
        }
        if let (true, Some(a)) = (self.frozen, &self.adapter) {
            return Ok(a.grads(x, dy, self.precision)?.into());
        }
        let mut dw = dy.scratch_like(self.input_width(), self.output_width())?;
        matmul_into(&mut dw, x, Trans::Yes, dy, Trans::No, self.precision)?;
        Ok(vec![dw, dy.column_sums()?])
    }
}

impl Layer for Linear {
    fn kind(&self) -> &str {
        "linear"
    }
    fn input_width(&self) -> usize {
        self.weight.rows()
    }
    fn output_width(&self) -> usize {
        self.weight.cols()
    }
    fn params(&self) -> Vec<&Tensor> {
        Linear::params(self)
    }
    fn params_mut(&mut self) -> Vec<&mut Tensor> {
        Linear::params_mut(self)
    }
    fn param_names(&self) -> Vec<String> {
        Linear::param_names(self)
    }
    fn frozen(&self) -> Vec<&Tensor> {
        Linear::frozen(self)
    }
    fn frozen_mut(&mut self) -> Vec<&mut Tensor> {
        Linear::frozen_mut(self)
    }
    fn frozen_names(&self) -> Vec<String> {
        Linear::frozen_names(self)
    }
    fn forward(&self, x: Tensor, _ctx: &Ctx) -> Result<Tensor> {
        Linear::forward(self, &x)
    }
    /// Keeps the input, which `W` needs (nothing if it trains nothing).
    fn forward_saving(&self, x: Tensor, _ctx: &Ctx) -> Result<(Tensor, Saved)> {
        let y = Linear::forward(self, &x)?;
        Ok((y, Saved(vec![keep_if(self.trains(), x)])))
    }
    fn backward_input(&self, saved: Saved, dy: Tensor, _ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
        let [x] = saved.take(self.kind())?;
        let dx = Linear::backward_input(self, &dy)?;
        Ok((dx, WNeeds(vec![x, keep_if(self.trains(), dy)])))
    }
    fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>> {
        let [x, dy] = needs.get(self.kind())?;
        Linear::weight_grads(self, x, dy)
    }
    fn saved_per_row(&self) -> usize {
        if self.trains() {
            self.weight.rows()
        } else {
            0
        }
    }
    fn w_per_row(&self) -> usize {
        if self.trains() {
            self.weight.rows() + self.weight.cols()
        } else {
            0
        }
    }
    /// Its weight's, then its adapter's two.
    fn linear_maps(&self) -> Vec<(usize, usize)> {
        let mut maps = vec![(self.weight.rows(), self.weight.cols())];
        maps.extend(self.adapter.iter().flat_map(Adapter::linear_maps));
        maps
    }
    /// Its weight's if it trains, else its adapter's (none without one).
    fn weight_products(&self, rows: usize) -> Vec<GemmShape> {
        if self.frozen {
            self.adapter.iter().flat_map(|a| a.weight_products(rows)).collect()
        } else {
            vec![weight_product(self.weight.rows(), rows, self.weight.cols())]
        }
    }
    /// Made of backend operations and matrix products: runs on every device.
    fn runs_on(&self, _device: crate::device::Device) -> bool {
        true
    }
}

fn shape(place: &str, reason: String) -> Error {
    Error::Shape { place: place.into(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::check::{assert_close, numeric_grad, probe};

    #[test]
    fn forward_is_x_w_plus_b() {
        let w = Tensor::new(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let l = Linear::from_parts(w, Tensor::new(1, 3, vec![0.5, 0.0, -1.0]).unwrap()).unwrap();
        let y = l.forward(&Tensor::new(1, 2, vec![1.0, -1.0]).unwrap()).unwrap();
        assert_eq!(y.data(), &[-2.5, -3.0, -4.0]);
        assert!(l.forward(&Tensor::zeros(1, 3)).unwrap_err().to_string().contains("Linear forward"));
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut l = Linear::new(5, 4, Stream::new(&[1]), 1.0);
        l.bias = probe(1, 4, 7);
        let x = probe(3, 5, 2);
        let r = probe(3, 4, 3);
        let dx = l.backward_input(&r).unwrap();
        let [dw, db] = <[Tensor; 2]>::try_from(l.weight_grads(&x, &r).unwrap()).unwrap();
        let loss = |l: &Linear, x: &Tensor| crate::layers::check::dot(&l.forward(x).unwrap(), &r);
        assert_close(&dx, &numeric_grad(&x, |x| loss(&l, x)));
        assert_close(&dw, &numeric_grad(&l.weight, |w| loss(&Linear { weight: w.clone(), ..l.clone() }, &x)));
        assert_close(&db, &numeric_grad(&l.bias, |b| loss(&Linear { bias: b.clone(), ..l.clone() }, &x)));
    }
}
