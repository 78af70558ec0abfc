//! `ModelSpec`: the model as data (a built-in preset, or a model file: `model_file.rs`), and
//! `LayerSpec`: its layers, with parameter counts and byte counts computed from shapes alone.
//!
//! The model is `Linear(input → hidden)`, then `blocks` residual MLP blocks of width `hidden`
//! (inner width `ffn`), then a final `LayerNorm(hidden)` and a `Linear(hidden → output)` head,
//! then the loss: `blocks + 3` layers — four runs of identical layers, so sums over any range of
//! layers take constant time ([`ModelSpec::sum_over`]) and nothing that counts needs a list of
//! them. Invariants: the byte counts of a [`LayerSpec`] are those of the tensors the built
//! [`Layer`] keeps (tests in `stage.rs` compare them after every op); every size of a validated
//! spec at its own batch fits in 64 bits (`validate` counts them with checked arithmetic); and a
//! layer's parameters depend only on `(seed, global layer index)`, never on the partition.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layers::{Block, Dropout, Layer, LayerNorm, Linear};
use crate::loss::LossKind;
use crate::precision::Precision;
use crate::rng::{tag, Stream};

/// A residual-MLP model and its default micro-batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A name for reports (`tiny`, `small`, ...).
    #[serde(default = "custom")]
    pub name: String,
    /// Width of the model input.
    pub input: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Inner width of each block's MLP.
    pub ffn: usize,
    /// Number of residual blocks.
    pub blocks: usize,
    /// Dropout rate at the end of each block's MLP, in `[0, 1)`.
    #[serde(default)]
    pub dropout: f32,
    /// Classes (cross-entropy) or regression width (MSE).
    pub output: usize,
    /// The loss.
    pub loss: LossKind,
    /// Default rows per micro-batch.
    pub batch: usize,
    /// Seed of the initial parameters and of the dropout masks.
    #[serde(default)]
    pub seed: u64,
    /// Format of the matrix products' operands and results (`f32` unless given).
    #[serde(default)]
    pub precision: Precision,
}

fn custom() -> String {
    "custom".into()
}

/// One layer of a model, as shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerSpec {
    /// `Linear(input → output)`.
    Linear {
        /// Input width.
        input: usize,
        /// Output width.
        output: usize,
    },
    /// A residual MLP block.
    Block {
        /// Residual width.
        width: usize,
        /// Inner width.
        ffn: usize,
    },
    /// The final layer norm.
    Norm {
        /// Width.
        width: usize,
    },
}

impl LayerSpec {
    /// Width of the layer's input.
    pub fn input_width(&self) -> usize {
        match *self {
            LayerSpec::Linear { input, .. } => input,
            LayerSpec::Block { width, .. } | LayerSpec::Norm { width } => width,
        }
    }

    /// Width of the layer's output.
    pub fn output_width(&self) -> usize {
        match *self {
            LayerSpec::Linear { output, .. } => output,
            LayerSpec::Block { width, .. } | LayerSpec::Norm { width } => width,
        }
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
        }
    }

    /// Floats the forward keeps per row for the backward (policy `none`); `None` on overflow.
    pub fn saved_per_row(&self) -> Option<usize> {
        match *self {
            LayerSpec::Linear { input, .. } => Some(input),
            LayerSpec::Norm { width } => width.checked_add(1),
            // x̂ and y (h each), rstd (1), h and GELU(h) (f each).
            LayerSpec::Block { width: h, ffn: f } => h.checked_mul(2)?.checked_add(1)?.checked_add(f.checked_mul(2)?),
        }
    }

    /// Floats `I` keeps per row for `W`; `None` on overflow.
    pub fn w_per_row(&self) -> Option<usize> {
        match *self {
            LayerSpec::Linear { input, output } => input.checked_add(output),
            LayerSpec::Norm { width } => width.checked_mul(2),
            // x̂, dy, y, dz (h each), dh and a (f each).
            LayerSpec::Block { width: h, ffn: f } => h.checked_mul(4)?.checked_add(f.checked_mul(2)?),
        }
    }

    /// Number of parameters (saturating at `usize::MAX`; a validated model never gets there).
    pub fn param_count(&self) -> usize {
        self.checked_param_count().unwrap_or(usize::MAX)
    }

    /// Floats the forward keeps for the backward of `batch` rows (policy `none`), saturating.
    pub fn saved_floats(&self, batch: usize) -> usize {
        self.saved_per_row().and_then(|r| r.checked_mul(batch)).unwrap_or(usize::MAX)
    }

    /// Floats `I` keeps for `W`, for `batch` rows, saturating.
    pub fn w_floats(&self, batch: usize) -> usize {
        self.w_per_row().and_then(|r| r.checked_mul(batch)).unwrap_or(usize::MAX)
    }

    /// The layer at global index `index` of `model`, parameters drawn from the model's seed.
    pub(crate) fn build(&self, index: usize, model: &ModelSpec) -> Box<dyn Layer> {
        let stream = Stream::new(&[tag::INIT, model.seed, index as u64]);
        match *self {
            LayerSpec::Linear { input, output } => {
                Box::new(Linear::new(input, output, stream, 1.0).with_precision(model.precision))
            }
            LayerSpec::Norm { width } => Box::new(LayerNorm::new(width)),
            LayerSpec::Block { width, ffn } => {
                let gain = 1.0 / (2.0 * model.blocks.max(1) as f32).sqrt();
                let dropout = Dropout { rate: model.dropout };
                Box::new(Block::new(width, ffn, dropout, stream, gain).with_precision(model.precision))
            }
        }
    }
}

