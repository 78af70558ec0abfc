//! `LayerSpec`: one layer of a model as shapes — its kind and sizes, its parameter count, the
//! floats it keeps per row under each recompute policy and between `I` and `W`, its checks, and
//! how it is built from the model's seed.
//!
//! Invariant: the byte counts here are those of the tensors the built [`Layer`] keeps (tests in
//! `stage.rs` compare them after every op). Adding a layer kind: its file in `layers/`, and its
//! variant here.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::{Attention, Block, Dropout, Embedding, Layer, LayerNorm, Linear, MixedPrecision};
use crate::rng::{tag, Stream};
use crate::spec::ModelSpec;

/// Scale of the initial weights of a language model's head (its last `Linear`).
const LM_HEAD_GAIN: f32 = 0.1;

/// One layer of a model, as shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// `Linear(input → output)`.
    Linear {
        /// Input width.
        input: usize,
        /// Output width.
        output: usize,
    },
    /// A residual MLP block `x + Dropout(Linear(GELU(Linear(LayerNorm(x)))))`.
    Block {
        /// Residual width.
        width: usize,
        /// Inner width.
        ffn: usize,
    },
    /// A layer norm.
    Norm {
        /// Width.
        width: usize,
    },
    /// Token embedding plus learned positions: token ids in, vectors of `width` out.
    Embedding {
        /// Number of token ids.
        vocab: usize,
        /// Output width.
        width: usize,
        /// Tokens per sequence (positions).
        seq: usize,
    },
    /// The pre-norm causal self-attention sub-layer with its residual.
    Attention {
        /// Residual width.
        width: usize,
        /// Heads (dividing the width).
        heads: usize,
        /// Tokens per sequence.
        seq: usize,
    },
}

