//! A file of named parameters, in the safetensors layout: what `pipesched run --save-params`
//! writes and `--init-params` reads, so a trained model can be trained further or evaluated.
//!
//! ```text
//!  ┌────────────┬──────────────────────────────────────┬───────────────────────────────┐
//!  │ N (8 bytes,│ N bytes of JSON, padded with spaces  │ the tensors' bytes, one after │
//!  │ LE u64)    │ to a multiple of 8                   │ another, little-endian        │
//!  └────────────┴──────────────────────────────────────┴───────────────────────────────┘
//!  {"layer0.weight": {"dtype": "F32", "shape": [16, 32], "data_offsets": [0, 2048]}, …,
//!   "__metadata__": {"format": "pipesched-params", "version": "1", "model": "gpt-tiny"}}
//! ```
//!
//! Names are the stages' global parameter names ([`Stage::param_names`]: `layer{i}.{name}`, `i`
//! the layer's index in the model), so a file written under one partition, pipeline depth or
//! schedule loads under any other. Tensors are `F32`, or `BF16` / `F16` for parameters stored in
//! 16 bits (mixed precision); offsets count from the start of the data.
//!
//! Invariants: a file that [`ParamsFile::read`] accepts has a header no longer than the file
//! (checked before the header is allocated) and below [`HEADER_LIMIT`], unique names, and
//! offsets that tile the data exactly (in range, no overlap, no hole), each tensor's span its
//! dtype's size times its shape; reading what [`ParamsFile::write`] wrote gives every tensor bit
//! for bit. A file is written to a temporary file in the same directory and renamed, so a crash
//! leaves the old file or the new one, never half of one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{json, Map, Value};

use crate::element::Dtype;
use crate::error::{Error, Result};
use crate::lora::Lora;
use crate::precision::Format;
use crate::spec::ModelSpec;
use crate::stage::Stage;
use crate::tensor::Tensor;

/// The `format` the metadata of a pipesched parameters file names.
pub const PARAMS_FORMAT: &str = "pipesched-params";
/// The version of the layout this module writes.
pub const PARAMS_VERSION: &str = "1";
/// The longest header read (100 MiB, as the safetensors reference sets): a longer one is a
/// damaged file, refused before anything of its length is allocated.
pub const HEADER_LIMIT: u64 = 100 << 20;

/// The tensors of a parameters file, by name, on the host, in the file's dtypes.
#[derive(Debug)]
pub struct ParamsFile {
    /// Where they were read from (or what they are, for parts that came over the network).
    origin: String,
    /// The model the metadata names, if it names one.
    model: Option<String>,
    /// The LoRA setting the file's adapters were trained with, if the metadata gives one.
    lora: Option<Lora>,
    /// The tensors, in the order of their data.
    tensors: Vec<(String, Tensor)>,
    /// Position of each name in `tensors`.
    index: HashMap<String, usize>,
}

/// What a file's metadata says of the model it was written for: its name, and the LoRA setting
/// of a model with adapters (whose scale `α/r` the tensors do not show).
#[derive(Debug, Clone, Copy)]
pub struct Written<'a> {
    /// The model's name.
    pub model: &'a str,
    /// Its LoRA setting, if any.
    pub lora: Option<&'a Lora>,
}

impl<'a> From<&'a str> for Written<'a> {
    fn from(model: &'a str) -> Written<'a> {
        Written { model, lora: None }
    }
}

impl<'a> From<&'a ModelSpec> for Written<'a> {
    fn from(model: &'a ModelSpec) -> Written<'a> {
        Written { model: &model.name, lora: model.lora.as_ref() }
    }
}

/// One header entry, checked.
struct Entry {
    name: String,
    format: Option<Format>,
    shape: [usize; 2],
    span: [u64; 2],
}

