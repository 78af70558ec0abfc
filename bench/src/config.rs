//! The sweep: which configurations (schedule × recompute policy) the benchmark runs, and the
//! flags that choose them.

use std::path::PathBuf;

use clap::Parser;

use pipesched::{flags, Error, Result};
use pipesched_schedules::{CostModel, Kind};
use pipesched_stages::RecomputePolicy;

/// Compare pipeline schedules × recompute policies on one model: step time, throughput, bubble
/// (measured and simulated), peak bytes per rank (measured and predicted), recompute share.
#[derive(Debug, Parser)]
#[command(name = "pipesched-bench", version, about, long_about = None)]
pub struct Args {
    /// Model: a preset (tiny, small, medium) or a TOML/JSON model file.
    #[arg(long, default_value = "small")]
    pub model: String,
    /// Synthetic stages instead of a model, e.g. F=2ms,I=2ms,W=1ms,mem=1MiB (any p, however many cores).
    #[arg(long, value_name = "SPEC")]
    pub synthetic: Option<String>,
    /// Number of ranks.
    #[arg(short = 'p', long = "ranks", default_value_t = 2)]
    pub p: usize,
    /// Number of micro-batches.
    #[arg(short = 'm', long = "microbatches", default_value_t = 8)]
    pub m: usize,
    /// Chunks per rank for interleaved.
    #[arg(long, short = 'v', default_value_t = 2)]
    pub chunks: usize,
    /// Schedules to compare, comma-separated.
    #[arg(long, default_value = "gpipe,1f1b,interleaved,zb-h1,zb-h2")]
    pub schedules: String,
    /// Recompute policies to compare, comma-separated (each applies to every stage).
    #[arg(long, default_value = "none,full")]
    pub recompute: String,
    /// Rows per micro-batch (default: the model's own).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Measured steps per configuration.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Warm-up steps per configuration, left out of the timings.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Folder for the JSON results and the charts.
    #[arg(long, default_value = "plots")]
    pub out: PathBuf,
    /// No execution: simulate every configuration (costs from --costs/--mem, the synthetic spec,
    /// or the model's profiled stages and predicted bytes).
    #[arg(long)]
    pub simulate_only: bool,
    /// Per-rank times for --simulate-only, e.g. F=1,I=1,W=0.5,C=0.05.
    #[arg(long, requires = "simulate_only")]
    pub costs: Option<String>,
    /// Per-rank bytes for --simulate-only with --costs, e.g. A=64MiB,W=16MiB,S=1GiB.
    #[arg(long, requires = "costs")]
    pub mem: Option<String>,
    /// A reduced sweep that finishes in well under a minute (a smoke test): batch 16, one
    /// warm-up step, two measured steps.
    #[arg(long)]
    pub quick: bool,
    /// Seed of the parameters, dropout masks and data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seconds any wait may last before a step fails as a hang.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Where the ranks run: `cpu`, `cuda` (round-robin over the visible GPUs) or one device per
    /// rank (`cuda:0,cuda:0`).
    #[arg(long, default_value = "cpu")]
    pub devices: String,
    /// Format of the matrix products' operands and results: f32, bf16 or f16.
    #[arg(long, value_name = "FORMAT")]
    pub precision: Option<String>,
}

/// One configuration of the sweep.
#[derive(Debug, Clone)]
pub struct Config {
    /// The schedule.
    pub kind: Kind,
    /// Chunks per rank.
    pub v: usize,
    /// Recompute policy for every stage.
    pub recompute: String,
}

impl Config {
    /// `zb-h1 / full`.
    pub fn label(&self) -> String {
        format!("{} / {}", self.kind, self.recompute)
    }
}

impl Args {
    /// The stages these flags describe, under recompute policy `recompute`.
    pub fn workload(&self, recompute: &str) -> pipesched::workload::WorkloadSpec {
        pipesched::workload::WorkloadSpec {
            model: match &self.synthetic {
                Some(s) => format!("synthetic:{s}"),
                None => self.model.clone(),
            },
            recompute: recompute.into(),
            batch: self.batch,
            seed: self.seed,
            devices: self.devices.clone(),
            precision: self.precision.clone(),
            ..Default::default()
        }
    }

    /// Applies `--quick` and checks the values, before anything runs.
    pub fn checked(mut self) -> Result<Args> {
        if self.quick {
            self.batch = Some(self.batch.unwrap_or(16));
            self.steps = 2;
            self.warmup = 1;
        }
        if self.p == 0 || self.m == 0 || self.chunks == 0 {
            return Err(Error::Usage(format!(
                "-p, -m and --chunks must be at least 1; got p={}, m={}, chunks={}",
                self.p, self.m, self.chunks
            )));
        }
        if self.steps == 0 {
            return Err(Error::Usage("--steps must be at least 1".into()));
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(Error::Usage(format!("--timeout must be a positive number of seconds, got {}", self.timeout)));
        }
        Ok(self)
    }

    /// The configurations, in table order (schedule, then policy).
    pub fn configs(&self) -> Result<Vec<Config>> {
        let kinds: Vec<Kind> =
            self.schedules.split(',').map(|s| s.trim().parse::<Kind>()).collect::<std::result::Result<_, _>>()?;
        let policies: Vec<String> =
            self.recompute.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if kinds.is_empty() || policies.is_empty() {
            return Err(Error::Usage("--schedules and --recompute must each name at least one".into()));
        }
        for p in &policies {
            p.parse::<RecomputePolicy>().map_err(|e| Error::Usage(format!("--recompute {p}: {e}")))?;
        }
        Ok(kinds
            .into_iter()
            .flat_map(|kind| {
                let v = if kind == Kind::Interleaved { self.chunks } else { 1 };
                policies.iter().map(move |r| Config { kind, v, recompute: r.clone() })
            })
            .collect())
    }

    /// The per-rank cost model of `--costs`/`--mem`, if given.
    pub fn flag_costs(&self) -> Result<Option<CostModel>> {
        self.costs.as_deref().map(|c| flags::cost_model(Some(c), self.mem.as_deref())).transpose()
    }

    /// Samples per step: m micro-batches of the batch size (1 for synthetic stages).
    pub fn samples_per_step(&self, batch: usize) -> usize {
        self.m * batch
    }
}