impl LayerSpec {
    /// The name a model file gives the kind (`linear`, `block`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Block { .. } => "block",
            LayerSpec::Norm { .. } => "norm",
            LayerSpec::Embedding { .. } => "embedding",
            LayerSpec::Attention { .. } => "attention",
        }
    }

    /// Width of the layer's input (1 for an embedding: a token id).
    pub fn input_width(&self) -> usize {
        match *self {
            LayerSpec::Linear { input, .. } => input,
            LayerSpec::Embedding { .. } => 1,
            LayerSpec::Block { width, .. } | LayerSpec::Norm { width } | LayerSpec::Attention { width, .. } => width,
        }
    }

    /// Width of the layer's output.
    pub fn output_width(&self) -> usize {
        match *self {
            LayerSpec::Linear { output, .. } => output,
            LayerSpec::Block { width, .. }
            | LayerSpec::Norm { width }
            | LayerSpec::Attention { width, .. }
            | LayerSpec::Embedding { width, .. } => width,
        }
    }

    /// Tokens per sequence of a layer that sees sequences; `None` for a layer of rows.
    pub fn seq(&self) -> Option<usize> {
        match *self {
            LayerSpec::Embedding { seq, .. } | LayerSpec::Attention { seq, .. } => Some(seq),
            _ => None,
        }
    }

    /// The layer's size fields, as a model file names them.
    pub(crate) fn sizes(&self) -> Vec<(&'static str, usize)> {
        match *self {
            LayerSpec::Linear { input, output } => vec![("input", input), ("output", output)],
            LayerSpec::Block { width, ffn } => vec![("width", width), ("ffn", ffn)],
            LayerSpec::Norm { width } => vec![("width", width)],
            LayerSpec::Embedding { vocab, width, seq } => vec![("vocab", vocab), ("width", width), ("seq", seq)],
            LayerSpec::Attention { width, heads, seq } => vec![("width", width), ("heads", heads), ("seq", seq)],
        }
    }

    /// Whether the layer adds its input back (a residual layer: the initial output projection
    /// of each is scaled down with their number).
    pub(crate) fn is_residual(&self) -> bool {
        matches!(self, LayerSpec::Block { .. } | LayerSpec::Attention { .. })
    }

    /// Number of parameters; `None` if it does not fit in a `usize`.
    pub fn checked_param_count(&self) -> Option<usize> {
        match *self {
            LayerSpec::Linear { input, output } => input.checked_mul(output)?.checked_add(output),
            LayerSpec::Block { width: h, ffn: f } => {
                // 2h (norm) + hf + f (fc1) + fh + h (fc2).
                let hf = h.checked_mul(f)?;
                hf.checked_mul(2)?.checked_add(f)?.checked_add(h.checked_mul(3)?)
            }
            LayerSpec::Norm { width } => width.checked_mul(2),
            // vocab·w tokens, seq·w positions.
            LayerSpec::Embedding { vocab, width, seq } => vocab.checked_add(seq)?.checked_mul(width),
            // 2w (norm) + 3w² + 3w (qkv) + w² + w (out).
            LayerSpec::Attention { width: w, .. } => w.checked_mul(w)?.checked_mul(4)?.checked_add(w.checked_mul(6)?),
        }
    }

    /// Floats the forward keeps per row for the backward (policy `none`); `None` on overflow.
    pub fn saved_per_row(&self) -> Option<usize> {
        match *self {
            LayerSpec::Linear { input, .. } => Some(input),
            LayerSpec::Norm { width } => width.checked_add(1),
            // x̂ and y (h each), rstd (1), h and GELU(h) (f each).
            LayerSpec::Block { width: h, ffn: f } => h.checked_mul(2)?.checked_add(1)?.checked_add(f.checked_mul(2)?),
            // The token id.
            LayerSpec::Embedding { .. } => Some(1),
            // x̂, y, o (w each), rstd (1), qkv (3w), the probabilities (heads·seq).
            LayerSpec::Attention { width: w, heads, seq } => {
                w.checked_mul(6)?.checked_add(1)?.checked_add(heads.checked_mul(seq)?)
            }
        }
    }

    /// Floats the forward keeps per row under selective recompute: all of
    /// [`saved_per_row`](LayerSpec::saved_per_row) but attention's probabilities; `None` on
    /// overflow.
    pub fn selective_per_row(&self) -> Option<usize> {
        match *self {
            LayerSpec::Attention { width: w, .. } => w.checked_mul(6)?.checked_add(1),
            _ => self.saved_per_row(),
        }
    }

    /// Floats `I` keeps per row for `W`; `None` on overflow.
    pub fn w_per_row(&self) -> Option<usize> {
        match *self {
            LayerSpec::Linear { input, output } => input.checked_add(output),
            LayerSpec::Norm { width } => width.checked_mul(2),
            // x̂, dy, y, dz (h each), dh and a (f each).
            LayerSpec::Block { width: h, ffn: f } => h.checked_mul(4)?.checked_add(f.checked_mul(2)?),
            // The token id and dy.
            LayerSpec::Embedding { width, .. } => width.checked_add(1),
            // x̂, dy, y, o, dz (w each), dqkv (3w).
            LayerSpec::Attention { width, .. } => width.checked_mul(8),
        }
    }

    /// Number of parameters (saturating at `usize::MAX`; a validated model never gets there).
    pub fn param_count(&self) -> usize {
        self.checked_param_count().unwrap_or(usize::MAX)
    }

    /// An error naming layer `index` of `model` if a size is 0 or heads do not divide the width.
    pub(crate) fn check(&self, index: usize, model: &str) -> Result<()> {
        let bad = |why: String| Err(Error::Spec(format!("{model}: layer {index} ({}) {why}", self.kind())));
        if let Some((field, _)) = self.sizes().into_iter().find(|(_, v)| *v == 0) {
            return bad(format!("has `{field}` = 0; it must be at least 1"));
        }
        if let LayerSpec::Attention { width, heads, .. } = *self {
            if width % heads != 0 {
                return bad(format!(
                    "has {heads} heads, which do not divide its width {width}; use a head count that divides it"
                ));
            }
        }
        Ok(())
    }

    /// The layer at global index `index` of `model`, parameters drawn from the model's seed.
    pub(crate) fn build(&self, index: usize, model: &ModelSpec) -> Result<Box<dyn Layer>> {
        let layer = self.build_f32(index, model)?;
        Ok(match model.precision.storage() {
            Some(format) => Box::new(MixedPrecision::new(layer, format)?),
            None => layer,
        })
    }

    /// [`build`](LayerSpec::build) computing and storing in `f32` (products rounded as the
    /// model's precision says), frozen with its adapters under the model's LoRA.
    fn build_f32(&self, index: usize, model: &ModelSpec) -> Result<Box<dyn Layer>> {
        let stream = Stream::new(&[tag::INIT, model.seed, index as u64]);
        let dropout = Dropout { rate: model.dropout };
        let lora = model.lora.as_ref();
        // The adapter of this layer's map `k`, if the model's LoRA adapts it.
        let adapter = |k: usize| {
            let (target, input, output) = self.maps()[k];
            lora.and_then(|l| l.adapter(target, (input, output), model.seed, index))
        };
        Ok(match *self {
            LayerSpec::Linear { input, output } => {
                // A language model's head starts small, so its first predictions are near uniform
                // and its first loss near ln(vocab).
                let head = model.reads_tokens() && index + 1 == model.num_layers();
                let gain = if head { LM_HEAD_GAIN } else { 1.0 };
                let l = Linear::new(input, output, stream, gain).with_precision(model.precision);
                Box::new(if lora.is_some() { l.freeze(adapter(0))? } else { l })
            }
            LayerSpec::Norm { width } => {
                let l = LayerNorm::new(width);
                Box::new(if lora.is_some() { l.freeze() } else { l })
            }
            LayerSpec::Block { width, ffn } => {
                let gain = model.residual_gain();
                let l = Block::new(width, ffn, dropout, stream, gain).with_precision(model.precision);
                Box::new(if lora.is_some() { l.freeze(adapter(0), adapter(1))? } else { l })
            }
            LayerSpec::Embedding { vocab, width, seq } => {
                let l = Embedding::new(vocab, width, seq, stream)?;
                Box::new(if lora.is_some() { l.freeze() } else { l })
            }
            LayerSpec::Attention { width, heads, seq } => {
                let gain = model.residual_gain();
                let l = Attention::new(width, heads, seq, dropout, stream, gain)?.with_precision(model.precision);
                Box::new(if lora.is_some() { l.freeze(adapter(0), adapter(1))? } else { l })
            }
        })
    }
}
