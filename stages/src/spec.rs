//! `ModelSpec`: the model as data — an ordered list of layer specs (`layer_spec.rs`; a built-in
//! preset, `presets.rs`, or a model file, `model_file.rs`) — validated, and counted from shapes
//! alone.
//!
//! The layers are stored as runs of identical layers ([`Run`]: a layer and how many times it
//! repeats), so sums over any range of layers take time in the number of runs, not of layers
//! ([`ModelSpec::sum_over`]), and a model of a million blocks is counted without listing them.
//! Two shorthands (`presets.rs`) build the lists of the usual models: [`Mlp`] (the residual MLP:
//! `Linear(input → hidden)`, `blocks` residual MLP blocks, `LayerNorm`, `Linear(hidden → output)`)
//! and [`Gpt`] (token and position embedding, `layers` × (attention, MLP block), `LayerNorm`, the
//! LM head over the vocabulary).
//!
//! Rows: a model whose layers see sequences (an embedding, attention) runs on micro-batches of
//! `batch` sequences of `seq` tokens, `batch·seq` rows ([`ModelSpec::rows`]); any other model on
//! `batch` rows.
//!
//! Invariants: the byte counts of a [`LayerSpec`] are those of the tensors the built [`Layer`]
//! keeps (tests in `stage.rs` compare them after every op); every size of a validated spec at its
//! own batch fits in 64 bits (`validate` counts them with checked arithmetic); and a layer's
//! parameters depend only on `(seed, global layer index)`, never on the partition.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::corpus::Corpus;
use crate::error::{Error, Result};
pub use crate::layer_spec::LayerSpec;
use crate::lora::Lora;
use crate::loss::LossKind;
use crate::model_states::ParamCount;
use crate::precision::Precision;
pub use crate::presets::{Gpt, Mlp};

/// A model: its layers, its loss and its default micro-batch. Serialised as a model file
/// (`model_file.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "crate::model_file::ModelFile", into = "crate::model_file::ModelFile")]
pub struct ModelSpec {
    /// A name for reports (`tiny`, `gpt-small`, ...).
    pub name: String,
    /// The layers, in order, as runs of identical layers.
    pub layers: Vec<Run>,
    /// Dropout rate of every layer that has dropout (the blocks' MLP output; attention's
    /// probabilities and output), in `[0, 1)`.
    pub dropout: f32,
    /// The loss.
    pub loss: LossKind,
    /// Default samples per micro-batch: rows, or sequences for a model of sequences.
    pub batch: usize,
    /// Seed of the initial parameters and of the dropout masks.
    pub seed: u64,
    /// Format of the matrix products' operands and results.
    pub precision: Precision,
    /// Fine-tuning through low-rank adapters, every other parameter frozen (`None`: train every
    /// parameter).
    pub lora: Option<Lora>,
}

/// A layer repeated `repeat` times in a row (a model file writes it as the layer's fields plus
/// `repeat`, default 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The layer.
    #[serde(flatten)]
    pub layer: LayerSpec,
    /// How many times it repeats.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeat: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Run {
    /// `layer` once.
    pub fn one(layer: LayerSpec) -> Run {
        Run { layer, repeat: 1 }
    }
}

/// A size check: what is counted, the fields it depends on, and the count (`None`: overflow).
type SizeCheck<'a> = (String, Vec<(&'a str, usize)>, Option<usize>);

impl ModelSpec {
    /// Width of the model input (1 for a model of token ids).
    pub fn input_width(&self) -> usize {
        self.layer(0).map_or(0, |l| l.input_width())
    }

    /// Width of the model output: classes, the vocabulary, or the regression width.
    pub fn output_width(&self) -> usize {
        self.num_layers().checked_sub(1).and_then(|i| self.layer(i)).map_or(0, |l| l.output_width())
    }

    /// Tokens per sequence: that of the layers that see sequences (validation makes them agree),
    /// 1 for a model of rows.
    pub fn seq(&self) -> usize {
        self.layers.iter().filter(|r| r.repeat > 0).find_map(|r| r.layer.seq()).unwrap_or(1)
    }