impl ParamsFile {
    /// Reads the file at `path`: its header first (its length checked against the file's before
    /// it is read), then the data the header describes.
    pub fn read(path: &Path) -> Result<ParamsFile> {
        let origin = path.display().to_string();
        let fail = |reason: String| Error::Params { file: origin.clone(), reason };
        let mut file = File::open(path)
            .map_err(|e| fail(format!("cannot be opened: {e}; give the path of a file --save-params wrote")))?;
        let size = file.metadata().map_err(|e| fail(format!("cannot be read: {e}")))?.len();
        let mut head = [0u8; 8];
        if size < 8 {
            return Err(fail(format!(
                "{size} bytes, fewer than the 8 of the header's length: not a parameters file (or truncated); write it again with --save-params"
            )));
        }
        file.read_exact(&mut head).map_err(|e| fail(format!("cannot be read: {e}")))?;
        let n = header_len(&origin, u64::from_le_bytes(head), size - 8)?;
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).map_err(|e| fail(format!("cannot be read: {e}")))?;
        let data_len = size - 8 - n;
        let (meta, entries) = parse_header(&origin, &header, data_len)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| fail(format!("cannot be read: {e}")))?;
        if data.len() as u64 != data_len {
            return Err(fail(format!(
                "its length changed while it was read ({} data bytes, {data_len} expected); read it again once nothing writes it",
                data.len()
            )));
        }
        ParamsFile::build(origin, meta, entries, &data)
    }

    /// The tensors in `bytes`, a whole file's worth ([`ParamsFile::encode`]); `origin` names
    /// them in errors.
    pub fn from_bytes(origin: &str, bytes: &[u8]) -> Result<ParamsFile> {
        let fail = |reason: String| Error::Params { file: origin.to_string(), reason };
        let (head, rest) = bytes.split_at_checked(8).ok_or_else(|| {
            fail(format!("{} bytes, fewer than the 8 of the header's length: not a parameters file", bytes.len()))
        })?;
        let n = header_len(origin, u64::from_le_bytes(head.try_into().expect("8 bytes")), rest.len() as u64)?;
        let (header, data) = rest.split_at(n as usize);
        let (meta, entries) = parse_header(origin, header, data.len() as u64)?;
        ParamsFile::build(origin.to_string(), meta, entries, data)
    }

    /// The file's bytes for `tensors` of model `model`, in the order given: `F32` for `f32`
    /// tensors (on any device), `BF16` / `F16` for tensors stored in 16 bits. An error for two
    /// tensors of one name or an `f64` tensor.
    pub fn encode<'a>(written: impl Into<Written<'a>>, tensors: &[(String, &Tensor)]) -> Result<Vec<u8>> {
        let Written { model, lora } = written.into();
        let fail = |reason: String| Error::Params { file: format!("for {model}"), reason };
        let mut header = Map::new();
        let mut meta = json!({ "format": PARAMS_FORMAT, "version": PARAMS_VERSION, "model": model });
        if let Some(lora) = lora {
            let text = serde_json::to_string(lora).map_err(|e| fail(format!("its LoRA setting as JSON: {e}")))?;
            meta["lora"] = json!(text);
        }
        header.insert("__metadata__".into(), meta);
        let mut data = Vec::new();
        for (name, t) in tensors {
            if name == "__metadata__" || header.contains_key(name.as_str()) {
                return Err(fail(format!("two tensors are named {name:?}; give each parameter its own name")));
            }
            let begin = data.len();
            let dtype = match t.dtype() {
                Dtype::F32 => {
                    data.extend(t.values()?.iter().flat_map(|v| v.to_bits().to_le_bytes()));
                    "F32"
                }
                Dtype::Stored(format) => {
                    data.extend(stored_bits(t)?.iter().flat_map(|b| b.to_le_bytes()));
                    dtype_name(Some(format))
                }
                Dtype::F64 => {
                    return Err(fail(format!(
                    "{name} holds f64 values, which a parameters file does not store; convert it with to_f32() first"
                )))
                }
            };
            header.insert(
                name.clone(),
                json!({ "dtype": dtype, "shape": t.shape(), "data_offsets": [begin, data.len()] }),
            );
        }
        let mut header = serde_json::to_vec(&Value::Object(header)).map_err(|e| fail(e.to_string()))?;
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut out = Vec::with_capacity(8 + header.len() + data.len());
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Writes `tensors` of model `model` to `path` ([`ParamsFile::encode`]): to a temporary
    /// file in the same directory, then renamed over `path`.
    pub fn write<'a>(path: &Path, model: impl Into<Written<'a>>, tensors: &[(String, &Tensor)]) -> Result<()> {
        ParamsFile::write_bytes(path, &ParamsFile::encode(model, tensors)?)
    }

    /// Writes `bytes` (a file [`ParamsFile::encode`] made) to `path`, through a temporary file
    /// in the same directory renamed over it.
    pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
        let fail = |reason: String| Error::Params { file: path.display().to_string(), reason };
        let name = path.file_name().ok_or_else(|| fail("names no file; give a file name".into()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp: PathBuf = path.with_file_name(temp_name);
        let written = File::create(&temp)
            .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&temp, path));
        written.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            fail(format!("cannot be written: {e}; give a path in a directory that exists and can be written"))
        })
    }

    /// Every tensor of `parts` (files' worth of bytes, each [`ParamsFile::encode`]d by one
    /// process for its stages, named by `origin(k)` in errors) as one file's bytes for model
    /// `model`, in the order of the parts. An error if two parts hold one name.
    pub fn merge<'a>(
        model: impl Into<Written<'a>>,
        parts: &[Vec<u8>],
        origin: impl Fn(usize) -> String,
    ) -> Result<Vec<u8>> {
        let files = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(k, p)| ParamsFile::from_bytes(&origin(k), p))
            .collect::<Result<Vec<_>>>()?;
        let all: Vec<(String, &Tensor)> =
            files.iter().flat_map(|f| f.tensors.iter().map(|(n, t)| (n.clone(), t))).collect();
        ParamsFile::encode(model, &all)
    }

    /// Where the tensors were read from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The model the file names in its metadata (`None` when it names none).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&k| &self.tensors[k].1)
    }

    /// The names, in the order of their data.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor named `name` as a parameter of `shape` and `dtype` needs it (what `place`
    /// loads): a host copy, widened from 16 bits for an `f32` parameter, rounded to nearest
    /// even ([`Tensor::into_stored`]) for one stored in 16 bits. An error naming the tensor and
    /// the file's model when it is missing or of another shape.
    pub fn tensor_for(&self, name: &str, shape: [usize; 2], dtype: Dtype, place: &str) -> Result<Tensor> {
        let Some(t) = self.get(name) else {
            return Err(self.error(format!(
                "it has no tensor {name} ({shape:?}), which {place} needs; the file holds {} tensors of {}: give a file written for this model",
                self.len(),
                self.model_words()
            )));
        };
        if t.shape() != shape {
            return Err(self.error(format!(
                "{name} is {:?} in the file, but {place} has it {shape:?}; the file is of {}, not this model: give a file written for it",
                t.shape(),
                self.model_words()
            )));
        }
        t.try_clone()?.into_dtype(dtype)
    }

    /// An error if the file holds a tensor that no stage of `model` has, as far as `held` (the
    /// stages this process holds) can tell: a name that is not `layer{i}.…` with `i` one of
    /// `model`'s layers, or one of a held stage's layers that the stage does not name. Every
    /// layer is held by some process, so the processes together check every name.
    pub fn check_belongs(&self, model: &ModelSpec, held: &[&Stage]) -> Result<()> {
        if let Some(theirs) = &self.lora {
            if !model.lora.as_ref().is_some_and(|ours| ours.same_adapters(theirs)) {
                let ours = model.lora.as_ref().map_or("none".to_string(), Lora::describe);
                return Err(self.error(format!(
                    "its adapters were trained with LoRA {} and this run's is {ours}: give the file's --lora, --lora-alpha and --lora-targets",
                    theirs.describe()
                )));
            }
        }
        let layers = model.num_layers();
        let named: HashSet<String> = held.iter().flat_map(|s| s.named_tensors()).map(|(n, _)| n).collect();
        let extra: Vec<&str> = self
            .names()
            .filter(|name| match layer_of(name) {
                None => true,
                Some(i) if i >= layers => true,
                Some(i) => held.iter().any(|s| s.layer_range().contains(&i)) && !named.contains(*name),
            })
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = extra.iter().take(3).copied().collect();
        let more =
            if extra.len() > shown.len() { format!(" and {} more", extra.len() - shown.len()) } else { String::new() };
        Err(self.error(format!(
            "it holds {}{more}, which no stage of {} ({layers} layers) has; the file is of {}: give a file written for {}",
            shown.join(", "),
            model.name,
            self.model_words(),
            model.name
        )))
    }

    /// `model gpt-tiny`, or `an unnamed model`.
    fn model_words(&self) -> String {
        self.model.as_ref().map_or("an unnamed model".into(), |m| format!("model {m}"))
    }

    fn error(&self, reason: String) -> Error {
        Error::Params { file: self.origin.clone(), reason }
    }

    /// The tensors of `entries` (checked against `data`'s length already) from `data`.
    fn build(origin: String, meta: Metadata, entries: Vec<Entry>, data: &[u8]) -> Result<ParamsFile> {
        let Metadata { model, lora } = meta;
        let mut tensors = Vec::with_capacity(entries.len());
        let mut index = HashMap::with_capacity(entries.len());
        for e in entries {
            let bytes = &data[e.span[0] as usize..e.span[1] as usize];
            let [rows, cols] = e.shape;
            let t = match e.format {
                None => Tensor::new(
                    rows,
                    cols,
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_bits(u32::from_le_bytes(b.try_into().expect("4"))))
                        .collect(),
                )?,
                Some(format) => Tensor::from_stored_bits(
                    rows,
                    cols,
                    bytes.chunks_exact(2).map(|b| u16::from_le_bytes(b.try_into().expect("2"))).collect(),
                    format,
                ),
            };
            index.insert(e.name.clone(), tensors.len());
            tensors.push((e.name, t));
        }
        Ok(ParamsFile { origin, model, lora, tensors, index })
    }
}

