//! Model files: a [`ModelSpec`] written as TOML or JSON, the text that documents the format
//! ([`MODEL_FILE_HELP`]), and reading one with errors that name the file, the field, and the
//! fields there are.
//!
//! Invariant: [`MODEL_FIELDS`] lists exactly the fields `ModelSpec` (de)serialises, and
//! [`MODEL_FILE_HELP`] documents every one of them (both checked by the tests below), so the
//! help, the error messages and the parser cannot drift apart.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lora::Lora;
use crate::loss::LossKind;
use crate::precision::Precision;
use crate::spec::{Mlp, ModelSpec, Run};

/// Every field of a model file: its name, whether it must be given, and what it means. The
/// layers are given either as `layers` or by the five fields of the residual-MLP shorthand
/// (`input`, `hidden`, `ffn`, `blocks`, `output`), which are required when `layers` is absent.
pub const MODEL_FIELDS: [(&str, bool, &str); 13] = [
    ("name", false, "a name for reports (default \"custom\")"),
    ("layers", false, "the layers, in order (instead of the shorthand fields)"),
    ("input", false, "shorthand: width of the model input"),
    ("hidden", false, "shorthand: width of the residual stream"),
    ("ffn", false, "shorthand: inner width of each block's MLP"),
    ("blocks", false, "shorthand: number of residual blocks"),
    ("output", false, "shorthand: classes (cross_entropy) or regression width (mse)"),
    ("dropout", false, "dropout rate of the blocks and attention layers, in [0, 1) (default 0)"),
    ("loss", true, "\"cross_entropy\" or \"mse\""),
    ("batch", true, "samples per micro-batch: rows, or sequences for a model of sequences"),
    ("seed", false, "seed of the initial parameters and dropout masks (default 0)"),
    ("precision", false, "\"f32\", \"bf16\", \"f16\" (format of the matrix products), \"mixed-bf16\" or \"mixed-f16\" (mixed-precision training: 16-bit storage, f32 master weights; default \"f32\")"),
    ("lora", false, "a table `rank`, `alpha` (default rank), `targets` (of qkv, out, fc1, fc2, linear; default the first four): train low-rank adapters on those maps, every other parameter frozen"),
];

/// A model file as read and written: the layer list or the residual-MLP shorthand, and the
/// rest. Converted to and from [`ModelSpec`] (which always holds the list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelFile {
    #[serde(default = "custom")]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layers: Option<Vec<Run>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hidden: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ffn: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blocks: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<usize>,
    #[serde(default)]
    dropout: f32,
    loss: LossKind,
    batch: usize,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    precision: Precision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lora: Option<Lora>,
}

fn custom() -> String {
    "custom".into()
}

impl TryFrom<ModelFile> for ModelSpec {
    type Error = String;

    fn try_from(f: ModelFile) -> std::result::Result<ModelSpec, String> {
        let shorthand =
            [("input", f.input), ("hidden", f.hidden), ("ffn", f.ffn), ("blocks", f.blocks), ("output", f.output)];
        let layers = match f.layers {
            Some(layers) => {
                if let Some((field, _)) = shorthand.iter().find(|(_, v)| v.is_some()) {
                    return Err(format!(
                        "`layers` and the shorthand field `{field}` are both given: give the layer list, or the five shorthand fields input, hidden, ffn, blocks, output"
                    ));
                }
                layers
            }
            None => {
                if let Some((field, _)) = shorthand.iter().find(|(_, v)| v.is_none()) {
                    return Err(format!(
                        "missing field `{field}`: give `layers`, or all five shorthand fields input, hidden, ffn, blocks, output"
                    ));
                }
                let get = |v: Option<usize>| v.unwrap_or_default();
                Mlp {
                    input: get(f.input),
                    hidden: get(f.hidden),
                    ffn: get(f.ffn),
                    blocks: get(f.blocks),
                    output: get(f.output),
                }
                .runs()
            }
        };
        Ok(ModelSpec {
            name: f.name,
            layers,
            dropout: f.dropout,
            loss: f.loss,
            batch: f.batch,
            seed: f.seed,
            precision: f.precision,
            lora: f.lora,
        })
    }
}

impl From<ModelSpec> for ModelFile {
    fn from(m: ModelSpec) -> ModelFile {
        ModelFile {
            name: m.name,
            layers: Some(m.layers),
            input: None,
            hidden: None,
            ffn: None,
            blocks: None,
            output: None,
            dropout: m.dropout,
            loss: m.loss,
            batch: m.batch,
            seed: m.seed,
            precision: m.precision,
            lora: m.lora,
        }
    }
}

