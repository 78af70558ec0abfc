//! [`Chain`]: a sequence of layers as the checkpointing algorithms see it — per layer, the time
//! of its forward and of its backward, the bytes of its input, of what its backward needs
//! besides that input, and of the temporaries of each op — built by hand or from a
//! [`ModelSpec`].
//!
//! Invariant: a `Chain` has at least one layer, every time is finite and non-negative, and the
//! bytes of all its values together (every activation, every saved state, every temporary) fit
//! in a `u64`, so every peak the algorithms add up is exact.

use crate::error::{Error, Result};
use crate::spec::ModelSpec;

/// One layer of a [`Chain`]: `a_i → a_{i+1}` forward, `δ_{i+1} → δ_i` backward.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChainLayer {
    /// Time of the forward (`uf_i`), whichever of `F∅`, `Fck`, `Fall` runs it.
    pub forward: f64,
    /// Time of the backward (`ub_i`).
    pub backward: f64,
    /// Bytes of the layer's input `a_i` (and of its gradient `δ_i`).
    pub input_bytes: u64,
    /// Bytes `Fall` keeps for the backward besides the input (`ā_i`): the backward needs the
    /// input `a_i`, this and the output gradient `δ_{i+1}`.
    pub saved_bytes: u64,
    /// Bytes the forward allocates and frees while it runs, beyond its input and output.
    pub forward_overhead: u64,
    /// Bytes the backward allocates and frees while it runs, beyond what it reads and writes.
    pub backward_overhead: u64,
}

/// A chain of layers, with the bytes of its output (`a_L`, from which the loss gradient `δ_L`
/// is made in place).
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    layers: Vec<ChainLayer>,
    output_bytes: u64,
}

impl Chain {
    /// A chain of `layers` whose last output has `output_bytes` bytes; an error for an empty
    /// list, a time that is NaN, infinite or negative, or bytes whose sum overflows 64 bits.
    pub fn new(layers: Vec<ChainLayer>, output_bytes: u64) -> Result<Chain> {
        if layers.is_empty() {
            return Err(Error::Chain("a chain needs at least one layer; this one has none".into()));
        }
        for (i, l) in layers.iter().enumerate() {
            for (what, t) in [("forward", l.forward), ("backward", l.backward)] {
                if !t.is_finite() || t < 0.0 {
                    return Err(Error::Chain(format!(
                        "layer {i} has {what} time {t}; times must be finite and at least 0"
                    )));
                }
            }
        }
        let total = layers.iter().try_fold(output_bytes, |sum, l| {
            [l.input_bytes, l.saved_bytes, l.forward_overhead, l.backward_overhead]
                .into_iter()
                .try_fold(sum, u64::checked_add)
        });
        // Peaks count an activation at most three times (input, output, gradient), so a margin
        // of 4× keeps every sum the algorithms make exact.
        if total.and_then(|t| t.checked_mul(4)).is_none() {
            return Err(Error::Chain(
                "the bytes of the chain's values overflow 64 bits; give them in a larger unit".into(),
            ));
        }
        Ok(Chain { layers, output_bytes })
    }

    /// `n` copies of `layer` with an output as large as its input.
    pub fn uniform(layer: ChainLayer, n: usize) -> Result<Chain> {
        Chain::new(vec![layer; n], layer.input_bytes)
    }

