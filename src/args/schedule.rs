//! Choosing a schedule's shape — `-p` ranks, `-m` micro-batches, `-v` chunks per rank — and a
//! schedule: a generator (`-s NAME`) or a PyTorch-compatible CSV file (`--from-csv FILE`).
//!
//! `-s auto` is built for a cost model under `--memory-limit` (and `--objective`): the caller
//! hands the cost model in.
//!
//! Invariant: p, m and v are ≥ 1 once parsed (checked here and nowhere else on the command
//! line), and every schedule [`ScheduleArgs::schedule`] returns went through `validate`; only
//! `simulate`, whose walk validates, takes a generated one unvalidated
//! ([`ScheduleArgs::schedule_to_simulate`]).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use pipesched_schedules::{
    auto, from_csv, validate, CostModel, Footprint, Kind, Objective, Placement, Schedule, Simulation,
};

use super::bytes::ByteSize;
use super::{at_least_one, read_text, stage_count};
use crate::budget::{self, Available};
use crate::workload::Layout;
use crate::{Error, Result};

/// Ranks and model chunks per rank.
#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Number of ranks (devices).
    #[arg(short = 'p', long = "ranks", value_name = "P", default_value_t = 2, value_parser = stage_count)]
    pub p: usize,
    /// Model chunks per rank, for interleaved, interleaved-zb and looped-bfs (default 2 there;
    /// ZB-V, V-Half and V-Min have 2, every other schedule 1).
    #[arg(short = 'v', long = "chunks", value_name = "V", value_parser = stage_count)]
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
        if self.p.checked_mul(v).is_none_or(|s| s > pipesched_schedules::MAX_STAGES) {
            return Err(Error::Usage(format!(
                "-p {} with -v {v} makes {} model stages, more than {}, the most a schedule can have",
                self.p,
                self.p as u128 * v as u128,
                pipesched_schedules::MAX_STAGES
            )));
        }
        Ok(Layout::new(self.p, v, kind.map_or(Placement::Loop, Kind::placement)))
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
    /// The size of the `kind` schedule of this shape (`None` if its counts overflow), with
    /// `planned` actions planned per (stage, micro-batch) on every stage: 1 for `R`, 2 for `O`
    /// and `L`, 3 for both.
    pub fn size(&self, kind: Kind, planned: usize) -> Option<Footprint> {
        let (p, v) = (self.layout.p, self.layout.chunks_of(kind));
        Footprint::of(kind, p, v, self.m, p.checked_mul(v)?.checked_mul(planned)?)
    }

    /// Refuses, before anything is generated, a `kind` schedule of this shape that would not fit
    /// in memory — with its simulation when `simulated`.
    pub fn check_size(&self, kind: Kind, simulated: Option<Simulation>, planned: usize) -> Result<()> {
        let size = self.size(kind, planned);
        let subject = format!(
            "{kind} with p={}, v={}, m={} ({} actions)",
            self.layout.p,
            self.layout.chunks_of(kind),
            self.m,
            size.map_or("more than 2^64".into(), |s| s.actions.to_string())
        );
        let estimate = budget::schedule(subject, size, simulated);
        Ok(budget::check(&estimate, Available::probe().as_ref())?)
    }

    /// The `kind` schedule of this shape, refused up front if it would not fit in memory.
    pub fn generate(&self, kind: Kind) -> Result<Schedule> {
        self.check_size(kind, None, 0)?;
        Ok(kind.generate(self.layout.p, self.layout.chunks_of(kind), self.m)?)
    }
}

/// What `auto` minimises, as `--objective` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ObjectiveArg {
    /// One step's makespan, time from 0.
    #[default]
    Makespan,
    /// The steady period: the longest span of a rank, what a step costs when steps overlap with
    /// no barrier between them (the Zero Bubble paper's measure).
    Steady,
}

impl From<ObjectiveArg> for Objective {
    fn from(o: ObjectiveArg) -> Objective {
        match o {
            ObjectiveArg::Makespan => Objective::Makespan,
            ObjectiveArg::Steady => Objective::SteadyPeriod,
        }
    }
}

/// Which schedule: generated or read from a file.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// Schedule: gpipe, 1f1b, interleaved, zb-h1, zb-h2, zb-v, looped-bfs, interleaved-zb, v-half,
    /// v-min, dualpipev, or auto (built for the cost model under --memory-limit).
    #[arg(long, short = 's', value_name = "NAME")]
    pub schedule: Option<Kind>,
    /// For -s auto: the activation bytes each rank may hold on top of its static bytes — what F
    /// keeps and what I keeps until W, per micro-batch (A= and W= of --mem, or the cost file) —
    /// e.g. 40MiB.
    #[arg(long, value_name = "BYTES", conflicts_with = "from_csv")]
    pub memory_limit: Option<ByteSize>,
    /// For -s auto: what it minimises — makespan (one step from time 0) or steady (the steady
    /// period, steps overlapping with no barrier: the Zero Bubble paper's measure).
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Makespan, conflicts_with = "from_csv")]
    pub objective: ObjectiveArg,
    /// Ranks, chunks and micro-batches.
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Read the schedule from a PyTorch-compatible CSV file (one line per rank) instead; it gives
    /// the ranks, stages and micro-batches.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["schedule", "p", "chunks", "m"])]
    pub from_csv: Option<PathBuf>,
    /// A schedule given as CSV text with its name (a plan file's), read as `--from-csv` reads a
    /// file; set by `run --plan`, never by a flag.
    #[arg(skip)]
    pub csv_text: Option<(String, String)>,
}

