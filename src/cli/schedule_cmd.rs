//! `pipesched schedule`: print a schedule as a grid, CSV or JSON.

use clap::{Args, ValueEnum};

use pipesched::args::ScheduleArgs;
use std::io::Write;

use pipesched::{Error, Result};
use pipesched_schedules::to_csv;

/// Output formats of `pipesched schedule`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// One row per rank on a unit clock, `.` for idle.
    Grid,
    /// PyTorch pipelining's compute-only CSV.
    Csv,
    /// The schedule as JSON.
    Json,
}

/// Arguments of `pipesched schedule`.
#[derive(Debug, Args)]
pub struct PrintArgs {
    #[command(flatten)]
    pick: ScheduleArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "grid")]
    format: Format,
}

/// The most actions a grid is drawn with: wider grids cannot be read on a screen.
const MAX_GRID_ACTIONS: u64 = 100_000;

/// Prints the schedule.
pub fn run(args: PrintArgs) -> Result<()> {
    if let (Format::Grid, Some(n)) = (args.format, args.pick.planned_actions()) {
        if n > MAX_GRID_ACTIONS {
            return Err(Error::Usage(format!(
                "a grid of {n} actions is too large to read (the limit is {MAX_GRID_ACTIONS}); print it with --format csv or --format json, or choose a smaller -p or -m"
            )));
        }
    }
    let s = args.pick.schedule()?;
    let mut out = std::io::stdout().lock();
    let written = match args.format {
        Format::Grid => out.write_all(s.grid().as_bytes()),
        Format::Csv => out.write_all(to_csv(&s)?.as_bytes()),
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &s).map_err(std::io::Error::from).and_then(|()| writeln!(out))
        }
    };
    // A closed pipe (`| head`) is not an error of ours.
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Io { action: "cannot write the schedule to", path: "standard output".into(), source: e })
        }
        _ => Ok(()),
    }
}
