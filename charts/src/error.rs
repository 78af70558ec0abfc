//! The one error type of the chart crate. Every message names the chart file, says what was
//! wrong and what to do; nothing here is recovered from inside the crate.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of `pipesched-charts`.
#[derive(Debug, Error)]
pub enum Error {
    /// The chart's file name ends in neither `.svg` nor `.png`.
    #[error("chart {}: unsupported file type; name the chart file with .svg or .png", path.display())]
    Format {
        /// The chart file.
        path: PathBuf,
    },

    /// The chart file (or the temporary file it is drawn into) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The chart file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The chart was given nothing to draw: no traces, no configurations, or no series.
    #[error("chart {}: no {what} to draw; give at least one", path.display())]
    Empty {
        /// The chart file.
        path: PathBuf,
        /// What was missing (`traces`, `configurations`, `series`).
        what: &'static str,
    },

    /// A series of a line chart cannot be drawn: it has no points, x and y values of different
    /// counts, a value that is NaN or infinite, or values spanning more than an `f64`.
    #[error("chart {}: series \"{label}\": {reason}", path.display())]
    Series {
        /// The chart file.
        path: PathBuf,
        /// The series' label.
        label: String,
        /// What is wrong with it, and what to do.
        reason: String,
    },

    /// Traces drawn on one time axis are in different time units.
    #[error(
        "chart {}: the traces share one time axis but \"{label}\" is in {unit} and the first in {first}; convert them to one unit",
        path.display()
    )]
    TimeUnits {
        /// The chart file.
        path: PathBuf,
        /// The label of the first trace in another unit.
        label: String,
        /// Its unit.
        unit: String,
        /// The first trace's unit.
        first: String,
    },

    /// Drawing failed: the embedded font could not be loaded, or the backend reported an error.
    #[error("chart {}: {reason}", path.display())]
    Draw {
        /// The chart file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Result of the chart crate.
pub type Result<T> = std::result::Result<T, Error>;
