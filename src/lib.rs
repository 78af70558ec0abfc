//! pipesched: pipeline-parallel training schedules — simulate them, run them, chart them.
#![warn(missing_docs)]

pub mod error;
pub mod output;
pub mod plot;

pub use error::{Error, Result};
pub use pipesched_schedules as schedules;
