//! `Embedding`: token embeddings plus learned positions, the first layer of a GPT.
//!
//! The input is `[rows, 1]`: one token id per row, as an `f32` holding a whole number in
//! `0..vocab` (exact: ids below 2²⁴). Row `r` of a micro-batch is position `r mod seq` of its
//! sequence (sequences are consecutive rows, `tensor.rs`), and its output is
//! `tokens[id] + positions[r mod seq]`.
//!
//! Invariant: the forward keeps the ids (one float per row); `I` keeps the ids and the output
//! gradient (a frozen embedding keeps neither: only `W` reads them), from which `W` scatters the gradients into the two tables in row order (so the sums
//! are in a fixed order). The input gradient of a token id does not exist: `I` returns zeros,
//! which the first stage drops.

use crate::backend;
use crate::error::{Error, Result};
use crate::layers::{held_frozen, keep_if, trained, Ctx, Layer, Saved, WNeeds};
use crate::rng::Stream;
use crate::tensor::Tensor;

/// Standard deviation of the initial token embeddings (GPT-2's).
const TOKEN_STD: f32 = 0.02;
/// Standard deviation of the initial position embeddings.
const POSITION_STD: f32 = 0.01;

/// A table of `vocab` token embeddings and `seq` position embeddings of width `width`.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// `[vocab, width]`.
    pub(crate) tokens: Tensor,
    /// `[seq, width]`.
    pub(crate) positions: Tensor,
    /// Whether both tables are frozen (then `W` computes nothing).
    pub(crate) frozen: bool,
}

impl Embedding {
    /// Tables drawn from `stream`; an error unless every size is at least 1.
    pub fn new(vocab: usize, width: usize, seq: usize, stream: Stream) -> Result<Embedding> {
        if vocab == 0 || width == 0 || seq == 0 {
            return Err(Error::Spec(format!(
                "embedding: vocab {vocab}, width {width}, seq {seq}: every size must be at least 1"
            )));
        }
        let st = Stream::new(&[stream.bits(0), 1]);
        let sp = Stream::new(&[stream.bits(0), 2]);
        Ok(Embedding {
            tokens: Tensor::from_fn(vocab, width, |r, c| TOKEN_STD * st.normal((r * width + c) as u64)),
            positions: Tensor::from_fn(seq, width, |r, c| POSITION_STD * sp.normal((r * width + c) as u64)),
            frozen: false,
        })
    }

    /// The layer with both tables frozen.
    pub fn freeze(self) -> Embedding {
        Embedding { frozen: true, ..self }
    }

    /// Number of token ids.
    pub fn vocab(&self) -> usize {
        self.tokens.rows()
    }

    /// Tokens per sequence (positions).
    pub fn seq(&self) -> usize {
        self.positions.rows()
    }
}