/// The 16-bit bits of a tensor stored in 16 bits.
fn stored_bits(t: &Tensor) -> Result<&[u16]> {
    match t.store() {
        crate::tensor::Store::Stored(bits, _) => Ok(bits),
        _ => Err(Error::Dtype {
            place: "writing a parameters file".into(),
            reason: format!("{} is not 16-bit", t.dtype()),
        }),
    }
}

/// `F32`, `BF16`, `F16`.
fn dtype_name(format: Option<Format>) -> &'static str {
    match format {
        None => "F32",
        Some(Format::Bf16) => "BF16",
        Some(Format::F16) => "F16",
    }
}

/// `i` of `layer{i}.…`.
fn layer_of(name: &str) -> Option<usize> {
    let (layer, _) = name.strip_prefix("layer")?.split_once('.')?;
    layer.parse().ok().filter(|_| layer.bytes().all(|b| b.is_ascii_digit()))
}

/// The header length `n` read from a file whose bytes after the length are `rest`: an error
/// unless it fits them and [`HEADER_LIMIT`].
fn header_len(origin: &str, n: u64, rest: u64) -> Result<u64> {
    let fail = |reason: String| Error::Params { file: origin.to_string(), reason };
    if n > rest {
        return Err(fail(format!(
            "its first 8 bytes give a header of {n} bytes, but only {rest} follow: the file is truncated or not a parameters file; write it again with --save-params"
        )));
    }
    if n > HEADER_LIMIT {
        return Err(fail(format!(
            "its header is {n} bytes, more than the {HEADER_LIMIT} a parameters file has: the file is damaged or not a parameters file; write it again with --save-params"
        )));
    }
    Ok(n)
}