impl ScheduleArgs {
    /// Refuses, before anything is generated, a schedule and its simulation (keeping what `sim`
    /// says) that would not fit in memory, with `planned` actions planned per (stage,
    /// micro-batch) ([`ShapeArgs::size`]). A CSV schedule is already in memory as text and is not
    /// estimated.
    pub fn check_simulation_size(&self, sim: Simulation, planned: usize) -> Result<()> {
        if self.from_csv.is_none() {
            if let Some(kind) = self.schedule {
                self.shape.check_size(kind, Some(sim), planned)?;
            }
        }
        Ok(())
    }

    /// How many cells a grid of the generated schedule has at most, before it exists: p rows of
    /// the unit clock's ticks, which are at most a rank's actions plus two ticks per stage for
    /// the pipeline to fill and drain (`None` as for [`planned_actions`](Self::planned_actions)).
    pub fn planned_grid_cells(&self) -> Option<u64> {
        let kind = self.schedule?;
        let size = self.shape.size(kind, 0).filter(|_| self.from_csv.is_none())?;
        let p = self.shape.layout.p as u64;
        size.actions.checked_add(size.stages.checked_mul(2)?.checked_mul(p)?)
    }

    /// The number of actions the generated schedule will have, with `planned` actions planned per
    /// (stage, micro-batch) ([`ShapeArgs::size`]), before it exists (`None` for a CSV file, no
    /// schedule named, or a count past 2^64).
    pub fn planned_actions(&self, planned: usize) -> Option<u64> {
        match (self.schedule, &self.from_csv) {
            (Some(kind), None) => self.shape.size(kind, planned).map(|s| s.actions),
            _ => None,
        }
    }

    /// Whether the schedule is `auto`, which needs a cost model.
    pub fn is_auto(&self) -> bool {
        self.from_csv.is_none() && self.schedule == Some(Kind::Auto)
    }

    /// Refuses `--memory-limit` or `--objective` without `-s auto`, and `-s auto` without
    /// `--memory-limit`.
    fn check_auto_flags(&self) -> Result<u64> {
        match (self.is_auto(), self.memory_limit) {
            (true, Some(limit)) => Ok(limit.0),
            (true, None) => Err(Error::Usage(
                "-s auto is built under a memory limit: give --memory-limit BYTES, the activation bytes each rank may hold on top of its static bytes (e.g. --memory-limit 40MiB), with the costs (--costs and --mem, or --costs-file)".into(),
            )),
            (false, Some(_)) => Err(Error::Usage(
                "--memory-limit is the limit -s auto schedules under; drop it, or use -s auto".into(),
            )),
            (false, None) if self.objective != ObjectiveArg::default() => Err(Error::Usage(
                "--objective is what -s auto minimises; drop it, or use -s auto".into(),
            )),
            (false, None) => Ok(0),
        }
    }

    /// Generates or reads the schedule, validated; `costs` builds `-s auto` (which needs them).
    pub fn schedule(&self, costs: Option<&CostModel>) -> Result<Schedule> {
        let s = self.schedule_to_simulate(costs)?;
        if self.from_csv.is_none() {
            validate(&s)?;
        }
        Ok(s)
    }

    /// The generated schedule for `steps` steps' micro-batches streamed as one (`steps · m`
    /// micro-batches), validated; refused for a CSV schedule, whose micro-batches are fixed.
    pub fn stream(&self, steps: usize) -> Result<Schedule> {
        let (Some(kind), None) = (self.schedule, &self.from_csv) else {
            return Err(Error::Usage(
                "--async streams every step's micro-batches through one schedule generated for steps·m of them; give a generator with -s, not --from-csv".into(),
            ));
        };
        if kind == Kind::Auto {
            return Err(Error::Usage(
                "--async with -s auto: auto builds one step for a memory limit, not a stream of steps; choose a generator (1f1b is PipeDream's), or run auto with --no-barrier".into(),
            ));
        }
        let m = self.shape.m.checked_mul(steps).ok_or_else(|| {
            Error::Usage(format!("{steps} steps of {} micro-batches overflow; run fewer steps", self.shape.m))
        })?;
        let s = ShapeArgs { m, ..self.shape.clone() }.generate(kind)?;
        validate(&s)?;
        Ok(s)
    }

    /// Generates or reads the schedule for [`simulate`](pipesched_schedules::simulate), which
    /// validates it as it walks: a generated one is not validated first (generators are valid by
    /// construction, and their tests validate every one), a CSV one is, as it is read.
    pub fn schedule_to_simulate(&self, costs: Option<&CostModel>) -> Result<Schedule> {
        let limit = self.check_auto_flags()?;
        if let Some((name, text)) = &self.csv_text {
            return Ok(from_csv(text, name)?);
        }
        if let Some(path) = &self.from_csv {
            // A schedule in memory takes about twice its CSV text, and its validation as much
            // again: a file of up to an eighth of the memory budget.
            let max = budget::limit(Available::probe().as_ref()) / 8;
            let text = read_text(path, max, "cannot read the CSV schedule")?;
            let name = path.file_stem().map_or_else(|| "csv".into(), |s| s.to_string_lossy().into_owned());
            return from_csv(&text, &name).map_err(|e| Error::Usage(format!("{}: {e}", path.display())));
        }
        let Some(kind) = self.schedule else {
            return Err(Error::Usage(format!(
                "no schedule given: pass -s NAME (one of {}) with -p P -m M, or --from-csv FILE",
                Kind::names()
            )));
        };
        if kind != Kind::Auto {
            return self.shape.generate(kind);
        }
        let Some(costs) = costs else {
            return Err(Error::Usage("-s auto is built for a cost model, and this command has none".into()));
        };
        self.shape.check_size(kind, None, 0)?;
        Ok(auto(self.shape.layout.p, self.shape.m, costs, limit, self.objective.into())?)
    }
}