/// The example model file of the help, indented as it is shown there (TOML allows it): the
/// custom model that `models/wide.toml` also holds (a test keeps the two equal).
macro_rules! example {
    () => {
        "  name = \"wide\"
  input = 64
  hidden = 512
  ffn = 2048
  blocks = 4
  dropout = 0.1
  output = 10
  loss = \"cross_entropy\"
  batch = 32

"
    };
}

/// The example model file shown in [`MODEL_FILE_HELP`], as TOML.
pub const MODEL_FILE_EXAMPLE: &str = example!();

/// The model file format, for a command's `--help`.
pub const MODEL_FILE_HELP: &str = concat!(
    "\
A model file (.toml, or .json for JSON) describes the model pipesched trains: a list
of layers, which the stages split among themselves, then the loss. The layers are
given either as `layers`, a list of tables each with a `kind`, its sizes and an
optional `repeat` (default 1), or by the residual-MLP shorthand: Linear(input →
hidden), `blocks` residual blocks x + Dropout(Linear(GELU(Linear(LayerNorm(x)))))
of inner width `ffn`, LayerNorm(hidden), Linear(hidden → output).

Layer kinds (every size ≥ 1; each layer's input width is the previous one's output):
  linear     input, output: x·W + b
  block      width, ffn: the residual MLP block above
  norm       width: LayerNorm
  embedding  vocab, width, seq: token ids in, token plus position embeddings out;
             only as the first layer. A model that starts with one reads text
             (byte tokens: vocab 256) and must end in a head of vocab outputs
             with loss = \"cross_entropy\"
  attention  width, heads, seq: x + Dropout(Linear(causal multi-head
             self-attention(Linear_qkv(LayerNorm(x))))); heads divide the width;
             every seq of a model is the same

Required fields:
  loss       \"cross_entropy\" or \"mse\"
  batch      samples per micro-batch (≥ 1): rows, or sequences of seq tokens for
             a model with an embedding or attention; --batch replaces it
  layers     the layer list; or, instead, all five shorthand fields:
  input      width of the model input (≥ 1)
  hidden     width of the residual stream (≥ 1)
  ffn        inner width of each block's MLP (≥ 1)
  blocks     number of residual blocks (0 or more)
  output     classes for cross_entropy (≥ 2), or the regression width for mse (≥ 1)
Optional fields:
  name       a name for reports (default \"custom\")
  dropout    dropout rate of the blocks and attention layers, in [0, 1) (default 0)
  seed       seed of the initial parameters and dropout masks (default 0); --seed
             replaces it
  precision  \"f32\", \"bf16\" or \"f16\": format of the matrix products' operands and
             results, accumulated in f32; \"mixed-bf16\" or \"mixed-f16\": mixed-precision
             training, parameters, activations and gradients stored in 16 bits with f32
             master weights (default \"f32\"); --precision replaces it
  lora       fine-tune through LoRA adapters, every other parameter frozen: a table
             with `rank` (≥ 1), `alpha` (the update is scaled by alpha/rank; default
             rank) and `targets`, a list of the maps to adapt: \"qkv\", \"out\"
             (attention), \"fc1\", \"fc2\" (blocks), \"linear\" (linear layers)
             (default [\"qkv\", \"out\", \"fc1\", \"fc2\"]); --lora replaces it
  repeat     in a layer of `layers`: how many times it repeats in a row (default 1)

Example (TOML; the same keys make a JSON object):
",
    example!(),
    "A GPT over bytes, as a layer list (the gpt-* presets are written this way):
  loss = \"cross_entropy\"
  batch = 8
  [[layers]]
  kind = \"embedding\"
  vocab = 256
  width = 128
  seq = 64
  [[layers]]
  kind = \"attention\"
  width = 128
  heads = 4
  seq = 64
  [[layers]]
  kind = \"block\"
  width = 128
  ffn = 512
  [[layers]]
  kind = \"norm\"
  width = 128
  [[layers]]
  kind = \"linear\"
  input = 128
  output = 256

An unknown field is an error that lists these. Sizes are checked before anything is
allocated: a model whose bytes would overflow is refused with the field named."
);

/// The most bytes a model file may have: one is a few hundred.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The serialisation a model file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
}

impl ModelSpec {
    /// Reads a spec from TOML and validates it.
    pub fn from_toml(text: &str) -> Result<ModelSpec> {
        parse(text, Format::Toml).map_err(Error::Spec)
    }

    /// Reads a spec from JSON and validates it.
    pub fn from_json(text: &str) -> Result<ModelSpec> {
        parse(text, Format::Json).map_err(Error::Spec)
    }

    /// Reads a spec from a `.json` file, or from any other file as TOML, or names a preset
    /// (`small`). Errors name the file; a file of more than 1 MiB is refused unread.
    pub fn load(path_or_preset: &str) -> Result<ModelSpec> {
        if ModelSpec::PRESETS.contains(&path_or_preset) {
            return ModelSpec::preset(path_or_preset);
        }
        let path = Path::new(path_or_preset);
        // Read at most one byte past the limit: a file that never ends (/dev/zero) is refused, not
        // read until memory runs out.
        let mut text = String::new();
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)).map_err(|e| {
            Error::Spec(format!(
                "cannot read {path_or_preset:?}: {e}; give a .toml or .json model file or a preset ({})",
                ModelSpec::PRESETS.join(", ")
            ))
        })?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(Error::Spec(format!(
                "{path_or_preset}: more than {MAX_FILE_BYTES} bytes, which no model file is (one is a few hundred bytes of TOML or JSON); give a model file, see --help for the format"
            )));
        }
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Toml,
        };
        parse(&text, format).map_err(|e| Error::Spec(format!("{path_or_preset}: {e}")))
    }

    /// The spec as TOML. TOML integers are signed 64-bit: a `seed` above 2⁶³ − 1 (which JSON
    /// holds) cannot be written, and is an error saying so.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| {
            let why = if self.seed > i64::MAX as u64 {
                format!("`seed` = {} is above TOML's largest integer, 2^63 − 1", self.seed)
            } else {
                e.to_string()
            };
            Error::Spec(format!(
                "{}: cannot be written as TOML: {why}; write it as JSON, or use a smaller seed",
                self.name
            ))
        })
    }

    /// The spec as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model spec always serialises to JSON")
    }
}

