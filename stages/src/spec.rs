//! `ModelSpec`: the model as data (read from TOML or JSON, or a built-in preset), and
//! `LayerSpec`: its layers, with parameter counts and byte counts computed from shapes alone.
//!
//! The model is `Linear(input → hidden)`, then `blocks` residual MLP blocks of width `hidden`
//! (inner width `ffn`), then a final `LayerNorm(hidden)` and a `Linear(hidden → output)` head,
//! then the loss: `blocks + 3` layers. Invariant: the byte counts of a [`LayerSpec`] are those of
//! the tensors the built [`Layer`] keeps (tests in `stage.rs` compare them after every op), and a
//! layer's parameters depend only on `(seed, global layer index)`, never on the partition.

use std::path::Path;

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

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        match *self {
            LayerSpec::Linear { input, output } => input * output + output,
            LayerSpec::Block { width: h, ffn: f } => 2 * h + (h * f + f) + (f * h + h),
            LayerSpec::Norm { width } => 2 * width,
        }
    }

    /// Floats the forward keeps for the backward of `batch` rows (policy `none`).
    pub fn saved_floats(&self, batch: usize) -> usize {
        match *self {
            LayerSpec::Linear { input, .. } => batch * input,
            LayerSpec::Norm { width } => batch * width + batch,
            LayerSpec::Block { width: h, ffn: f } => batch * (2 * h + 1 + 2 * f),
        }
    }

    /// Floats `I` keeps for `W`, for `batch` rows.
    pub fn w_floats(&self, batch: usize) -> usize {
        match *self {
            LayerSpec::Linear { input, output } => batch * (input + output),
            LayerSpec::Norm { width } => 2 * batch * width,
            LayerSpec::Block { width: h, ffn: f } => batch * (4 * h + 2 * f),
        }
    }

    /// The layer at global index `index` of `model`, parameters drawn from the model's seed.
    pub(crate) fn build(&self, index: usize, model: &ModelSpec) -> Layer {
        let stream = Stream::new(&[tag::INIT, model.seed, index as u64]);
        match *self {
            LayerSpec::Linear { input, output } => {
                Layer::Linear(Linear::new(input, output, stream, 1.0).with_precision(model.precision))
            }
            LayerSpec::Norm { width } => Layer::Norm(LayerNorm::new(width)),
            LayerSpec::Block { width, ffn } => {
                let gain = 1.0 / (2.0 * model.blocks.max(1) as f32).sqrt();
                let dropout = Dropout { rate: model.dropout, layer: index };
                Layer::Block(Block::new(width, ffn, dropout, stream, gain).with_precision(model.precision))
            }
        }
    }
}

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

    /// An error naming the first field that no model can be built from.
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
        Ok(())
    }

    /// The layers, in order.
    pub fn layers(&self) -> Vec<LayerSpec> {
        let mut v = vec![LayerSpec::Linear { input: self.input, output: self.hidden }];
        v.extend((0..self.blocks).map(|_| LayerSpec::Block { width: self.hidden, ffn: self.ffn }));
        v.push(LayerSpec::Norm { width: self.hidden });
        v.push(LayerSpec::Linear { input: self.hidden, output: self.output });
        v
    }

    /// Number of layers, `blocks + 3`.
    pub fn num_layers(&self) -> usize {
        self.blocks + 3
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        self.layers().iter().map(LayerSpec::param_count).sum()
    }

    /// Reads a spec from TOML and validates it.
    pub fn from_toml(text: &str) -> Result<ModelSpec> {
        let spec: ModelSpec = toml::from_str(text).map_err(|e| Error::Spec(format!("TOML: {e}{}", FIELDS)))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a spec from JSON and validates it.
    pub fn from_json(text: &str) -> Result<ModelSpec> {
        let spec: ModelSpec = serde_json::from_str(text).map_err(|e| Error::Spec(format!("JSON: {e}{}", FIELDS)))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a spec from a `.toml` or `.json` file, or names a preset (`small`).
    pub fn load(path_or_preset: &str) -> Result<ModelSpec> {
        if ModelSpec::PRESETS.contains(&path_or_preset) {
            return ModelSpec::preset(path_or_preset);
        }
        let path = Path::new(path_or_preset);
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Spec(format!(
                "cannot read {path_or_preset:?}: {e}; give a .toml or .json file or a preset ({})",
                ModelSpec::PRESETS.join(", ")
            ))
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => ModelSpec::from_json(&text),
            _ => ModelSpec::from_toml(&text),
        }
    }

    /// The spec as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a model spec always serialises to TOML")
    }

    /// The spec as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model spec always serialises to JSON")
    }
}

const FIELDS: &str = ". A model spec has `input`, `hidden`, `ffn`, `blocks`, `output`, `loss` (\"cross_entropy\" or \"mse\"), `batch`, and optionally `name`, `dropout`, `seed`";

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
        assert!(ModelSpec::preset("huge").unwrap_err().to_string().contains("tiny, small, medium"));
    }

    #[test]
    fn toml_and_json_round_trip() {
        for s in
            [ModelSpec::tiny(), ModelSpec::small(), ModelSpec { loss: LossKind::Mse, output: 1, ..ModelSpec::medium() }]
        {
            assert_eq!(ModelSpec::from_toml(&s.to_toml()).unwrap(), s);
            assert_eq!(ModelSpec::from_json(&s.to_json()).unwrap(), s);
        }
        let hand = "input = 8\nhidden = 16\nffn = 32\nblocks = 2\noutput = 3\nloss = \"cross_entropy\"\nbatch = 4\n";
        let s = ModelSpec::from_toml(hand).unwrap();
        assert_eq!((s.name.as_str(), s.dropout, s.seed), ("custom", 0.0, 0));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let e = ModelSpec::from_toml("input = 8\nhidden = 16\n").unwrap_err().to_string();
        assert!(e.contains("missing field") && e.contains("`ffn`"), "{e}");
        let e =
            ModelSpec::from_json(r#"{"input":8,"hidden":16,"ffn":32,"blocks":2,"output":3,"loss":"hinge","batch":4}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("hinge"), "{e}");
        let e = ModelSpec { dropout: 1.0, ..ModelSpec::tiny() }.validate().unwrap_err().to_string();
        assert!(e.contains("`dropout` is 1"), "{e}");
        let e = ModelSpec { hidden: 0, ..ModelSpec::tiny() }.validate().unwrap_err().to_string();
        assert!(e.contains("`hidden` is 0"), "{e}");
        let e = ModelSpec { output: 1, ..ModelSpec::tiny() }.validate().unwrap_err().to_string();
        assert!(e.contains("mse"), "{e}");
        let e = ModelSpec::from_toml(&(ModelSpec::tiny().to_toml() + "colour = 3\n")).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        assert!(ModelSpec::load("/nonexistent/model.toml").unwrap_err().to_string().contains("cannot read"));
    }
}