/// A JSON object's members in order, duplicates kept (a `Map` would keep only the last).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Members, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of tensors by name")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(pair) = map.next_entry::<String, Value>()? {
                    out.push(pair);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Each)
    }
}

/// The model the metadata names and the checked entries of `header`, for a data section of
/// `data_len` bytes, sorted by where their data begins.
fn parse_header(origin: &str, header: &[u8], data_len: u64) -> Result<(Metadata, Vec<Entry>)> {
    let fail = |reason: String| Error::Params { file: origin.to_string(), reason };
    let text = std::str::from_utf8(header)
        .map_err(|_| fail("its header is not UTF-8 text: the file is damaged or not a parameters file".into()))?;
    let Members(members) = serde_json::from_str(text.trim_end_matches(' ')).map_err(|e| {
        fail(format!("its header is not a JSON object of tensors ({e}): the file is damaged or not a parameters file; write it again with --save-params"))
    })?;
    let mut meta = Metadata::default();
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(members.len());
    for (name, value) in members {
        if !seen.insert(name.clone()) {
            return Err(fail(format!(
                "its header names {name:?} twice; each tensor needs its own name: write the file again"
            )));
        }
        if name == "__metadata__" {
            meta = metadata(&value).map_err(|r| fail(format!("its __metadata__ {r}")))?;
            continue;
        }
        entries.push(entry(name, &value, data_len).map_err(fail)?);
    }
    entries.sort_by_key(|e| e.span);
    let mut end = 0u64;
    for e in &entries {
        if e.span[0] < end {
            return Err(fail(format!(
                "the data of {} (bytes {}..{}) overlaps the tensor before it, which ends at byte {end}: the file is damaged; write it again",
                e.name, e.span[0], e.span[1]
            )));
        }
        if e.span[0] > end {
            return Err(fail(format!(
                "bytes {end}..{} of its data belong to no tensor: the file is damaged; write it again",
                e.span[0]
            )));
        }
        end = e.span[1];
    }
    if end != data_len {
        return Err(fail(format!(
            "its tensors' data ends at byte {end}, but {data_len} data bytes follow the header: the file is damaged or has bytes appended; write it again"
        )));
    }
    Ok((meta, entries))
}