    /// Whether the model reads token ids (starts with an embedding), so its task is text.
    pub fn reads_tokens(&self) -> bool {
        matches!(self.layer(0), Some(LayerSpec::Embedding { .. }))
    }

    /// Rows of a micro-batch of `batch` samples: `batch·seq`; `None` on overflow.
    pub fn rows(&self, batch: usize) -> Option<usize> {
        batch.checked_mul(self.seq())
    }

    /// Scale of the initial output projection of each residual layer: `1/√(2·R)` for `R`
    /// residual layers (at least 1).
    pub(crate) fn residual_gain(&self) -> f32 {
        let residual = self.layers.iter().filter(|r| r.layer.is_residual()).map(|r| r.repeat).sum::<usize>();
        1.0 / (2.0 * residual.max(1) as f32).sqrt()
    }

    /// An error naming what no model can be built from: no layers, a layer with a zero size or
    /// heads that do not divide its width, widths that do not chain, an embedding anywhere but
    /// first, sequence lengths that disagree, a bad dropout rate, too few classes, a model of
    /// tokens whose head does not predict them, or sizes so large that counting their bytes
    /// would overflow 64 bits (checked here, so every later size computation of a validated spec
    /// at its own batch is exact).
    pub fn validate(&self) -> Result<()> {
        let name = &self.name;
        let err = |m: String| Err(Error::Spec(format!("{name}: {m}")));
        if self.num_layers() == 0 {
            return err("has no layers; give at least one".into());
        }
        if self.batch == 0 {
            return err("`batch` is 0; it must be at least 1".into());
        }
        let mut index = 0usize;
        let mut prev: Option<LayerSpec> = None;
        for run in self.layers.iter().filter(|r| r.repeat > 0) {
            let l = run.layer;
            l.check(index, name)?;
            if let Some(p) = prev {
                if p.output_width() != l.input_width() {
                    return err(format!(
                        "layer {} ({}) puts out width {}, but layer {index} ({}) takes width {}: widths must chain",
                        index - 1,
                        p.kind(),
                        p.output_width(),
                        l.kind(),
                        l.input_width()
                    ));
                }
            }
            if run.repeat > 1 && l.input_width() != l.output_width() {
                return err(format!(
                    "layer {index} ({}) repeats {} times but maps width {} to {}: only a layer that keeps its width can repeat",
                    l.kind(),
                    run.repeat,
                    l.input_width(),
                    l.output_width()
                ));
            }
            if matches!(l, LayerSpec::Embedding { .. }) && (index > 0 || run.repeat > 1) {
                return err(format!(
                    "layer {index} is an embedding: it reads token ids, so only the first layer can be one"
                ));
            }
            if let Some(s) = l.seq() {
                if s != self.seq() {
                    return err(format!(
                        "layer {index} ({}) has `seq` = {s} but an earlier layer has {}: every layer of sequences must have the same length",
                        l.kind(),
                        self.seq()
                    ));
                }
            }
            index = index.saturating_add(run.repeat);
            prev = Some(l);
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return err(format!("`dropout` is {}; it must be in [0, 1)", self.dropout));
        }
        let output = self.output_width();
        if self.loss == LossKind::CrossEntropy && output < 2 {
            return err(format!(
                "cross-entropy needs at least 2 classes, the last layer puts out {output}; use loss = \"mse\" for one output"
            ));
        }
        if let Some(LayerSpec::Embedding { vocab, .. }) = self.layer(0) {
            if vocab < Corpus::VOCAB {
                return err(format!(
                    "reads byte tokens, so its embedding needs a vocabulary of at least {}, not {vocab}",
                    Corpus::VOCAB
                ));
            }
            if self.loss != LossKind::CrossEntropy || output != vocab {
                return err(format!(
                    "reads tokens of a vocabulary of {vocab}, so it must end in a head of {vocab} outputs and loss = \"cross_entropy\" (it ends in {output}, loss {:?})",
                    self.loss
                ));
            }
        }
        self.check_sizes()?;
        match &self.lora {
            Some(lora) => lora.check(self),
            None => Ok(()),
        }
    }

