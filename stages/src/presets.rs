//! The shorthands that build the usual layer lists — [`Mlp`] (the residual MLP) and [`Gpt`] —
//! and the built-in presets made of them.

use crate::error::{Error, Result};
use crate::layer_spec::LayerSpec;
use crate::loss::LossKind;
use crate::precision::Precision;
use crate::spec::{ModelSpec, Run};

/// The residual MLP as a shorthand: `Linear(input → hidden)`, `blocks` residual MLP blocks of
/// width `hidden` and inner width `ffn`, `LayerNorm(hidden)`, `Linear(hidden → output)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mlp {
    /// Width of the model input.
    pub input: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Inner width of each block's MLP.
    pub ffn: usize,
    /// Number of residual blocks.
    pub blocks: usize,
    /// Classes (cross-entropy) or regression width (MSE).
    pub output: usize,
}

impl Mlp {
    /// The layers: four runs (the block run may be empty).
    pub fn runs(&self) -> Vec<Run> {
        let (h, b) = (self.hidden, self.blocks);
        vec![
            Run::one(LayerSpec::Linear { input: self.input, output: h }),
            Run { layer: LayerSpec::Block { width: h, ffn: self.ffn }, repeat: b },
            Run::one(LayerSpec::Norm { width: h }),
            Run::one(LayerSpec::Linear { input: h, output: self.output }),
        ]
    }
}

/// A GPT as a shorthand: token and position embedding, `layers` transformer layers (each an
/// attention sub-layer then an MLP block of inner width `ffn`, two layers of the list), a final
/// `LayerNorm`, and the LM head `Linear(width → vocab)`, trained with token cross-entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gpt {
    /// Number of token ids (256: bytes).
    pub vocab: usize,
    /// Width of the residual stream.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// Inner width of the MLP blocks.
    pub ffn: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Tokens per sequence.
    pub seq: usize,
}

impl Gpt {
    /// The layers: `2·layers + 3` of them.
    pub fn runs(&self) -> Vec<Run> {
        let (w, seq) = (self.width, self.seq);
        let mut runs = vec![Run::one(LayerSpec::Embedding { vocab: self.vocab, width: w, seq })];
        for _ in 0..self.layers {
            runs.push(Run::one(LayerSpec::Attention { width: w, heads: self.heads, seq }));
            runs.push(Run::one(LayerSpec::Block { width: w, ffn: self.ffn }));
        }
        runs.push(Run::one(LayerSpec::Norm { width: w }));
        runs.push(Run::one(LayerSpec::Linear { input: w, output: self.vocab }));
        runs
    }
}