/// Parses and validates `text`; the message says what was wrong and lists the fields.
fn parse(text: &str, format: Format) -> std::result::Result<ModelSpec, String> {
    let keys = top_level_keys(text, format)?;
    if let Some(unknown) = keys.iter().find(|k| !MODEL_FIELDS.iter().any(|(f, _, _)| f == k)) {
        let hint = closest(unknown).map(|f| format!(" (did you mean `{f}`?)")).unwrap_or_default();
        return Err(format!("unknown field `{unknown}`{hint}; {}", field_list()));
    }
    let spec: ModelSpec = match format {
        Format::Toml => {
            toml::from_str(text).map_err(|e| format!("TOML: {}; {}", toml_error(text, &e), field_list()))?
        }
        Format::Json => serde_json::from_str(text).map_err(|e| format!("JSON: {e}; {}", field_list()))?,
    };
    spec.validate().map_err(|e| match e {
        Error::Spec(m) => m,
        other => other.to_string(),
    })?;
    Ok(spec)
}

/// The keys of the top-level table (TOML) or object (JSON).
fn top_level_keys(text: &str, format: Format) -> std::result::Result<Vec<String>, String> {
    match format {
        Format::Toml => {
            let table: toml::Table = toml::from_str(text).map_err(|e| format!("TOML: {}", toml_error(text, &e)))?;
            Ok(table.keys().cloned().collect())
        }
        Format::Json => match serde_json::from_str::<serde_json::Value>(text).map_err(|e| format!("JSON: {e}"))? {
            serde_json::Value::Object(map) => Ok(map.keys().cloned().collect()),
            _ => Err(format!("JSON: a model file holds one object; {}", field_list())),
        },
    }
}

/// `line L, column C: what` for a TOML error (just `what` when it has no position).
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what.to_string(),
    }
}

/// "the fields are input, hidden, … (required) and name, … (optional)".
fn field_list() -> String {
    let shorthand = |f: &(&str, bool, &str)| f.2.starts_with("shorthand:");
    let pick = |keep: &dyn Fn(&(&str, bool, &str)) -> bool| {
        MODEL_FIELDS.iter().filter(|f| keep(f)).map(|f| format!("`{}`", f.0)).collect::<Vec<_>>().join(", ")
    };
    format!(
        "a model file has the fields {} (required), `layers` or all of {} (the layers), and {} (optional)",
        pick(&|f| f.1),
        pick(&shorthand),
        pick(&|f| !f.1 && !shorthand(f) && f.0 != "layers")
    )
}

