//! [`Lora`]: fine-tuning through low-rank adapters (Hu et al., "LoRA: Low-Rank Adaptation of
//! Large Language Models", 2021) as a setting of the model — which of its linear maps carry an
//! [`Adapter`], of what rank `r`, scaled by `α/r`.
//!
//! Under LoRA every parameter of the model is frozen — embeddings, norms, weights and biases:
//! held and used, with no gradient and no optimizer state — and only the adapters train. A map
//! is named by where it sits ([`LoraTarget`]): attention's `qkv` and `out` projections, a
//! block's `fc1` and `fc2`, or a stand-alone `linear` layer (the head of a GPT, the input and
//! output layers of an MLP). The adapters' parameters depend only on `(seed, global layer index,
//! target)`, never on the partition, like every other parameter.
//!
//! What a frozen layer keeps: only what the `W` of a part that trains reads. A frozen norm or
//! embedding, and a `Linear` without an adapter, keep nothing for `W` (and nothing of their
//! inputs that only `W` would read); an adapted `Linear` keeps its input and output gradient as
//! a trained one does ([`LayerSpec::floats_under`] counts it, the built layers keep it).
//!
//! Invariant: [`Lora::check`] is the one place that decides whether a setting fits a model (rank
//! at least 1 and at most the smaller width of every map it adapts, `α` finite and positive, at
//! least one map adapted); the counts ([`LayerSpec::param_counts`]) and the built layers
//! ([`LayerSpec::build`](crate::LayerSpec)) read the same targets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layer_spec::LayerSpec;
use crate::layers::Adapter;
use crate::model_states::ParamCount;
use crate::rng::{tag, Stream};
use crate::spec::ModelSpec;

/// A linear map of a layer that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Attention's input projection to queries, keys and values.
    Qkv,
    /// Attention's output projection.
    Out,
    /// A block's first linear map (width → ffn).
    Fc1,
    /// A block's second linear map (ffn → width).
    Fc2,
    /// A stand-alone `linear` layer.
    Linear,
}

impl LoraTarget {
    /// Every target, in the order the help lists them.
    pub const ALL: [LoraTarget; 5] =
        [LoraTarget::Qkv, LoraTarget::Out, LoraTarget::Fc1, LoraTarget::Fc2, LoraTarget::Linear];

    /// The name a flag or a model file gives it.
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::Qkv => "qkv",
            LoraTarget::Out => "out",
            LoraTarget::Fc1 => "fc1",
            LoraTarget::Fc2 => "fc2",
            LoraTarget::Linear => "linear",
        }
    }

    /// A number for the adapter's random stream.
    fn code(self) -> u64 {
        self as u64
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LoraTarget {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<LoraTarget, String> {
        LoraTarget::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = LoraTarget::ALL.iter().map(|t| t.name()).collect();
            format!("`{s}` is not a map LoRA can adapt; use one of {}", names.join(", "))
        })
    }
}

/// The maps adapted by default: every one inside attention and the blocks (not the stand-alone
/// layers: a GPT's head, an MLP's input and output).
fn default_targets() -> Vec<LoraTarget> {
    vec![LoraTarget::Qkv, LoraTarget::Out, LoraTarget::Fc1, LoraTarget::Fc2]
}

/// Low-rank adapters on some of a model's linear maps, every other parameter frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lora {
    /// The adapters' rank `r` (at least 1).
    pub rank: usize,
    /// `α`: the update is scaled by `α/r` (default `r`: a scale of 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
    /// The maps that carry an adapter (default: `qkv`, `out`, `fc1`, `fc2`).
    #[serde(default = "default_targets")]
    pub targets: Vec<LoraTarget>,
}

impl Lora {
    /// Rank `rank` on the default targets, `α = r`.
    pub fn new(rank: usize) -> Lora {
        Lora { rank, alpha: None, targets: default_targets() }
    }

    /// The default targets.
    pub fn default_targets() -> Vec<LoraTarget> {
        default_targets()
    }

    /// The update's scale `α/r`.
    pub fn scale(&self) -> f32 {
        self.alpha.unwrap_or(self.rank as f32) / self.rank.max(1) as f32
    }

    /// Whether `other` makes the same adapters: the same rank, scale and maps.
    pub fn same_adapters(&self, other: &Lora) -> bool {
        let set = |l: &Lora| LoraTarget::ALL.map(|t| l.adapts(t));
        self.rank == other.rank && self.scale() == other.scale() && set(self) == set(other)
    }

    /// `rank 8, alpha 16, targets qkv, out`.
    pub fn describe(&self) -> String {
        let targets: Vec<&str> = self.targets.iter().map(|t| t.name()).collect();
        let alpha = self.alpha.unwrap_or(self.rank as f32);
        format!("rank {}, alpha {alpha}, targets {}", self.rank, targets.join(", "))
    }