impl ModelSpec {
    /// Names of the built-in presets.
    pub const PRESETS: [&'static str; 7] =
        ["tiny", "small", "medium", "gpt-tiny", "gpt-small", "gpt-medium", "gpt2-xl"];

    /// A residual MLP (seed 0, no dropout, `f32`).
    pub fn mlp(name: &str, shape: Mlp, loss: LossKind, batch: usize) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            layers: shape.runs(),
            dropout: 0.0,
            loss,
            batch,
            seed: 0,
            precision: Precision::F32,
            lora: None,
        }
    }

    /// A GPT trained with token cross-entropy on `batch` sequences per micro-batch (seed 0, no
    /// dropout, `f32`).
    pub fn gpt(name: &str, shape: Gpt, batch: usize) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            layers: shape.runs(),
            dropout: 0.0,
            loss: LossKind::CrossEntropy,
            batch,
            seed: 0,
            precision: Precision::F32,
            lora: None,
        }
    }

    /// For tests: small enough to run many steps in a debug build.
    pub fn tiny() -> ModelSpec {
        let shape = Mlp { input: 16, hidden: 24, ffn: 48, blocks: 3, output: 5 };
        ModelSpec { dropout: 0.1, seed: 1, ..ModelSpec::mlp("tiny", shape, LossKind::CrossEntropy, 8) }
    }

    /// A residual MLP: one step of 8 micro-batches takes a fraction of a second on one core.
    pub fn small() -> ModelSpec {
        let shape = Mlp { input: 128, hidden: 256, ffn: 1024, blocks: 8, output: 16 };
        ModelSpec { dropout: 0.1, seed: 1, ..ModelSpec::mlp("small", shape, LossKind::Mse, 128) }
    }

    /// Bigger: about six times the parameters of `small`.
    pub fn medium() -> ModelSpec {
        let shape = Mlp { input: 256, hidden: 512, ffn: 2048, blocks: 12, output: 32 };
        ModelSpec { dropout: 0.1, seed: 1, ..ModelSpec::mlp("medium", shape, LossKind::Mse, 128) }
    }

    /// For tests: a two-layer GPT over bytes, sequences of 16.
    pub fn gpt_tiny() -> ModelSpec {
        let shape = Gpt { vocab: 256, width: 32, heads: 4, ffn: 64, layers: 2, seq: 16 };
        ModelSpec { dropout: 0.1, seed: 1, ..ModelSpec::gpt("gpt-tiny", shape, 2) }
    }

    /// A four-layer GPT over bytes, sequences of 64, 8 per micro-batch.
    pub fn gpt_small() -> ModelSpec {
        let shape = Gpt { vocab: 256, width: 128, heads: 4, ffn: 512, layers: 4, seq: 64 };
        ModelSpec { dropout: 0.1, seed: 1, ..ModelSpec::gpt("gpt-small", shape, 8) }
    }

    /// An eight-layer GPT over bytes, sequences of 128, 8 per micro-batch.
    pub fn gpt_medium() -> ModelSpec {
        let shape = Gpt { vocab: 256, width: 256, heads: 8, ffn: 1024, layers: 8, seq: 128 };
        ModelSpec { dropout: 0.1, seed: 1, ..ModelSpec::gpt("gpt-medium", shape, 8) }
    }

    /// GPT-2 XL's shape (Radford et al., 2019): 48 transformer layers of width 1,600 with 25
    /// heads and an MLP of 6,400, a vocabulary of 50,257 and 1,024 positions, one sequence per
    /// micro-batch; its LM head is its own (GPT-2 ties it to the token embedding), so it has
    /// 1,638,072,657 parameters. For `pipesched memory`: its model states alone are 26 GB.
    pub fn gpt2_xl() -> ModelSpec {
        let shape = Gpt { vocab: 50257, width: 1600, heads: 25, ffn: 6400, layers: 48, seq: 1024 };
        ModelSpec { dropout: 0.1, seed: 1, ..ModelSpec::gpt("gpt2-xl", shape, 1) }
    }

    /// The preset called `name`.
    pub fn preset(name: &str) -> Result<ModelSpec> {
        match name {
            "tiny" => Ok(ModelSpec::tiny()),
            "small" => Ok(ModelSpec::small()),
            "medium" => Ok(ModelSpec::medium()),
            "gpt-tiny" => Ok(ModelSpec::gpt_tiny()),
            "gpt-small" => Ok(ModelSpec::gpt_small()),
            "gpt-medium" => Ok(ModelSpec::gpt_medium()),
            "gpt2-xl" => Ok(ModelSpec::gpt2_xl()),
            _ => {
                Err(Error::Spec(format!("no preset named {name:?}; the presets are {}", ModelSpec::PRESETS.join(", "))))
            }
        }
    }

    /// The residual-MLP shorthand this model is, if it is one.
    pub fn mlp_shape(&self) -> Option<Mlp> {
        match self.layers.as_slice() {
            [Run { layer: LayerSpec::Linear { input, output: hidden }, repeat: 1 }, Run { layer: LayerSpec::Block { width, ffn }, repeat: blocks }, Run { layer: LayerSpec::Norm { width: norm }, repeat: 1 }, Run { layer: LayerSpec::Linear { input: head, output }, repeat: 1 }]
                if [*width, *norm, *head] == [*hidden; 3] =>
            {
                Some(Mlp { input: *input, hidden: *hidden, ffn: *ffn, blocks: *blocks, output: *output })
            }
            _ => None,
        }
    }

    /// This residual MLP with its shape changed by `change` (`None` if the model is not one).
    pub fn with_mlp(self, change: impl FnOnce(&mut Mlp)) -> Option<ModelSpec> {
        let mut shape = self.mlp_shape()?;
        change(&mut shape);
        Some(ModelSpec { layers: shape.runs(), ..self })
    }
}