/// The known field nearest to `key` in edit distance, if it is a likely typo (distance ≤ 2).
fn closest(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    MODEL_FIELDS.iter().map(|f| (edit_distance(&key, f.0), f.0)).filter(|&(d, _)| d <= 2).min().map(|(_, f)| f)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::LossKind;

    #[test]
    fn the_field_table_is_what_serde_reads_and_the_help_documents() {
        let mut written: Vec<String> = Vec::new();
        for spec in [ModelSpec::small(), ModelSpec::gpt_small()] {
            let json: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap();
            written.extend(json.as_object().unwrap().keys().cloned());
        }
        for key in &written {
            assert!(MODEL_FIELDS.iter().any(|f| f.0 == key), "{key} is written but not in the table");
        }
        for (field, required, _) in MODEL_FIELDS {
            assert!(MODEL_FILE_HELP.contains(&format!("\n  {field} ")), "{field} is not documented");
            let json: serde_json::Value = serde_json::from_str(&ModelSpec::small().to_json()).unwrap();
            let without: serde_json::Map<_, _> =
                json.as_object().unwrap().clone().into_iter().filter(|(k, _)| k != field).collect();
            let parsed = ModelSpec::from_json(&serde_json::Value::Object(without).to_string());
            assert_eq!(parsed.is_err(), required || field == "layers", "{field}: required = {required}");
        }
        for kind in ["linear", "block", "norm", "embedding", "attention"] {
            assert!(MODEL_FILE_HELP.contains(&format!("\n  {kind} ")), "layer kind {kind} is not documented");
        }
    }

    #[test]
    fn the_shorthand_and_the_layer_list_are_the_same_model() {
        let hand = "input = 8\nhidden = 16\nffn = 32\nblocks = 2\noutput = 3\nloss = \"cross_entropy\"\nbatch = 4\n";
        let short = ModelSpec::from_toml(hand).unwrap();
        let list = ModelSpec::from_toml(&short.to_toml().unwrap()).unwrap();
        assert_eq!(short, list);
        assert!(short.to_toml().unwrap().contains("[[layers]]"));
        let e = ModelSpec::from_toml(&(short.to_toml().unwrap().replacen("[[layers]]", "input = 3\n[[layers]]", 1)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`layers` and the shorthand field `input` are both given"), "{e}");
        let e = ModelSpec::from_toml("loss = \"mse\"\nbatch = 2\n[[layers]]\nkind = \"conv\"\nwidth = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `conv`") && e.contains("`attention`"), "{e}");
        let e = ModelSpec::from_toml("loss = \"mse\"\nbatch = 2\n[[layers]]\nkind = \"norm\"\nwidth = 3\nheight = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `height`"), "{e}");
        let gpt = MODEL_FILE_HELP.split("presets are written this way):\n").nth(1).unwrap();
        let gpt = gpt.split("\n\n").next().unwrap();
        let spec = ModelSpec::from_toml(gpt).unwrap();
        assert_eq!((spec.num_layers(), spec.seq(), spec.output_width()), (5, 64, 256));
    }

    #[test]
    fn the_help_example_is_a_valid_model() {
        assert!(MODEL_FILE_HELP.contains(MODEL_FILE_EXAMPLE));
        let spec = ModelSpec::from_toml(MODEL_FILE_EXAMPLE).unwrap();
        let shape = spec.mlp_shape().unwrap();
        assert_eq!(
            (spec.name.as_str(), shape.hidden, shape.blocks, spec.loss),
            ("wide", 512, 4, LossKind::CrossEntropy)
        );
    }

    #[test]
    fn toml_and_json_round_trip() {
        for s in [
            ModelSpec::tiny(),
            ModelSpec::small(),
            ModelSpec { loss: LossKind::Mse, ..ModelSpec::medium().with_mlp(|s| s.output = 1).unwrap() },
            ModelSpec::gpt_small(),
        ] {
            assert_eq!(ModelSpec::from_toml(&s.to_toml().unwrap()).unwrap(), s);
            assert_eq!(ModelSpec::from_json(&s.to_json()).unwrap(), s);
        }
        let hand = "input = 8\nhidden = 16\nffn = 32\nblocks = 2\noutput = 3\nloss = \"cross_entropy\"\nbatch = 4\n";
        let s = ModelSpec::from_toml(hand).unwrap();
        assert_eq!((s.name.as_str(), s.dropout, s.seed), ("custom", 0.0, 0));
    }

    #[test]
    fn a_lora_table_reads_and_writes_and_is_checked() {
        let base = ModelSpec::gpt_tiny().to_toml().unwrap();
        let s = ModelSpec::from_toml(&format!("{base}\n[lora]\nrank = 4\ntargets = [\"qkv\", \"linear\"]\n")).unwrap();
        let lora = s.lora.clone().unwrap();
        assert_eq!((lora.rank, lora.alpha, lora.targets.len()), (4, None, 2));
        assert_eq!(ModelSpec::from_toml(&s.to_toml().unwrap()).unwrap(), s);
        let e = ModelSpec::from_toml(&format!("{base}\n[lora]\nrank = 0\n")).unwrap_err().to_string();
        assert!(e.contains("rank 0 adapts nothing"), "{e}");
        let e =
            ModelSpec::from_toml(&format!("{base}\n[lora]\nrank = 2\ntargets = [\"wq\"]\n")).unwrap_err().to_string();
        assert!(e.contains("wq"), "{e}");
    }

    #[test]
    fn bad_files_say_what_is_wrong_and_list_the_fields() {
        let e = ModelSpec::from_toml("input = 8\nhidden = 16\nloss = \"mse\"\nbatch = 2\n").unwrap_err().to_string();
        assert!(e.contains("missing field `ffn`") && e.contains("(required)"), "{e}");
        let e =
            ModelSpec::from_json(r#"{"input":8,"hidden":16,"ffn":32,"blocks":2,"output":3,"loss":"hinge","batch":4}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("hinge"), "{e}");
        let e = ModelSpec::from_toml(&("colour = 3\n".to_string() + &ModelSpec::tiny().to_toml().unwrap()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "model spec: unknown field `colour`; a model file has the fields `loss`, `batch` (required), `layers` or \
             all of `input`, `hidden`, `ffn`, `blocks`, `output` (the layers), and `name`, `dropout`, `seed`, \
             `precision`, `lora` (optional)"
        );
        let e = ModelSpec::from_json(r#"{"hiden": 3}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `hiden` (did you mean `hidden`?)"), "{e}");
        let e = ModelSpec::from_json("[1, 2]").unwrap_err().to_string();
        assert!(e.contains("one object"), "{e}");
        let e = ModelSpec::from_toml("input = ").unwrap_err().to_string();
        assert!(e.starts_with("model spec: TOML:"), "{e}");
        assert!(ModelSpec::load("/nonexistent/model.toml").unwrap_err().to_string().contains("cannot read"));
    }

    #[test]
    fn files_too_large_to_count_are_refused_not_a_panic() {
        let json = ModelSpec::small().to_json().replace("\"input\": 128", "\"input\": 18446744073709551615");
        let e = ModelSpec::from_json(&json).unwrap_err().to_string();
        assert!(e.contains("`input` = 18446744073709551615"), "{e}");
        let toml = ModelSpec::small().to_toml().unwrap().replace("input = 128", "input = 18446744073709551615");
        let e = ModelSpec::from_toml(&toml).unwrap_err().to_string();
        assert!(e.starts_with("model spec: TOML:"), "{e}");
    }

    #[test]
    fn a_seed_beyond_toml_integers_reads_from_json_and_is_refused_as_toml() {
        let json = ModelSpec::tiny().to_json().replace("\"seed\": 1", "\"seed\": 18446744073709551615");
        let spec = ModelSpec::from_json(&json).unwrap();
        assert_eq!(spec.seed, u64::MAX);
        let e = spec.to_toml().unwrap_err().to_string();
        assert_eq!(
            e,
            "model spec: tiny: cannot be written as TOML: `seed` = 18446744073709551615 is above TOML's largest \
             integer, 2^63 − 1; write it as JSON, or use a smaller seed"
        );
        let largest = ModelSpec { seed: i64::MAX as u64, ..spec };
        assert_eq!(ModelSpec::from_toml(&largest.to_toml().unwrap()).unwrap(), largest);
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("pipesched-model-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("typo.toml");
        std::fs::write(&path, MODEL_FILE_EXAMPLE.replace("ffn", "fnn")).unwrap();
        let e = ModelSpec::load(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains(&format!("{}: unknown field `fnn` (did you mean `ffn`?)", path.display())), "{e}");
        std::fs::write(&path, ModelSpec::tiny().to_toml().unwrap().replace("ffn", "fnn")).unwrap();
        let e = ModelSpec::load(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains(&format!("{}: TOML: line", path.display())) && e.contains("unknown field `fnn`"), "{e}");
        let big = dir.join("big.toml");
        std::fs::write(&big, "#".repeat(MAX_FILE_BYTES as usize + 1)).unwrap();
        let e = ModelSpec::load(big.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("big.toml: more than 1048576 bytes, which no model file is"), "{e}");
        if Path::new("/dev/zero").exists() {
            let e = ModelSpec::load("/dev/zero").unwrap_err().to_string();
            assert!(e.contains("/dev/zero: more than 1048576 bytes"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("hiden", "hidden"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("colour"), None);
    }
}
