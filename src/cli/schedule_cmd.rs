//! `pipesched schedule`: print a schedule as a grid, CSV or JSON.

use clap::{Args, ValueEnum};

use pipesched::args::ScheduleArgs;
use std::io::Write;

use pipesched::{Error, Result};
use pipesched_schedules::csv_lines;

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

/// The most cells (ranks × ticks) a grid is drawn with: larger ones cannot be read on a screen.
const MAX_GRID_CELLS: u64 = 1_000_000;

/// Prints the schedule.
pub fn run(args: PrintArgs) -> Result<()> {
    if let (Format::Grid, Some(n)) = (args.format, args.pick.planned_grid_cells()) {
        if n > MAX_GRID_CELLS {
            return Err(Error::Usage(format!(
                "a grid of up to {n} cells (ranks × ticks) is too large to read (the limit is {MAX_GRID_CELLS}); print it with --format csv or --format json, or choose a smaller -p or -m"
            )));
        }
    }
    let s = args.pick.schedule()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match args.format {
        Format::Grid => out.write_all(s.grid().as_bytes()),
        Format::Csv => csv_lines(&s)?.try_for_each(|line| out.write_all(line.as_bytes())),
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