impl Layer for Embedding {
    fn kind(&self) -> &str {
        "embedding"
    }
    fn input_width(&self) -> usize {
        1
    }
    fn output_width(&self) -> usize {
        self.tokens.cols()
    }
    /// `tokens, positions` (none when frozen).
    fn params(&self) -> Vec<&Tensor> {
        trained(self.frozen, [&self.tokens, &self.positions])
    }
    fn params_mut(&mut self) -> Vec<&mut Tensor> {
        trained(self.frozen, [&mut self.tokens, &mut self.positions])
    }
    fn param_names(&self) -> Vec<String> {
        trained(self.frozen, ["tokens", "positions"]).into_iter().map(String::from).collect()
    }
    fn frozen(&self) -> Vec<&Tensor> {
        held_frozen(self.frozen, [&self.tokens, &self.positions])
    }
    fn frozen_mut(&mut self) -> Vec<&mut Tensor> {
        held_frozen(self.frozen, [&mut self.tokens, &mut self.positions])
    }
    fn frozen_names(&self) -> Vec<String> {
        held_frozen(self.frozen, ["tokens", "positions"]).into_iter().map(String::from).collect()
    }
    /// Keeps the ids, which only `W` reads (nothing when frozen).
    fn forward_saving(&self, x: Tensor, _ctx: &Ctx) -> Result<(Tensor, Saved)> {
        let out = backend::embedding(&x, &self.tokens, &self.positions)?;
        Ok((out, Saved(vec![keep_if(!self.frozen, x)])))
    }
    /// Keeps the ids and `dy` (nothing when frozen); the input gradient is zero.
    fn backward_input(&self, saved: Saved, dy: Tensor, _ctx: &Ctx) -> Result<(Tensor, WNeeds)> {
        let [x] = saved.take(self.kind())?;
        if self.frozen {
            let dx = dy.zeros_like(dy.rows(), 1)?;
            return Ok((dx, WNeeds(vec![x, Tensor::zeros(0, 0)])));
        }
        if dy.shape() != [x.rows(), self.output_width()] {
            return Err(Error::Shape {
                place: "embedding backward_input".into(),
                reason: format!("dy {:?} for {} tokens of width {}", dy.shape(), x.rows(), self.output_width()),
            });
        }
        Ok((x.zeros_like(x.rows(), 1)?, WNeeds(vec![x, dy])))
    }
    /// Each row's gradient added into its token's row and its position's row, in row order.
    fn weight_grads(&self, needs: &WNeeds) -> Result<Vec<Tensor>> {
        let [x, dy] = needs.get(self.kind())?;
        if self.frozen {
            return Ok(Vec::new());
        }
        Ok(backend::embedding_grads(x, dy, &self.tokens, &self.positions)?.into())
    }
    /// Built of backend operations: runs on every device.
    fn runs_on(&self, _device: crate::device::Device) -> bool {
        true
    }
    /// The id (nothing when frozen).
    fn saved_per_row(&self) -> usize {
        usize::from(!self.frozen)
    }
    /// The id and `dy` (width) (nothing when frozen).
    fn w_per_row(&self) -> usize {
        if self.frozen {
            0
        } else {
            1 + self.output_width()
        }
    }
    /// The id, first in what the forward and `I` keep (nothing when frozen).
    fn exact_per_row(&self) -> usize {
        usize::from(!self.frozen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::check::{assert_close, dot, numeric_grad, probe, relative_error};

    fn e2_name(k: usize) -> &'static str {
        ["tokens", "positions"][k]
    }

    fn ids(v: &[u8]) -> Tensor {
        Tensor::from_fn(v.len(), 1, |r, _| v[r] as f32)
    }

    #[test]
    fn output_is_token_plus_position_and_gradients_match() {
        let mut e = Embedding::new(5, 4, 3, Stream::new(&[2])).unwrap();
        e.tokens = probe(5, 4, 70);
        e.positions = probe(3, 4, 71);
        let x = ids(&[4, 0, 4, 1, 1, 3]);
        let ctx = Ctx::new(1, 0, 0, 0);
        let (y, saved) = e.forward_saving(x.clone(), &ctx).unwrap();
        assert_eq!(y.get(4, 2), Some(e.tokens.get(1, 2).unwrap() + e.positions.get(1, 2).unwrap()));
        assert_eq!(saved.bytes(), 4 * 6);
        let r = probe(6, 4, 72);
        let (dx, needs) = e.backward_input(saved, r.clone(), &ctx).unwrap();
        assert!(dx.data().iter().all(|v| *v == 0.0) && dx.shape() == [6, 1]);
        assert_eq!(needs.bytes(), 4 * 6 * 5);
        let grads = e.weight_grads(&needs).unwrap();
        for (k, g) in grads.iter().enumerate() {
            let numeric = numeric_grad(e.params()[k], |p| {
                let mut e2 = e.clone();
                *e2.params_mut()[k] = p.clone();
                dot(&Layer::forward(&e2, x.clone(), &ctx).unwrap(), &r)
            });
            assert_close(g, &numeric);
            // The output is linear in the tables: the differences are exact up to rounding.
            let e = relative_error(g, &numeric);
            eprintln!("embedding {}: W against central differences: relative error {e:.1e}", e2_name(k));
            assert!(e < 1e-5, "{e}");
        }
        // Token 2 never occurs: its gradient row is exactly zero.
        assert!(grads[0].row(2).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn bad_ids_and_shapes_are_errors() {
        let e = Embedding::new(5, 4, 2, Stream::new(&[2])).unwrap();
        let ctx = Ctx::new(1, 0, 0, 0);
        let err = |x: Tensor| Layer::forward(&e, x, &ctx).unwrap_err().to_string();
        assert!(err(ids(&[1, 5])).contains("row 1 holds 5, not a token id in 0..5"));
        assert!(err(Tensor::new(2, 1, vec![0.5, 1.0]).unwrap()).contains("row 0 holds 0.5"));
        assert!(err(ids(&[1, 2, 3])).contains("whole sequences of 2 rows"));
        assert!(err(Tensor::zeros(2, 3)).contains("one token id per row"));
        assert!(err(ids(&[1, 5])).contains("embedding"), "the error names the layer");
        assert!(Embedding::new(0, 4, 2, Stream::new(&[2])).is_err());
    }
}
