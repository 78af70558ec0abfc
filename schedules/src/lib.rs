//! Pipeline schedules as data: generate, validate, simulate, measure.
//!
//! Everything here is a pure function of its inputs: no threads, no devices.
//!
//! ```
//! use pipesched_schedules::{one_f_one_b, simulate, CostModel, Stats};
//!
//! let schedule = one_f_one_b(4, 8)?;                         // valid by construction
//! let trace = simulate(&schedule, &CostModel::per_rank(1.0, 1.0, 1.0))?;
//! let stats = Stats::of(&trace);
//! assert_eq!(stats.makespan, 33.0);                           // m(F+I+W) + (p−1)(F+I+W)
//! println!("{}", schedule.grid());
//! # Ok::<(), pipesched_schedules::Error>(())
//! ```
#![warn(missing_docs)]
#![deny(unsafe_code)]

mod action;
mod back_to_back;
mod clock;
mod cost;
mod csv;
mod data_parallel;
pub mod deps;
mod error;
mod footprint;
mod generate;
pub mod grid;
mod host_link;
mod ledger;
mod offload;
mod prefetch;
mod ready;
mod recompute;
mod schedule;
mod simulate;
mod stats;
mod trace;
mod updates;
mod validate;
mod walk;

pub use action::{Action, Op, MAX_MICROBATCHES, MAX_STAGES};
pub use back_to_back::{back_to_back, period, step_ends};
pub use clock::unit_clock;
pub use cost::{CostModel, StageCost, StageCosts};
pub use csv::{csv_lines, from_csv, to_csv};
pub use data_parallel::{DataParallel, GradientSum};
pub use error::{Error, Result};
pub use footprint::{Footprint, Simulation};
pub use generate::{
    auto, dualpipe_v, forward_only, forward_pass, gpipe, interleaved, interleaved_zb, looped_bfs, one_f_one_b, v_half,
    v_min, zb_h1, zb_h2, zb_v, Kind, Objective,
};
pub use host_link::HostLink;
pub use ledger::{InFlight, Ledger};
pub use offload::{with_offload, Offload};
pub use recompute::with_recompute;
pub use schedule::{Placement, Schedule};
pub use simulate::{simulate, simulate_data_parallel, simulate_stats, simulate_updates};
pub use stats::Stats;
pub use trace::{MemSample, RankTrace, Source, Span, Trace, Transfer, Transfers};
pub use updates::{Updates, Versioning};
pub use validate::{check_structure, validate};