/// What a read file's `__metadata__` says: the model's name and LoRA setting, when it gives them.
#[derive(Debug, Default)]
struct Metadata {
    model: Option<String>,
    lora: Option<Lora>,
}

/// The `model` and `lora` of a `__metadata__` object (whose values are strings).
fn metadata(value: &Value) -> std::result::Result<Metadata, String> {
    let meta = value.as_object().ok_or("is not an object of strings")?;
    for (k, v) in meta {
        if !v.is_string() {
            return Err(format!("gives {k} as {v}, not a string"));
        }
    }
    if let Some(format) = meta.get("format").and_then(Value::as_str) {
        if format != PARAMS_FORMAT {
            return Err(format!("names format {format:?}, not {PARAMS_FORMAT:?}"));
        }
    }
    if let Some(version) = meta.get("version").and_then(Value::as_str) {
        if version != PARAMS_VERSION {
            return Err(format!(
                "names version {version:?}; this pipesched reads version {PARAMS_VERSION}: use the pipesched that wrote it"
            ));
        }
    }
    let lora = match meta.get("lora").and_then(Value::as_str) {
        Some(text) => {
            Some(serde_json::from_str(text).map_err(|e| format!("gives a LoRA setting that cannot be read ({e})"))?)
        }
        None => None,
    };
    Ok(Metadata { model: meta.get("model").and_then(Value::as_str).map(String::from), lora })
}