    /// Whether `target` carries an adapter.
    pub fn adapts(&self, target: LoraTarget) -> bool {
        self.targets.contains(&target)
    }

    /// The adapter of map `target` (`[input, output]`) of global layer `layer`, drawn from
    /// `seed`; `None` if the map is not a target.
    pub(crate) fn adapter(
        &self,
        target: LoraTarget,
        (input, output): (usize, usize),
        seed: u64,
        layer: usize,
    ) -> Option<Adapter> {
        let stream = Stream::new(&[tag::LORA, seed, layer as u64, target.code()]);
        self.adapts(target).then(|| Adapter::new(input, output, self.rank, self.scale(), stream))
    }

    /// An error unless this setting fits `model`: see the module's invariant.
    pub fn check(&self, model: &ModelSpec) -> Result<()> {
        let bad = |why: String| Err(Error::Spec(format!("{}: LoRA {why}", model.name)));
        if self.rank == 0 {
            return bad("rank 0 adapts nothing; give a rank of at least 1 (8 or 16 are usual)".into());
        }
        if let Some(alpha) = self.alpha {
            if !(alpha.is_finite() && alpha > 0.0) {
                return bad(format!("alpha {alpha}: give a finite alpha above 0 (the update is scaled by alpha/rank)"));
            }
        }
        if self.targets.is_empty() {
            return bad("with no targets adapts nothing; name at least one of qkv, out, fc1, fc2, linear".into());
        }
        let mut adapted = 0usize;
        let mut index = 0usize;
        for run in &model.layers {
            for (target, input, output) in run.layer.maps() {
                if !self.adapts(target) {
                    continue;
                }
                adapted += 1;
                let narrowest = input.min(output);
                if self.rank > narrowest {
                    return bad(format!(
                        "rank {} is larger than layer {index} ({})'s {target} map ({input} → {output}), whose rank is at most {narrowest}; give a rank of at most {narrowest}, or leave {target} out of the targets",
                        self.rank,
                        run.layer.kind(),
                    ));
                }
            }
            index = index.saturating_add(run.repeat);
        }
        if adapted == 0 {
            let names: Vec<&str> = self.targets.iter().map(|t| t.name()).collect();
            return bad(format!(
                "targets {} match no map of this model; name maps it has (attention: qkv, out; blocks: fc1, fc2; linear layers: linear)",
                names.join(", ")
            ));
        }
        Ok(())
    }
}

impl LayerSpec {
    /// The layer's linear maps that an adapter can sit on: `(target, in, out)`.
    pub fn maps(&self) -> Vec<(LoraTarget, usize, usize)> {
        match *self {
            LayerSpec::Linear { input, output } => vec![(LoraTarget::Linear, input, output)],
            LayerSpec::Block { width, ffn } => vec![(LoraTarget::Fc1, width, ffn), (LoraTarget::Fc2, ffn, width)],
            LayerSpec::Attention { width, .. } => {
                vec![(LoraTarget::Qkv, width, width.saturating_mul(3)), (LoraTarget::Out, width, width)]
            }
            LayerSpec::Norm { .. } | LayerSpec::Embedding { .. } => Vec::new(),
        }
    }

    /// Floats per row the layer keeps under `lora`, as `[saved, selective, w, exact]` (see the
    /// module docs); `None` on overflow.
    pub(crate) fn floats_under(&self, lora: &Lora) -> Option<[usize; 4]> {
        let pair = |trains: bool, floats: usize| if trains { floats } else { 0 };
        Some(match *self {
            LayerSpec::Linear { input, output } => {
                let t = lora.adapts(LoraTarget::Linear);
                [pair(t, input), pair(t, input), pair(t, input.checked_add(output)?), 0]
            }
            // x̂ and rstd for I, nothing for W.
            LayerSpec::Norm { width } => [width.checked_add(1)?, width.checked_add(1)?, 0, 0],
            LayerSpec::Embedding { .. } => [0; 4],
            LayerSpec::Block { width: h, ffn: f } => {
                let (f1, f2) = (lora.adapts(LoraTarget::Fc1), lora.adapts(LoraTarget::Fc2));
                // x̂, rstd, h always; y for fc1's W, GELU(h) for fc2's.
                let saved = h.checked_add(1)?.checked_add(f)?.checked_add(pair(f1, h))?.checked_add(pair(f2, f))?;
                let w = pair(f1, h.checked_add(f)?).checked_add(pair(f2, f.checked_add(h)?))?;
                [saved, saved, w, 0]
            }
            LayerSpec::Attention { width: w, heads, seq } => {
                let (q, o) = (lora.adapts(LoraTarget::Qkv), lora.adapts(LoraTarget::Out));
                // x̂, rstd, qkv always; y for qkv's W, o for out's; the probabilities unless
                // selective.
                let selective = w.checked_mul(4)?.checked_add(1)?.checked_add(pair(q, w))?.checked_add(pair(o, w))?;
                let saved = selective.checked_add(heads.checked_mul(seq)?)?;
                let kept_for_w = pair(q, w.checked_mul(4)?).checked_add(pair(o, w.checked_mul(2)?))?;
                [saved, selective, kept_for_w, 0]
            }
        })
    }