    /// Refuses sizes whose byte counts overflow 64 bits, naming the layer or field involved.
    fn check_sizes(&self) -> Result<()> {
        let mut checks: Vec<SizeCheck> = Vec::new();
        let mut index = 0usize;
        for run in &self.layers {
            let l = run.layer;
            checks.push((format!("layer {index} ({})'s parameters", l.kind()), l.sizes(), l.checked_param_count()));
            checks.push((format!("layer {index} ({})'s bytes per row", l.kind()), l.sizes(), l.saved_per_row()));
            index = index.saturating_add(run.repeat);
        }
        let n = self.batch;
        let (i, o) = (self.input_width(), self.output_width());
        let repeats = self.layers.iter().map(|r| r.repeat).collect::<Vec<_>>();
        let most = repeats.iter().copied().max().unwrap_or(0);
        checks.extend([
            (
                "the number of layers".to_string(),
                vec![("repeat", most)],
                repeats.iter().try_fold(0usize, |t, &r| t.checked_add(r)),
            ),
            (
                "the model's bytes of parameters, gradients and two Adam moments (16 per parameter)".to_string(),
                vec![("repeat", most)],
                self.checked_param_count().and_then(|p| p.checked_mul(16)),
            ),
            (
                "the bytes one micro-batch keeps on a single stage".to_string(),
                vec![("batch", n), ("repeat", most), ("output", o)],
                self.rows(n).and_then(|rows| self.checked_rows_bytes(rows)),
            ),
            (
                "the teacher task's weights ((input + output) × 64 floats)".to_string(),
                vec![("input", i), ("output", o)],
                i.checked_add(o).and_then(|w| w.checked_mul(crate::task::TEACHER_WIDTH * 4)),
            ),
        ]);
        for (what, fields, value) in checks {
            if value.is_none() {
                return Err(self.overflow(&what, &fields));
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
        let loss = self.loss.saved_floats(1, self.output_width());
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

    /// The layer at global index `index`; `None` past the end.
    pub fn layer(&self, index: usize) -> Option<LayerSpec> {
        self.runs().find(|(run, _)| run.contains(&index)).map(|(_, layer)| layer)
    }

    /// The runs with the global indices they cover, in order.
    fn runs(&self) -> impl Iterator<Item = (Range<usize>, LayerSpec)> + '_ {
        self.layers.iter().scan(0usize, |start, run| {
            let begin = *start;
            *start = start.saturating_add(run.repeat);
            Some((begin..*start, run.layer))
        })
    }

    /// `Σ f(layer)` over the layers of `range` at positions `range.start + k·t` (every layer for
    /// `step = 1`), in time independent of the number of layers in a run; `None` if `f` or the
    /// sum overflows.
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

    /// The distinct runs' layers among `range`.
    pub fn kinds_in<'a>(&'a self, range: &'a Range<usize>) -> impl Iterator<Item = LayerSpec> + 'a {
        self.runs().filter(move |(run, _)| run.start.max(range.start) < run.end.min(range.end)).map(|(_, layer)| layer)
    }

    /// Every layer, in order (a list as long as the model: for counting, use
    /// [`sum_over`](ModelSpec::sum_over)).
    pub fn all_layers(&self) -> Vec<LayerSpec> {
        self.runs().flat_map(|(run, layer)| run.map(move |_| layer)).collect()
    }

    /// Number of layers (saturating; validation refuses the overflow).
    pub fn num_layers(&self) -> usize {
        self.layers.iter().fold(0usize, |t, r| t.saturating_add(r.repeat))
    }

    /// Total number of parameters; `None` if it does not fit in a `usize`.
    pub fn checked_param_count(&self) -> Option<usize> {
        self.sum_over(&(0..self.num_layers()), 1, LayerSpec::checked_param_count)
    }

    /// The parameters layers `range` train and hold frozen (under LoRA: the adapters and the
    /// rest); `None` on overflow.
    pub fn param_counts(&self, range: &Range<usize>) -> Option<ParamCount> {
        let count = |trained: bool| {
            self.sum_over(range, 1, |l| {
                let c = l.param_counts(self.lora.as_ref())?;
                usize::try_from(if trained { c.trained } else { c.frozen }).ok()
            })
        };
        Some(ParamCount { trained: count(true)? as u64, frozen: count(false)? as u64 })
    }

    /// Total number of parameters (saturating; a validated model never gets there).
    pub fn param_count(&self) -> usize {
        self.checked_param_count().unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `small` with its MLP shape changed by `f`.
    fn small_with(f: impl FnOnce(&mut Mlp)) -> ModelSpec {
        ModelSpec::small().with_mlp(f).unwrap()
    }

    #[test]
    fn presets_are_valid_and_counted() {
        for name in ModelSpec::PRESETS {
            let s = ModelSpec::preset(name).unwrap();
            s.validate().unwrap();
            assert_eq!(s.all_layers().len(), s.num_layers());
            assert_eq!(s.name, name);
        }
        let t = ModelSpec::tiny();
        // input 16·24+24, three blocks of 2·24 + 24·48+48 + 48·24+24, norm 2·24, head 24·5+5.
        assert_eq!(t.param_count(), 408 + 3 * 2424 + 48 + 125);
        assert_eq!(ModelSpec::small().param_count(), 4_246_288);
        assert_eq!(ModelSpec::medium().param_count(), 25_357_856);
        // Embedding (256 + 16)·32, two layers of attention 4·32² + 6·32 and block
        // 2·32·64 + 64 + 3·32, norm 64, head 32·256 + 256.
        let g = ModelSpec::gpt_tiny();
        assert_eq!(g.param_count(), 272 * 32 + 2 * (4288 + 4256) + 64 + 8448);
        assert_eq!(ModelSpec::gpt_small().param_count(), 867_328);
        assert_eq!(ModelSpec::gpt_medium().param_count(), 6_482_688);
        // Embedding (50257 + 1024)·1600; 48 layers of attention 4·1600² + 6·1600 and block
        // 2·1600·6400 + 6400 + 3·1600; norm 3200; head 1600·50257 + 50257.
        let xl = 51_281 * 1600 + 48 * (10_249_600 + 20_491_200) + 3200 + 1601 * 50_257;
        assert_eq!((ModelSpec::gpt2_xl().param_count(), xl), (1_638_072_657, 1_638_072_657));
        assert_eq!(
            (g.num_layers(), g.seq(), g.rows(g.batch), g.input_width(), g.output_width()),
            (7, 16, Some(32), 1, 256)
        );
        assert!(g.reads_tokens() && !t.reads_tokens());
        assert_eq!(t.mlp_shape(), Some(Mlp { input: 16, hidden: 24, ffn: 48, blocks: 3, output: 5 }));
        assert_eq!(g.mlp_shape(), None);
        assert_eq!((t.seq(), t.rows(8)), (1, Some(8)));
        assert!(ModelSpec::preset("huge").unwrap_err().to_string().contains("tiny, small, medium, gpt-tiny"));
    }

    #[test]
    fn layer_by_index_agrees_with_the_layer_list() {
        for m in [ModelSpec::tiny(), small_with(|s| s.blocks = 0), ModelSpec::gpt_tiny()] {
            let all = m.all_layers();
            for (i, l) in all.iter().enumerate() {
                assert_eq!(m.layer(i), Some(*l));
            }
            assert_eq!(m.layer(all.len()), None);
        }
    }

    #[test]
    fn sums_over_progressions_match_a_plain_loop() {
        for m in [ModelSpec::small(), ModelSpec::gpt_tiny()] {
            let all = m.all_layers();
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
            assert_eq!(m.sum_over(&(0..all.len()), 1, |_| Some(usize::MAX)), None, "overflow is None, not a panic");
        }
    }

    #[test]
    fn sizes_that_overflow_are_refused_with_the_field_named() {
        let e = small_with(|s| s.input = usize::MAX).validate().unwrap_err().to_string();
        assert!(e.contains("layer 0 (linear)'s parameters") && e.contains("`input` = 18446744073709551615"), "{e}");
        let e = small_with(|s| s.blocks = usize::MAX).validate().unwrap_err().to_string();
        assert!(e.contains("number of layers") && e.contains("`repeat` = 18446744073709551615"), "{e}");
        let e = ModelSpec { batch: usize::MAX / 2, ..ModelSpec::small() }.validate().unwrap_err().to_string();
        assert!(e.contains("one micro-batch") && e.contains("`batch` = 9223372036854775807 is far beyond"), "{e}");
        let e = ModelSpec { batch: usize::MAX / 2, ..ModelSpec::gpt_tiny() }.validate().unwrap_err().to_string();
        assert!(e.contains("one micro-batch"), "rows = batch·seq overflow: {e}");
        let e = small_with(|s| {
            s.hidden = 1 << 31;
            s.ffn = 1 << 31
        })
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("16 per parameter"), "{e}");
        let e = small_with(|s| {
            s.output = usize::MAX / 64;
            s.hidden = 1
        })
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("`output`"), "{e}");
        // Large but countable: valid here, and refused later by a memory budget, not by overflow.
        let big = small_with(|s| {
            s.hidden = 1_000_000;
            s.ffn = 1_000_000
        });
        big.validate().unwrap();
        // input 128·10⁶ + 10⁶, eight blocks of 2·10¹² + 10⁶ + 3·10⁶, norm 2·10⁶, head 16·10⁶ + 16.
        assert_eq!(big.param_count(), 129_000_000 + 8 * 2_000_004_000_000 + 2_000_000 + 16_000_016);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let msg = |m: ModelSpec| m.validate().unwrap_err().to_string();
        assert!(msg(ModelSpec { dropout: 1.0, ..ModelSpec::tiny() }).contains("`dropout` is 1"));
        assert!(msg(small_with(|s| s.hidden = 0)).contains("layer 0 (linear) has `output` = 0"));
        assert!(
            msg(ModelSpec::tiny().with_mlp(|s| s.output = 1).unwrap()).contains("2 classes"),
            "cross-entropy on one output"
        );
        assert!(msg(ModelSpec { layers: vec![], ..ModelSpec::tiny() }).contains("has no layers"));
        let mut g = ModelSpec::gpt_tiny();
        g.layers[1].layer = LayerSpec::Attention { width: 32, heads: 5, seq: 16 };
        assert!(msg(g).contains("layer 1 (attention) has 5 heads, which do not divide its width 32"));
        let mut g = ModelSpec::gpt_tiny();
        g.layers[2].layer = LayerSpec::Block { width: 30, ffn: 64 };
        let e = msg(g);
        assert!(e.contains("layer 1 (attention) puts out width 32, but layer 2 (block) takes width 30"), "{e}");
        let mut g = ModelSpec::gpt_tiny();
        g.layers[3].layer = LayerSpec::Attention { width: 32, heads: 4, seq: 8 };
        assert!(msg(g).contains("layer 3 (attention) has `seq` = 8 but an earlier layer has 16"));
        let mut g = ModelSpec::gpt_tiny();
        g.layers.insert(1, Run::one(LayerSpec::Embedding { vocab: 256, width: 32, seq: 16 }));
        assert!(msg(g).contains("puts out width 32, but layer 1 (embedding) takes width 1"));
        let mut g = ModelSpec::gpt_tiny();
        g.layers.last_mut().unwrap().layer = LayerSpec::Linear { input: 32, output: 100 };
        assert!(msg(g).contains("must end in a head of 256 outputs"));
        let mut g = ModelSpec::gpt_tiny();
        g.layers[0].layer = LayerSpec::Embedding { vocab: 64, width: 32, seq: 16 };
        g.layers.last_mut().unwrap().layer = LayerSpec::Linear { input: 32, output: 64 };
        assert!(msg(g).contains("needs a vocabulary of at least 256, not 64"));
        // A run repeated 0 times is no layer: its sequence length does not count.
        let mut t = ModelSpec::tiny();
        t.layers.insert(1, Run { layer: LayerSpec::Attention { width: 24, heads: 2, seq: 7 }, repeat: 0 });
        t.validate().unwrap();
        assert_eq!((t.seq(), t.num_layers()), (1, 6));
        let e = msg(ModelSpec {
            layers: vec![Run { layer: LayerSpec::Linear { input: 4, output: 5 }, repeat: 2 }],
            ..ModelSpec::tiny()
        });
        assert!(e.contains("repeats 2 times but maps width 4 to 5"), "{e}");
    }
}