/// Header entry `name`, checked: a known dtype, a shape of 1 or 2 dimensions (`[n]` is one
/// row), offsets inside `data_len` spanning exactly the shape's bytes.
fn entry(name: String, value: &Value, data_len: u64) -> std::result::Result<Entry, String> {
    let what = |reason: &str| format!("tensor {name:?} {reason}; write the file again with --save-params");
    let obj = value.as_object().ok_or_else(|| what("is not an object of dtype, shape and data_offsets"))?;
    let format = match obj.get("dtype").and_then(Value::as_str) {
        Some("F32") => None,
        Some("BF16") => Some(Format::Bf16),
        Some("F16") => Some(Format::F16),
        Some(other) => return Err(what(&format!("is of dtype {other}, but parameters are F32, BF16 or F16"))),
        None => return Err(what("gives no dtype")),
    };
    let dims: Vec<u64> = obj
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_u64).collect())
        .ok_or_else(|| what("gives no shape of whole numbers"))?;
    let dim = |d: u64| usize::try_from(d).map_err(|_| what("has a dimension too large for this machine"));
    let shape = match dims.as_slice() {
        [n] => [1, dim(*n)?],
        [r, c] => [dim(*r)?, dim(*c)?],
        _ => return Err(what(&format!("has {} dimensions; parameters have 1 or 2", dims.len()))),
    };
    let span: Vec<u64> = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_u64).collect())
        .ok_or_else(|| what("gives no data_offsets of whole numbers"))?;
    let [begin, end] = span[..] else { return Err(what("gives data_offsets that are not [begin, end]")) };
    if begin > end || end > data_len {
        return Err(format!(
            "tensor {name:?} has data_offsets [{begin}, {end}], outside the {data_len} data bytes the file holds: the file is truncated or damaged; write it again with --save-params"
        ));
    }
    let size = if format.is_some() { 2 } else { 4 };
    let want = (shape[0] as u64).checked_mul(shape[1] as u64).and_then(|n| n.checked_mul(size));
    if want != Some(end - begin) {
        return Err(what(&format!(
            "spans {} bytes, but a {} tensor of shape {shape:?} takes {}",
            end - begin,
            dtype_name(format),
            want.map_or("more than 2^64".into(), |w| w.to_string())
        )));
    }
    Ok(Entry { name, format, shape, span: [begin, end] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Partition, Policies, Precision, RecomputePolicy};

    fn stages_of(model: &ModelSpec, n: usize) -> Vec<Stage> {
        let specs = model.stage_specs(n, &Partition::Even, &Policies::all(RecomputePolicy::None)).unwrap();
        Stage::build_all(model, &specs).unwrap()
    }

    fn named(stages: &[Stage]) -> Vec<(String, &Tensor)> {
        stages.iter().flat_map(|s| s.named_tensors()).collect()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pipesched-params-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// A model's parameters, each value changed so that a load from the seed could not pass.
    fn trained(model: &ModelSpec, n: usize) -> Vec<Stage> {
        let mut stages = stages_of(model, n);
        for s in &mut stages {
            for (p, _) in s.params_and_grads_mut() {
                let values: Vec<f32> =
                    p.values().unwrap().iter().enumerate().map(|(k, v)| v * 1.5 + k as f32 * 1e-3).collect();
                let t = Tensor::new(p.rows(), p.cols(), values).unwrap();
                *p = t.into_dtype(p.dtype()).unwrap();
            }
        }
        stages
    }

    fn assert_same(a: &[Stage], b: &[Stage]) {
        let (x, y) = (named(a), named(b));
        assert_eq!(x.len(), y.len());
        let y: HashMap<_, _> = y.into_iter().collect();
        for (name, t) in x {
            assert!(t.bit_eq(y[&name]), "{name}");
        }
    }

    #[test]
    fn a_file_round_trips_bit_for_bit_under_any_partition() {
        let model = ModelSpec::gpt_tiny();
        let at2 = trained(&model, 2);
        let path = temp("f32.safetensors");
        ParamsFile::write(&path, &model, &named(&at2)).unwrap();
        let file = ParamsFile::read(&path).unwrap();
        assert_eq!((file.model(), file.len()), (Some("gpt-tiny"), named(&at2).len()));
        for n in [1, 3, 7] {
            let mut stages = stages_of(&model, n);
            for s in &mut stages {
                s.load_named(&file).unwrap();
            }
            file.check_belongs(&model, &stages.iter().collect::<Vec<_>>()).unwrap();
            assert_same(&stages, &at2);
        }
        // The layout: an 8-byte length, a space-padded header of a multiple of 8, the data.
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let values: usize = named(&at2).iter().map(|(_, t)| t.len()).sum();
        assert_eq!(bytes.len(), 8 + n + 4 * values);
        let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["__metadata__"], json!({"format": "pipesched-params", "version": "1", "model": "gpt-tiny"}));
        assert_eq!(header["layer6.weight"]["shape"], json!([32, 256]));
        assert_eq!(header["layer6.weight"]["dtype"], "F32");
    }

    #[test]
    fn mixed_precision_parameters_are_stored_in_16_bits_and_converted_on_load() {
        let mut model = ModelSpec::gpt_tiny();
        model.precision = Precision::MixedBf16;
        let bf16 = trained(&model, 2);
        let bytes = ParamsFile::encode(&model, &named(&bf16)).unwrap();
        let file = ParamsFile::from_bytes("bytes", &bytes).unwrap();
        assert_eq!(file.get("layer6.weight").unwrap().dtype(), Dtype::Stored(Format::Bf16));
        // Into a mixed-bf16 model at another partition: the same bits.
        let mut again = stages_of(&model, 3);
        again.iter_mut().for_each(|s| s.load_named(&file).unwrap());
        assert_same(&again, &bf16);
        // Into an f32 model: widened, exactly.
        let f32_model = ModelSpec::gpt_tiny();
        let mut wide = stages_of(&f32_model, 1);
        wide[0].load_named(&file).unwrap();
        for (name, t) in named(&wide) {
            assert_eq!(t.dtype(), Dtype::F32);
            assert!(t.bit_eq(&file.get(&name).unwrap().widened().unwrap()), "{name}");
        }
        // An f32 file into a mixed-bf16 model: each value rounded to nearest even.
        let f32_file = ParamsFile::from_bytes("f32", &ParamsFile::encode("gpt-tiny", &named(&wide)).unwrap()).unwrap();
        let mut narrow = stages_of(&model, 2);
        narrow.iter_mut().for_each(|s| s.load_named(&f32_file).unwrap());
        assert_same(&narrow, &bf16);
        // And into mixed-f16: rounded from the bf16 values, one rounding.
        model.precision = Precision::MixedF16;
        let mut half = stages_of(&model, 1);
        half[0].load_named(&file).unwrap();
        let w = half[0].named_tensors().into_iter().find(|(n, _)| n == "layer1.qkv.weight").unwrap().1;
        let want = file.get("layer1.qkv.weight").unwrap().widened().unwrap().into_stored(Format::F16).unwrap();
        assert!(w.bit_eq(&want));
    }

    fn header_bytes(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.as_bytes().to_vec();
        h.resize(h.len().next_multiple_of(8), b' ');
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend_from_slice(data);
        out
    }

    fn refused(bytes: &[u8]) -> String {
        ParamsFile::from_bytes("f.safetensors", bytes).unwrap_err().to_string()
    }

    #[test]
    fn damaged_files_are_clear_errors() {
        let ok = r#"{"a": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]}}"#;
        assert_eq!(ParamsFile::from_bytes("x", &header_bytes(ok, &[0; 8])).unwrap().len(), 1);
        let e = refused(&[1, 2, 3]);
        assert!(e.starts_with("parameters file f.safetensors: 3 bytes, fewer than the 8"), "{e}");
        // A length beyond the file: refused before anything of that size is allocated.
        let e = refused(&u64::MAX.to_le_bytes());
        assert!(
            e.contains(&format!("a header of {} bytes, but only 0 follow", u64::MAX)) && e.contains("truncated"),
            "{e}"
        );
        let e = refused(&header_bytes("{not json", &[]));
        assert!(e.contains("not a JSON object of tensors"), "{e}");
        // Truncated data.
        let e = refused(&header_bytes(ok, &[0; 5]));
        assert!(e.contains("data_offsets [0, 8], outside the 5 data bytes") && e.contains("truncated"), "{e}");
        let e = refused(&header_bytes(ok, &[0; 12]));
        assert!(e.contains("ends at byte 8, but 12 data bytes follow"), "{e}");
        let twice = r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#;
        assert!(refused(&header_bytes(twice, &[0; 8])).contains("names \"a\" twice"));
        let overlap = r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#;
        assert!(refused(&header_bytes(overlap, &[0; 8])).contains("data of b (bytes 4..8) overlaps"));
        let hole = r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#;
        assert!(refused(&header_bytes(hole, &[0; 8])).contains("bytes 0..4 of its data belong to no tensor"));
        let size = r#"{"a": {"dtype": "BF16", "shape": [3, 2], "data_offsets": [0, 8]}}"#;
        let e = refused(&header_bytes(size, &[0; 8]));
        assert!(e.contains("spans 8 bytes, but a BF16 tensor of shape [3, 2] takes 12"), "{e}");
        let dtype = r#"{"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}"#;
        assert!(refused(&header_bytes(dtype, &[0; 8])).contains("dtype I64, but parameters are F32, BF16 or F16"));
        let meta = r#"{"__metadata__": {"format": "other"}}"#;
        assert!(refused(&header_bytes(meta, &[])).contains("names format \"other\""));
        let meta = r#"{"__metadata__": {"model": 3}}"#;
        assert!(refused(&header_bytes(meta, &[])).contains("gives model as 3, not a string"));
        let e = ParamsFile::read(Path::new("/nonexistent/p.safetensors")).unwrap_err().to_string();
        assert!(e.starts_with("parameters file /nonexistent/p.safetensors: cannot be opened"), "{e}");
    }

    #[test]
    fn a_missing_tensor_another_shape_or_another_model_s_tensors_are_named() {
        let model = ModelSpec::gpt_tiny();
        let stages = stages_of(&model, 2);
        let all = named(&stages);
        let file = |tensors: &[(String, &Tensor)]| {
            ParamsFile::from_bytes("p.st", &ParamsFile::encode("gpt-tiny", tensors).unwrap()).unwrap()
        };
        let without: Vec<_> = all.iter().filter(|(n, _)| n != "layer3.qkv.bias").cloned().collect();
        let mut fresh = stages_of(&model, 2);
        let e = fresh[1].load_named(&file(&without)).unwrap_err().to_string();
        assert!(
            e.starts_with("parameters file p.st: it has no tensor layer3.qkv.bias ([1, 96]), which stage 1 (layers 3..7) needs; the file holds 29 tensors of model gpt-tiny"),
            "{e}"
        );
        // Stage 0 needs nothing the file lacks.
        fresh[0].load_named(&file(&without)).unwrap();
        // Nothing changed by a failed load.
        assert_same(&fresh, &stages);
        let wrong = Tensor::zeros(2, 96);
        let shaped: Vec<_> =
            all.iter().map(|(n, t)| (n.clone(), if n == "layer3.qkv.bias" { &wrong } else { *t })).collect();
        let e = fresh[1].load_named(&file(&shaped)).unwrap_err().to_string();
        assert!(e.contains("layer3.qkv.bias is [2, 96] in the file, but stage 1 (layers 3..7) has it [1, 96]"), "{e}");
        let extra = Tensor::zeros(1, 1);
        let mut more = all.clone();
        more.extend(["layer9.w", "head.bias", "layer2.nothing", "layer6.extra"].map(|n| (n.to_string(), &extra)));
        let f = file(&more);
        let e = f.check_belongs(&model, &stages.iter().collect::<Vec<_>>()).unwrap_err().to_string();
        assert!(
            e.contains(
                "it holds layer9.w, head.bias, layer2.nothing and 1 more, which no stage of gpt-tiny (7 layers) has"
            ),
            "{e}"
        );
        // A process holding stage 1 only cannot tell layer2.nothing from a tensor of stage 0's.
        let e = f.check_belongs(&model, &[&stages[1]]).unwrap_err().to_string();
        assert!(e.contains("it holds layer9.w, head.bias, layer6.extra, which"), "{e}");
        // Another model's file: its first missing tensor, with the file's model.
        let tiny = ModelSpec::tiny();
        let other =
            ParamsFile::from_bytes("t.st", &ParamsFile::encode("tiny", &named(&stages_of(&tiny, 1))).unwrap()).unwrap();
        let e = fresh[0].load_named(&other).unwrap_err().to_string();
        assert!(
            e.contains("no tensor layer0.") && e.contains("of model tiny: give a file written for this model"),
            "{e}"
        );
    }

    #[test]
    fn writing_replaces_the_file_whole() {
        let path = temp("replace.safetensors");
        let a = Tensor::full(2, 2, 1.0);
        ParamsFile::write(&path, "m", &[("x".into(), &a)]).unwrap();
        let b = Tensor::full(1, 3, 2.0);
        ParamsFile::write(&path, "m", &[("y".into(), &b)]).unwrap();
        let f = ParamsFile::read(&path).unwrap();
        assert_eq!(f.names().collect::<Vec<_>>(), ["y"]);
        assert!(f.get("y").unwrap().bit_eq(&b));
        let dir = path.parent().unwrap();
        assert!(std::fs::read_dir(dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
        let e = ParamsFile::write(Path::new("/nonexistent/dir/p.st"), "m", &[]).unwrap_err().to_string();
        assert!(e.contains("cannot be written") && e.contains("directory that exists"), "{e}");
        let e = ParamsFile::encode("m", &[("x".into(), &a), ("x".into(), &b)]).unwrap_err().to_string();
        assert!(e.contains("two tensors are named \"x\""), "{e}");
        let merged = ParamsFile::merge(
            "m",
            &[
                ParamsFile::encode("m", &[("x".into(), &a)]).unwrap(),
                vec![],
                ParamsFile::encode("m", &[("y".into(), &b)]).unwrap(),
            ],
            |k| format!("rank {k}"),
        )
        .unwrap();
        let f = ParamsFile::from_bytes("merged", &merged).unwrap();
        assert_eq!(f.names().collect::<Vec<_>>(), ["x", "y"]);
    }
}
