//! The flags that say which stages to build — `--model`, `--partition`, `--batch`,
//! `--optimizer`, `--lr`, `--seed`, `--devices`, `--precision`, `--lora` — and `--recompute`.
//!
//! Invariant: every value is typed by its parser (a model file is read and validated when the
//! flag is parsed); [`ModelArgs::spec`] puts `--precision` and `--lora` into the model — the one
//! place they replace its own — and fails only where they do not fit it.

use std::path::Path;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use pipesched_stages::{Corpus, Lora, LoraTarget, OptimizerSpec, Partition, Policies, Precision};

use super::{at_least_one, positive};
use crate::workload::{Devices, ModelChoice, ModelSource, WorkloadSpec};
use crate::{Error, Result};

/// The optimizer applied after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    /// SGD with momentum 0.9.
    Sgd,
    /// Adam.
    Adam,
}

/// Which model, split how, trained how, where.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model: a preset (tiny, small, medium, gpt-tiny, gpt-small, gpt-medium, gpt2-xl), a TOML or JSON model file (its format is at the
    /// end of --help), or synthetic stages
    /// `synthetic:F=2ms,I=2ms,W=1ms[,R=..][,mem=..][,wmem=..][,msg=..]` (times and bytes per rank).
    #[arg(long, value_name = "MODEL", default_value = "gpt-small")]
    pub model: ModelChoice,
    /// How layers are split into stages: even, balanced (by parameter count), or counts like 3,4,4.
    #[arg(long, default_value = "even", value_name = "PARTITION")]
    pub partition: Partition,
    /// Samples per micro-batch: rows, or sequences of the model's length for a model of
    /// sequences (one with an embedding or attention) (default: the model's own).
    #[arg(long, value_parser = at_least_one, value_name = "SAMPLES")]
    pub batch: Option<usize>,
    /// A text file a model of tokens (gpt-*) trains on, read as bytes: the first 90 % for
    /// training, the rest for validation (default: a corpus generated from the seed, whose
    /// entropy is known). Read when the flag is parsed.
    #[arg(long, value_name = "FILE", value_parser = text_file)]
    pub data: Option<Arc<Corpus>>,
    /// Optimizer applied after each step.
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerKind,
    /// Learning rate.
    #[arg(long, default_value = "3e-4", value_parser = positive, allow_negative_numbers = true)]
    pub lr: f32,
    /// Seed of the parameters, dropout masks and data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the ranks run: `cpu` (one core per rank), `cuda` (ranks round-robin over the
    /// visible GPUs) or a list, one per rank: `cuda:0,cuda:0,cuda:1`.
    #[arg(long, default_value = "cpu", value_name = "DEVICES")]
    pub devices: Devices,
    /// Number formats: f32; bf16 or f16 (matrix products' operands and results, accumulated in
    /// f32); mixed-bf16 or mixed-f16 (mixed-precision training: parameters, activations and
    /// gradients stored in 16 bits, f32 master weights and optimizer state; mixed-f16 scales the
    /// loss dynamically). Default: the model's own, f32 for the presets.
    #[arg(long, value_name = "FORMAT")]
    pub precision: Option<Precision>,
    /// Fine-tune through LoRA adapters of rank RANK (Hu et al., 2021): `W + (alpha/RANK)·A·B` on
    /// the maps of --lora-targets, every other parameter (embeddings, norms, weights, biases)
    /// frozen — held, with no gradient and no optimizer state. Start from trained parameters
    /// with --init-params. Replaces the model file's `lora`.
    #[arg(long, value_name = "RANK")]
    pub lora: Option<usize>,
    /// The adapters' alpha: the update is scaled by alpha/RANK (default RANK).
    #[arg(long, value_name = "ALPHA", requires = "lora", value_parser = positive, allow_negative_numbers = true)]
    pub lora_alpha: Option<f32>,
    /// The maps that carry adapters, a comma list of qkv, out (attention), fc1, fc2 (blocks),
    /// linear (linear layers: a GPT's head, an MLP's input and output) (default qkv,out,fc1,fc2).
    #[arg(long, value_name = "MAPS", requires = "lora", value_delimiter = ',')]
    pub lora_targets: Option<Vec<LoraTarget>>,
}

impl ModelArgs {
    /// The stages these flags describe; an error if `--lora` does not fit the model.
    pub fn spec(&self) -> Result<WorkloadSpec> {
        Ok(WorkloadSpec {
            model: self.model_choice()?,
            partition: self.partition.clone(),
            batch: self.batch,
            data: self.data.clone(),
            optimizer: match self.optimizer {
                OptimizerKind::Sgd => OptimizerSpec::sgd(self.lr, 0.9),
                OptimizerKind::Adam => OptimizerSpec::adam(self.lr),
            },
            seed: self.seed,
            devices: self.devices.clone(),
            init: None,
            loss_scale: None,
        })
    }

    /// The precision a model trains in: `--precision`, else the model's own (`None` for
    /// synthetic stages).
    pub fn precision(&self) -> Option<Precision> {
        match &self.model.source {
            ModelSource::Model(spec) => Some(self.precision.unwrap_or(spec.precision)),
            ModelSource::Synthetic(_) => None,
        }
    }

    /// The model with `--precision` and `--lora` in place of its own.
    fn model_choice(&self) -> Result<ModelChoice> {
        let mut choice = self.model.clone();
        let lora = self.lora.map(|rank| Lora {
            rank,
            alpha: self.lora_alpha,
            targets: self.lora_targets.clone().unwrap_or_else(Lora::default_targets),
        });
        match &mut choice.source {
            ModelSource::Model(spec) => {
                if let Some(p) = self.precision {
                    spec.precision = p;
                }
                if lora.is_some() {
                    spec.lora = lora;
                    spec.validate()?;
                }
            }
            ModelSource::Synthetic(_) if lora.is_some() => {
                return Err(Error::Usage(
                    "--lora: synthetic stages have no parameters to adapt; give a preset or a model file".into(),
                ))
            }
            ModelSource::Synthetic(_) => {}
        }
        Ok(choice)
    }
}

/// `--data`: the file's bytes, checked to hold at least one token to predict in each split (the
/// model's sequence length is checked against it before anything is built).
fn text_file(path: &str) -> std::result::Result<Arc<Corpus>, String> {
    Corpus::from_file(Path::new(path), 1).map(Arc::new).map_err(|e| e.to_string())
}

/// What each stage keeps for its backward.
#[derive(Debug, Clone, Args)]
pub struct RecomputeArgs {
    /// Recompute policy: none, full (keep only the stage input), every:K (keep every K-th
    /// layer's input), sqrt, selective (keep all but attention's probabilities, recomputed from
    /// Q and K), optimal:BYTES (the fastest sequence within BYTES per micro-batch, e.g.
    /// optimal:4MiB: F keeps per layer nothing, its input or everything, and I interleaves the
    /// recomputations with the backwards) — one for every stage, or a comma list with one per
    /// stage. R runs right before each backward of a stage that drops activations (not under
    /// optimal, whose I recomputes).
    #[arg(long, value_name = "POLICY[,POLICY..]")]
    pub recompute: Option<Policies>,
}

impl RecomputeArgs {
    /// The policies given, `none` for every stage if none were.
    pub fn policies(&self) -> Policies {
        self.recompute.clone().unwrap_or_else(|| Policies::all(Default::default()))
    }
}
