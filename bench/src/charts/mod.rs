//! The benchmark's own charts, in the house style of `pipesched-charts`: throughput bars
//! ([`render_throughput`]) and peak memory against throughput with the Pareto front
//! ([`render_tradeoff`]), both drawn from one [`ConfigPoint`] per configuration and both marking
//! the best or tied configurations by the rule of [`crate::ranking`].
//!
//! Invariant: the charts draw the standing each point carries and never decide it themselves, so
//! they and the Markdown table always mark the same configurations.

mod labels;
mod marks;
mod points;
mod throughput;
mod tradeoff;

pub use points::ConfigPoint;
pub use throughput::render_throughput;
pub use tradeoff::render_tradeoff;

use std::path::Path;

use pipesched_charts::Error;

/// The error for a chart given no configurations.
fn no_points(path: &Path) -> Error {
    Error::Empty { path: path.to_path_buf(), what: "configurations" }
}
