//! `pipesched plan`: the fastest plan that fits a memory cap — partition, schedule, micro-batch
//! count and per-stage recompute — found by simulating candidates whose costs are composed from
//! per-layer costs ([`search`]), the fastest of them measured on their own stages
//! ([`measure`]), written as a plan file ([`PlanFile`]) that `run --plan` runs,
//! with the Pareto front of step time against peak bytes ([`pareto`]).
//!
//! Invariant: every plan offered fits the cap on every rank by the simulator's held bytes, which
//! are the bytes the executor's ledger measures, so `run --plan` holds at most the cap.

mod candidate;
mod measure;
pub mod pareto;
mod plan_file;
mod search;
mod table;

pub use candidate::{Candidate, Point, Rejection};
pub use measure::{measure, optimizer, stages_spec, Effort, Measured};
pub use plan_file::{PlanFile, PLAN_FORMAT};
pub use search::{microbatch_counts, replica_batch, scaled, search, Outcome, Request};
