//! pipesched: pipeline-parallel training schedules — simulate them, run them, chart them.
#![warn(missing_docs)]

pub mod args;
pub mod budget;
pub mod chrome;
pub mod collect;
pub mod cost_file;
pub mod error;
pub mod exec;
pub mod heap;
pub mod host_copy;
pub mod inference;
pub mod layer_profile;
pub mod memory_report;
pub mod model;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod network;
pub mod output;
pub mod plan;
pub mod profile;
mod real_stage;
pub mod replica_bytes;
pub mod report;
pub mod synthetic;
pub mod units;
mod weight_versions;
pub mod workload;

pub use error::{Error, Result};
pub use pipesched_charts as plot;
pub use pipesched_schedules as schedules;
