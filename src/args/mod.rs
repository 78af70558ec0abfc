//! The command lines' flags, typed at the edge: value types with their parsers (byte sizes,
//! times, bandwidths, `KEY=VALUE` lists, `--costs`, `--mem`) and the argument groups that
//! `pipesched` and `pipesched-bench` both flatten — the model ([`ModelArgs`]), the schedule's shape
//! ([`ShapeArgs`], [`LayoutArgs`]) or the schedule itself ([`ScheduleArgs`]), recompute
//! ([`RecomputeArgs`]), loss scaling ([`LossScaleArgs`]), parameters files ([`InitParamsArgs`], [`SaveParamsArgs`]), costs ([`CostArgs`]), data parallelism ([`DataParallelArgs`]), steps ([`StepArgs`]) and how they follow each other ([`RunModeArgs`]), the transport
//! ([`TransportArgs`]) and output ([`OutArgs`]).
//!
//! Invariant: one flag, one spelling, one parser and one default, wherever it appears; nothing
//! past these groups sees a flag's text.

mod bandwidth;
mod bytes;
mod costs;
mod data_parallel;
mod file;
mod loss_scale;
mod model;
mod number;
mod offload;
mod out;
mod pairs;
mod params;
mod run_mode;
mod schedule;
mod steps;
mod time;
mod transport;

pub use bandwidth::Bandwidth;
pub use bytes::ByteSize;
pub use costs::{CostArgs, Costs, Mem};
pub use data_parallel::DataParallelArgs;
pub use file::read_text;
pub use loss_scale::LossScaleArgs;
pub use model::{ModelArgs, OptimizerKind, RecomputeArgs};
pub use number::{at_least_one, positive, stage_count};
pub use offload::OffloadArgs;
pub use out::OutArgs;
pub use pairs::pairs;
pub use params::{InitParamsArgs, SaveParamsArgs};
pub use run_mode::RunModeArgs;
pub use schedule::{LayoutArgs, ObjectiveArg, ScheduleArgs, ShapeArgs};
pub use steps::StepArgs;
pub use time::{seconds, Time, TimeUnit};
pub use transport::{TransportArgs, TransportKind};
