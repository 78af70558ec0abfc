//! Choosing a schedule's shape — `-p` ranks, `-m` micro-batches, `-v` chunks per rank — and a
//! schedule: a generator (`-s NAME`) or a PyTorch-compatible CSV file (`--from-csv FILE`).
//!
//! Invariant: p, m and v are ≥ 1 once parsed (checked here and nowhere else on the command
//! line), and every schedule returned went through `validate`.

use std::path::PathBuf;

use clap::Args;
use pipesched_schedules::{from_csv, Footprint, Kind, Schedule};

use super::at_least_one;
use crate::budget::{self, Available};
use crate::workload::Layout;
use crate::{Error, Result};

/// Ranks and model chunks per rank.
#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Number of ranks (devices).
    #[arg(short = 'p', long = "ranks", value_name = "P", default_value_t = 2, value_parser = at_least_one)]
    pub p: usize,
    /// Model chunks per rank, for interleaved (default 2 there; every other schedule has 1).
    #[arg(short = 'v', long = "chunks", value_name = "V", value_parser = at_least_one)]
    pub chunks: Option<usize>,
}

impl LayoutArgs {
    /// The chunks per rank of `kind`: `-v` if given, else the schedule's default.
    pub fn chunks_of(&self, kind: Kind) -> usize {
        self.chunks.unwrap_or(kind.default_chunks())
    }

    /// The layout a `kind` schedule has with these flags (loop placement without a kind).
    pub fn layout(&self, kind: Option<Kind>) -> Result<Layout> {
        let v = match kind {
            Some(k) => self.chunks_of(k),
            None => self.chunks.unwrap_or(1),
        };
        if let Some(k) = kind.filter(|&k| !k.takes_chunks() && v != k.default_chunks()) {
            return Err(Error::Usage(format!(
                "-s {k} places {} stage(s) per rank, so it takes no -v/--chunks (got {v})",
                k.default_chunks()
            )));
        }
        // Every generator places stage s on rank s mod p.
        Ok(Layout::looped(self.p, v))
    }
}

/// Ranks, chunks and micro-batches.
#[derive(Debug, Clone, Args)]
pub struct ShapeArgs {
    /// Ranks and chunks.
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Number of micro-batches.
    #[arg(short = 'm', long = "microbatches", value_name = "M", default_value_t = 8, value_parser = at_least_one)]
    pub m: usize,
}

impl ShapeArgs {
    /// The size of the `kind` schedule of this shape (`None` if its counts overflow).
    pub fn size(&self, kind: Kind) -> Option<Footprint> {
        Footprint::of(kind, self.layout.p, self.layout.chunks_of(kind), self.m, 0)
    }

    /// Refuses, before anything is generated, a `kind` schedule of this shape that would not fit
    /// in memory — with its simulation when `simulated` is `Some(with_bytes)`.
    pub fn check_size(&self, kind: Kind, simulated: Option<bool>) -> Result<()> {
        let subject = format!(
            "{kind} with p={}, v={}, m={} ({} actions)",
            self.layout.p,
            self.layout.chunks_of(kind),
            self.m,
            self.size(kind).map_or("more than 2^64".into(), |s| s.actions.to_string())
        );
        let estimate = budget::schedule(subject, self.size(kind), simulated);
        Ok(budget::check(&estimate, Available::probe().as_ref())?)
    }

    /// The `kind` schedule of this shape, refused up front if it would not fit in memory.
    pub fn generate(&self, kind: Kind) -> Result<Schedule> {
        self.check_size(kind, None)?;
        Ok(kind.generate(self.layout.p, self.layout.chunks_of(kind), self.m)?)
    }
}

/// Which schedule: generated or read from a file.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// Schedule: gpipe, 1f1b, interleaved, zb-h1, zb-h2.
    #[arg(long, short = 's', value_name = "NAME")]
    pub schedule: Option<Kind>,
    /// Ranks, chunks and micro-batches.
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Read the schedule from a PyTorch-compatible CSV file (one line per rank) instead; it gives
    /// the ranks, stages and micro-batches.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["schedule", "p", "chunks", "m"])]
    pub from_csv: Option<PathBuf>,
}

impl ScheduleArgs {
    /// Refuses, before anything is generated, a schedule and its simulated trace that would not
    /// fit in memory (`with_bytes`: the cost model has byte counts). A CSV schedule is already in
    /// memory as text and is not estimated.
    pub fn check_simulation_size(&self, with_bytes: bool) -> Result<()> {
        if self.from_csv.is_none() {
            if let Some(kind) = self.schedule {
                self.shape.check_size(kind, Some(with_bytes))?;
            }
        }
        Ok(())
    }

    /// The number of actions the generated schedule will have, before it exists (`None` for a CSV
    /// file, no schedule named, or a count past 2^64).
    pub fn planned_actions(&self) -> Option<u64> {
        match (self.schedule, &self.from_csv) {
            (Some(kind), None) => self.shape.size(kind).map(|s| s.actions),
            _ => None,
        }
    }

    /// Generates or reads the schedule; every path goes through `validate`.
    pub fn schedule(&self) -> Result<Schedule> {
        if let Some(path) = &self.from_csv {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                action: "cannot read the CSV schedule",
                path: path.clone(),
                source,
            })?;
            let name = path.file_stem().map_or_else(|| "csv".into(), |s| s.to_string_lossy().into_owned());
            return from_csv(&text, &name).map_err(|e| Error::Usage(format!("{}: {e}", path.display())));
        }
        let Some(kind) = self.schedule else {
            return Err(Error::Usage(format!(
                "no schedule given: pass -s NAME (one of {}) with -p P -m M, or --from-csv FILE",
                Kind::ALL.map(Kind::name).join(", ")
            )));
        };
        self.shape.generate(kind)
    }
}