    /// The layer's parameter tensors under `lora`: its own, and two per adapter; `None` on
    /// overflow.
    pub(crate) fn tensor_count_in(&self, lora: Option<&Lora>) -> Option<usize> {
        let adapters = lora.map_or(0, |l| self.maps().iter().filter(|(t, ..)| l.adapts(*t)).count());
        self.tensor_count().checked_add(adapters.checked_mul(2)?)
    }

    /// `Σ in·out` over the products of the layer's forward in `model`: its maps', and under LoRA
    /// its adapters' `in·r + r·out` (what [`Layer::linear_maps`](crate::layers::Layer) of the
    /// built layer sums to), saturating.
    pub(crate) fn maps_per_row_in(&self, model: &ModelSpec) -> usize {
        let Some(lora) = &model.lora else { return self.maps_per_row() };
        let adapters = self.maps().into_iter().filter(|(t, ..)| lora.adapts(*t));
        adapters
            .fold(self.maps_per_row(), |n, (_, i, o)| n.saturating_add(lora.rank.saturating_mul(i.saturating_add(o))))
    }

    /// Floats per row the layer's forward keeps in `model` (under its LoRA, if any); `None` on
    /// overflow.
    pub fn saved_per_row_in(&self, model: &ModelSpec) -> Option<usize> {
        match &model.lora {
            Some(lora) => Some(self.floats_under(lora)?[0]),
            None => self.saved_per_row(),
        }
    }

    /// The parameters the layer trains and those it holds frozen under `lora` (`None`: it
    /// trains them all); `None` on overflow.
    pub fn param_counts(&self, lora: Option<&Lora>) -> Option<ParamCount> {
        let base = self.checked_param_count()? as u64;
        let Some(lora) = lora else { return Some(ParamCount { trained: base, frozen: 0 }) };
        let adapters = self.maps().into_iter().filter(|(t, ..)| lora.adapts(*t)).try_fold(0u64, |n, (_, i, o)| {
            n.checked_add((lora.rank as u64).checked_mul((i as u64).checked_add(o as u64)?)?)
        })?;
        Some(ParamCount { trained: adapters, frozen: base })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_adapters_on_their_targets_and_freezes_the_rest() {
        let attention = LayerSpec::Attention { width: 8, heads: 2, seq: 4 };
        let lora = Lora { rank: 2, alpha: None, targets: vec![LoraTarget::Qkv] };
        // qkv is 8 → 24: A is 8×2, B is 2×24.
        assert_eq!(
            attention.param_counts(Some(&lora)),
            Some(ParamCount { trained: 2 * (8 + 24), frozen: 4 * 64 + 48 })
        );
        assert_eq!(attention.param_counts(None), Some(ParamCount { trained: 4 * 64 + 48, frozen: 0 }));
        let norm = LayerSpec::Norm { width: 8 };
        assert_eq!(norm.param_counts(Some(&lora)), Some(ParamCount { trained: 0, frozen: 16 }));
        assert_eq!(Lora::new(4).scale(), 1.0);
        assert_eq!(Lora { alpha: Some(16.0), ..Lora::new(4) }.scale(), 4.0);
    }

    #[test]
    fn bad_settings_are_errors_that_say_what_to_do() {
        let gpt = ModelSpec::gpt_tiny();
        let err = |l: Lora| l.check(&gpt).unwrap_err().to_string();
        assert!(err(Lora::new(0)).contains("rank 0 adapts nothing"));
        let width = gpt.layers.iter().flat_map(|r| r.layer.maps()).map(|(_, i, o)| i.min(o)).min().unwrap();
        let e = err(Lora::new(width + 1));
        assert!(e.contains(&format!("give a rank of at most {width}")), "{e}");
        assert!(err(Lora { alpha: Some(f32::NAN), ..Lora::new(2) }).contains("finite alpha"));
        assert!(err(Lora { targets: vec![], ..Lora::new(2) }).contains("no targets"));
        let mlp = ModelSpec::tiny();
        let e = Lora { targets: vec![LoraTarget::Qkv], ..Lora::new(2) }.check(&mlp).unwrap_err().to_string();
        assert!(e.contains("match no map of this model"), "{e}");
        assert!(Lora::new(2).check(&gpt).is_ok());
        assert_eq!("fc2".parse::<LoraTarget>(), Ok(LoraTarget::Fc2));
        assert!("wq".parse::<LoraTarget>().unwrap_err().contains("one of qkv, out, fc1, fc2, linear"));
    }
}