/// A size check: what is counted, the fields it depends on, and the count (`None`: overflow).
type SizeCheck<'a> = (&'a str, &'a [(&'a str, usize)], Option<usize>);

impl ModelSpec {
    /// Names of the built-in presets.
    pub const PRESETS: [&'static str; 3] = ["tiny", "small", "medium"];

    /// For tests: small enough to run many steps in a debug build.
    pub fn tiny() -> ModelSpec {
        ModelSpec {
            name: "tiny".into(),
            input: 16,
            hidden: 24,
            ffn: 48,
            blocks: 3,
            dropout: 0.1,
            output: 5,
            loss: LossKind::CrossEntropy,
            batch: 8,
            seed: 1,
            precision: Precision::F32,
        }
    }

    /// The benchmark default: one step of 8 micro-batches takes a fraction of a second on one core.
    pub fn small() -> ModelSpec {
        ModelSpec {
            name: "small".into(),
            input: 128,
            hidden: 256,
            ffn: 1024,
            blocks: 8,
            dropout: 0.1,
            output: 16,
            loss: LossKind::Mse,
            batch: 128,
            seed: 1,
            precision: Precision::F32,
        }
    }

    /// Bigger: about six times the parameters of `small`.
    pub fn medium() -> ModelSpec {
        ModelSpec {
            name: "medium".into(),
            input: 256,
            hidden: 512,
            ffn: 2048,
            blocks: 12,
            dropout: 0.1,
            output: 32,
            loss: LossKind::Mse,
            batch: 128,
            seed: 1,
            precision: Precision::F32,
        }
    }

    /// The preset called `name`.
    pub fn preset(name: &str) -> Result<ModelSpec> {
        match name {
            "tiny" => Ok(ModelSpec::tiny()),
            "small" => Ok(ModelSpec::small()),
            "medium" => Ok(ModelSpec::medium()),
            _ => {
                Err(Error::Spec(format!("no preset named {name:?}; the presets are {}", ModelSpec::PRESETS.join(", "))))
            }
        }
    }

    /// An error naming the first field that no model can be built from: a zero width, a bad
    /// dropout rate, too few classes, or sizes so large that counting their bytes would overflow
    /// 64 bits (checked here, so every later size computation of a validated spec at its own
    /// batch is exact).
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("input", self.input),
            ("hidden", self.hidden),
            ("ffn", self.ffn),
            ("output", self.output),
            ("batch", self.batch),
        ] {
            if v == 0 {
                return Err(Error::Spec(format!("{}: `{field}` is 0; it must be at least 1", self.name)));
            }
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(Error::Spec(format!("{}: `dropout` is {}; it must be in [0, 1)", self.name, self.dropout)));
        }
        if self.loss == LossKind::CrossEntropy && self.output < 2 {
            return Err(Error::Spec(format!(
                "{}: cross-entropy needs at least 2 classes, `output` is {}; use loss = \"mse\" for one output",
                self.name, self.output
            )));
        }
        self.check_sizes()
    }

    /// Refuses sizes whose byte counts overflow 64 bits, naming the fields involved.
    fn check_sizes(&self) -> Result<()> {
        let (i, h, f, b, o, n) = (self.input, self.hidden, self.ffn, self.blocks, self.output, self.batch);
        let input = LayerSpec::Linear { input: i, output: h };
        let block = LayerSpec::Block { width: h, ffn: f };
        let head = LayerSpec::Linear { input: h, output: o };
        let checks: [SizeCheck; 7] = [
            (
                "the input layer's parameters (input × hidden)",
                &[("input", i), ("hidden", h)],
                input.checked_param_count(),
            ),
            ("a block's parameters (hidden × ffn)", &[("hidden", h), ("ffn", f)], block.checked_param_count()),
            ("the head's parameters (hidden × output)", &[("hidden", h), ("output", o)], head.checked_param_count()),
            ("the number of layers (blocks + 3)", &[("blocks", b)], b.checked_add(3)),
            (
                "the model's bytes of parameters, gradients and two Adam moments (16 per parameter)",
                &[("blocks", b), ("hidden", h), ("ffn", f), ("input", i), ("output", o)],
                self.checked_param_count().and_then(|p| p.checked_mul(16)),
            ),
            (
                "the bytes one micro-batch keeps on a single stage",
                &[("batch", n), ("blocks", b), ("hidden", h), ("ffn", f), ("input", i), ("output", o)],
                self.checked_rows_bytes(n),
            ),
            (
                "the teacher task's weights ((input + output) × 64 floats)",
                &[("input", i), ("output", o)],
                i.checked_add(o).and_then(|w| w.checked_mul(crate::task::TEACHER_WIDTH * 4)),
            ),
        ];
        for (what, fields, value) in checks {
            if value.is_none() {
                return Err(self.overflow(what, fields));
            }
        }
        Ok(())
    }

    /// Bytes every layer keeps for `rows` rows, under policy `none` and from `I` until `W`,
    /// added: a bound on any stage's bytes per micro-batch. `None` on overflow.
    fn checked_rows_bytes(&self, rows: usize) -> Option<usize> {
        let all = 0..self.num_layers();
        let kept = self.sum_over(&all, 1, LayerSpec::saved_per_row)?;
        let w = self.sum_over(&all, 1, LayerSpec::w_per_row)?;
        let loss = self.loss.saved_floats(1, self.output);
        kept.checked_add(w)?.checked_add(loss)?.checked_mul(rows)?.checked_mul(4)
    }

    fn overflow(&self, what: &str, fields: &[(&str, usize)]) -> Error {
        let list: Vec<String> = fields.iter().map(|(k, v)| format!("`{k}` = {v}")).collect();
        let (big, v) = fields.iter().copied().max_by_key(|&(_, v)| v).unwrap_or(("batch", self.batch));
        Error::Spec(format!(
            "{}: counting {what} overflows 64 bits ({}); `{big}` = {v} is far beyond what any machine could hold: make it smaller",
            self.name,
            list.join(", ")
        ))
    }

    /// The layer at global index `index`: `Linear(input → hidden)` at 0, blocks at `1..=blocks`,
    /// the norm, then the head; `None` past the end.
    pub fn layer(&self, index: usize) -> Option<LayerSpec> {
        self.runs().into_iter().find(|(run, _)| run.contains(&index)).map(|(_, layer)| layer)
    }

    /// The model as four runs of identical layers (the block run may be empty), in order.
    fn runs(&self) -> [(Range<usize>, LayerSpec); 4] {
        let b = self.blocks;
        [
            (0..1, LayerSpec::Linear { input: self.input, output: self.hidden }),
            (1..b.saturating_add(1), LayerSpec::Block { width: self.hidden, ffn: self.ffn }),
            (b.saturating_add(1)..b.saturating_add(2), LayerSpec::Norm { width: self.hidden }),
            (b.saturating_add(2)..b.saturating_add(3), LayerSpec::Linear { input: self.hidden, output: self.output }),
        ]
    }

    /// `Σ f(layer)` over the layers of `range` at positions `range.start + k·t` (every layer for
    /// `step = 1`), in time independent of the number of layers; `None` if `f` or the sum
    /// overflows.
    pub fn sum_over(
        &self,
        range: &Range<usize>,
        step: usize,
        f: impl Fn(&LayerSpec) -> Option<usize>,
    ) -> Option<usize> {
        let step = step.max(1);
        let mut total = 0usize;
        for (run, layer) in self.runs() {
            let (lo, hi) = (run.start.max(range.start), run.end.min(range.end));
            if lo >= hi {
                continue;
            }
            // The first position ≥ lo on the progression range.start + step·t.
            let first = range.start + (lo - range.start).div_ceil(step) * step;
            if first >= hi {
                continue;
            }
            let count = (hi - 1 - first) / step + 1;
            total = total.checked_add(count.checked_mul(f(&layer)?)?)?;
        }
        Some(total)
    }

    /// The distinct layers among `range` (at most four: the runs it meets).
    pub fn kinds_in<'a>(&'a self, range: &'a Range<usize>) -> impl Iterator<Item = LayerSpec> + 'a {
        self.runs()
            .into_iter()
            .filter(move |(run, _)| run.start.max(range.start) < run.end.min(range.end))
            .map(|(_, layer)| layer)
    }

    /// The layers, in order.
    pub fn layers(&self) -> Vec<LayerSpec> {
        self.runs().into_iter().flat_map(|(run, layer)| run.map(move |_| layer)).collect()
    }

    /// Number of layers, `blocks + 3` (saturating; validation refuses the overflow).
    pub fn num_layers(&self) -> usize {
        self.blocks.saturating_add(3)
    }

    /// Total number of parameters; `None` if it does not fit in a `usize`.
    pub fn checked_param_count(&self) -> Option<usize> {
        self.sum_over(&(0..self.num_layers()), 1, LayerSpec::checked_param_count)
    }

    /// Total number of parameters (saturating; a validated model never gets there).
    pub fn param_count(&self) -> usize {
        self.checked_param_count().unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_counted() {
        for name in ModelSpec::PRESETS {
            let s = ModelSpec::preset(name).unwrap();
            s.validate().unwrap();
            assert_eq!(s.layers().len(), s.num_layers());
        }
        let t = ModelSpec::tiny();
        // input 16·24+24, three blocks of 2·24 + 24·48+48 + 48·24+24, norm 2·24, head 24·5+5.
        assert_eq!(t.param_count(), 408 + 3 * 2424 + 48 + 125);
        assert_eq!(ModelSpec::small().param_count(), 4_246_288);
        assert_eq!(ModelSpec::medium().param_count(), 25_357_856);
        assert!(ModelSpec::preset("huge").unwrap_err().to_string().contains("tiny, small, medium"));
    }

    #[test]
    fn layer_by_index_agrees_with_the_layer_list() {
        for m in [ModelSpec::tiny(), ModelSpec { blocks: 0, ..ModelSpec::small() }] {
            let all = m.layers();
            for (i, l) in all.iter().enumerate() {
                assert_eq!(m.layer(i), Some(*l));
            }
            assert_eq!(m.layer(all.len()), None);
        }
    }

    #[test]
    fn sums_over_progressions_match_a_plain_loop() {
        let m = ModelSpec::small(); // 11 layers: Linear, 8 blocks, Norm, Linear
        let all = m.layers();
        for start in 0..all.len() {
            for end in start + 1..=all.len() {
                for step in 1..=5 {
                    let want: usize =
                        (start..end).step_by(step).map(|i| all[i].input_width() + 10 * all[i].param_count()).sum();
                    let got = m.sum_over(&(start..end), step, |l| Some(l.input_width() + 10 * l.param_count()));
                    assert_eq!(got, Some(want), "{start}..{end} step {step}");
                }
            }
        }
        assert_eq!(m.sum_over(&(0..11), 1, |_| Some(usize::MAX)), None, "overflow is None, not a panic");
    }

    #[test]
    fn sizes_that_overflow_are_refused_with_the_field_named() {
        let e = ModelSpec { input: usize::MAX, ..ModelSpec::small() }.validate().unwrap_err().to_string();
        assert!(e.contains("input layer's parameters") && e.contains("`input` = 18446744073709551615"), "{e}");
        let e = ModelSpec { blocks: usize::MAX, ..ModelSpec::small() }.validate().unwrap_err().to_string();
        assert!(e.contains("number of layers") && e.contains("`blocks` = 18446744073709551615"), "{e}");
        let e = ModelSpec { batch: usize::MAX / 2, ..ModelSpec::small() }.validate().unwrap_err().to_string();
        assert!(e.contains("one micro-batch") && e.contains("`batch` = 9223372036854775807 is far beyond"), "{e}");
        let e = ModelSpec { hidden: 1 << 31, ffn: 1 << 31, blocks: 8, ..ModelSpec::small() }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("16 per parameter") && e.contains("`hidden` = 2147483648"), "{e}");
        let e = ModelSpec { output: usize::MAX / 64, hidden: 1, ..ModelSpec::small() }.validate().unwrap_err();
        assert!(e.to_string().contains("`output`"), "{e}");
        // Large but countable: valid here, and refused later by a memory budget, not by overflow.
        let big = ModelSpec { hidden: 1_000_000, ffn: 1_000_000, ..ModelSpec::small() };
        big.validate().unwrap();
        // input 128·10⁶ + 10⁶, eight blocks of 2·10¹² + 10⁶ + 3·10⁶, norm 2·10⁶, head 16·10⁶ + 16.
        assert_eq!(big.param_count(), 129_000_000 + 8 * 2_000_004_000_000 + 2_000_000 + 16_000_016);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let e = ModelSpec { dropout: 1.0, ..ModelSpec::tiny() }.validate().unwrap_err().to_string();
        assert!(e.contains("`dropout` is 1"), "{e}");
        let e = ModelSpec { hidden: 0, ..ModelSpec::tiny() }.validate().unwrap_err().to_string();
        assert!(e.contains("`hidden` is 0"), "{e}");
        let e = ModelSpec { output: 1, ..ModelSpec::tiny() }.validate().unwrap_err().to_string();
        assert!(e.contains("mse"), "{e}");
    }
}
