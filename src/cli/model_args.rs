//! The model flags shared by `run` and `profile`.

use clap::Args;

use pipesched::workload::WorkloadSpec;

/// Which model, split how.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The model: a preset (tiny, small, medium), a TOML or JSON model file, or synthetic stages
    /// `synthetic:F=2ms,I=2ms,W=1ms[,R=..][,mem=..][,wmem=..][,msg=..]`.
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// Recompute policy: none, full, every:K, sqrt — one for every stage, or a comma list, one per stage.
    #[arg(long, default_value = "none", value_name = "POLICY")]
    pub recompute: String,
    /// How layers are split into stages: even, balanced (by parameter count), or counts like 3,4,4.
    #[arg(long, default_value = "even")]
    pub partition: String,
    /// Rows per micro-batch (default: the model's own).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Optimizer applied after each step.
    #[arg(long, default_value = "adam", value_parser = ["sgd", "adam"])]
    pub optimizer: String,
    /// Learning rate.
    #[arg(long, default_value_t = 3e-4, allow_negative_numbers = true)]
    pub lr: f32,
    /// Seed of the parameters, dropout masks and data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the ranks run: `cpu` (one core per rank), `cuda` (ranks round-robin over the
    /// visible GPUs) or a list, one per rank: `cuda:0,cuda:0,cuda:1`.
    #[arg(long, default_value = "cpu")]
    pub devices: String,
    /// Format of the matrix products' operands and results: f32, bf16 or f16 (accumulation is
    /// always f32; default: the model's own, f32 for the presets).
    #[arg(long, value_name = "FORMAT")]
    pub precision: Option<String>,
}

impl ModelArgs {
    /// The workload these flags describe.
    pub fn spec(&self) -> WorkloadSpec {
        WorkloadSpec {
            model: self.model.clone(),
            recompute: self.recompute.clone(),
            partition: self.partition.clone(),
            batch: self.batch,
            optimizer: self.optimizer.clone(),
            lr: self.lr,
            seed: self.seed,
            devices: self.devices.clone(),
            precision: self.precision.clone(),
        }
    }
}