    /// The chain of `model`'s layers at its own batch (`rows = batch·seq` rows, `f32`):
    /// `input_bytes` is the input width, `saved_bytes` what the layer keeps for its backward
    /// under policy `none` less the input (at least 0: the input is held separately in this
    /// model, so input and saved state together are what `none` keeps), and the last layer also
    /// keeps the loss's state. Times are FLOPs of the matrix products (forward: the layer's;
    /// backward: `I` and `W` together) — a proxy for time where nothing was measured; layers
    /// without products (norms, embeddings) cost 0. Overheads are 0.
    pub fn from_model(model: &ModelSpec) -> Result<Chain> {
        model.validate()?;
        let rows = model.rows(model.batch).ok_or_else(|| Error::Spec("rows overflow".into()))?;
        // A validated model's counts fit at its own batch; saturating keeps a bad one an error
        // (the overflow check of `Chain::new`) rather than a panic.
        let bytes = |floats: usize| (floats as u64).saturating_mul(rows as u64).saturating_mul(4);
        let n = model.num_layers();
        let mut layers = Vec::with_capacity(n);
        for (index, spec) in model.all_layers().into_iter().enumerate() {
            let built = spec.build(index, model)?;
            let maps: f64 = built.linear_maps().iter().map(|&(i, o)| 2.0 * rows as f64 * i as f64 * o as f64).sum();
            let [f, b] = built.activation_products(rows);
            let flops = |v: &[crate::GemmShape]| v.iter().map(crate::GemmShape::flops).sum::<f64>();
            let mut saved = spec.saved_per_row_in(model).unwrap_or(usize::MAX);
            if index + 1 == n {
                saved = saved.saturating_add(model.loss.saved_floats(1, spec.output_width()));
            }
            let input = bytes(spec.input_width());
            layers.push(ChainLayer {
                forward: maps + flops(&f),
                backward: 2.0 * maps + flops(&b),
                input_bytes: input,
                saved_bytes: bytes(saved).saturating_sub(input),
                forward_overhead: 0,
                backward_overhead: 0,
            });
        }
        Chain::new(layers, bytes(model.output_width()))
    }

    /// Number of layers `L`.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Always false: a chain has at least one layer.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[ChainLayer] {
        &self.layers
    }

    /// Layer `i`.
    pub fn layer(&self, i: usize) -> &ChainLayer {
        &self.layers[i]
    }

    /// Bytes of activation `a_i` for `i` in `0..=L` (`a_L` the chain's output).
    pub fn activation_bytes(&self, i: usize) -> u64 {
        if i == self.layers.len() {
            self.output_bytes
        } else {
            self.layers[i].input_bytes
        }
    }

    /// Time of one forward and one backward of every layer: the least any strategy can take.
    pub fn compute_time(&self) -> f64 {
        self.layers.iter().map(|l| l.forward + l.backward).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> ChainLayer {
        ChainLayer { forward: 1.0, backward: 2.0, input_bytes: 4, saved_bytes: 8, ..Default::default() }
    }

    #[test]
    fn bad_chains_are_clear_errors() {
        let e = Chain::new(vec![], 0).unwrap_err().to_string();
        assert!(e.contains("at least one layer"), "{e}");
        let e = Chain::new(vec![unit(), ChainLayer { backward: f64::NAN, ..unit() }], 4).unwrap_err().to_string();
        assert!(e.contains("layer 1 has backward time NaN"), "{e}");
        let e = Chain::new(vec![ChainLayer { forward: -1.0, ..unit() }], 4).unwrap_err().to_string();
        assert!(e.contains("layer 0 has forward time -1"), "{e}");
        let e = Chain::new(vec![ChainLayer { saved_bytes: u64::MAX / 2, ..unit() }], 4).unwrap_err().to_string();
        assert!(e.contains("overflow"), "{e}");
    }

    #[test]
    fn activations_run_from_input_to_output() {
        let c = Chain::new(vec![unit(), ChainLayer { input_bytes: 6, ..unit() }], 10).unwrap();
        assert_eq!((0..=2).map(|i| c.activation_bytes(i)).collect::<Vec<_>>(), vec![4, 6, 10]);
        assert_eq!((c.len(), c.compute_time()), (2, 6.0));
    }

    #[test]
    fn a_model_becomes_a_chain_of_its_layers() {
        let model = ModelSpec::tiny(); // Linear(16→24), 3 blocks (24, 48), norm, Linear(24→5); batch 8
        let c = Chain::from_model(&model).unwrap();
        assert_eq!(c.len(), 6);
        assert_eq!(c.activation_bytes(0), 4 * 8 * 16);
        assert_eq!(c.activation_bytes(6), 4 * 8 * 5);
        // The first linear keeps only its input: nothing besides it.
        assert_eq!(c.layer(0).saved_bytes, 0);
        assert_eq!(c.layer(0).forward, 2.0 * (8 * 16 * 24) as f64);
        assert_eq!(c.layer(0).backward, 2.0 * c.layer(0).forward);
        // A block keeps 2h + 1 + 2f floats per row; its input (h) is held apart.
        assert_eq!(c.layer(1).saved_bytes, 4 * 8 * (24 + 1 + 2 * 48));
        assert_eq!(c.layer(4).forward, 0.0, "a norm runs no matrix product");
    }
}
