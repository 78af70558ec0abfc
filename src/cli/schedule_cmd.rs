//! `pipesched schedule`: print a schedule as a grid, CSV or JSON. `-s auto` takes the costs it is
//! built for from `--costs` and `--mem`, or `--costs-file`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use pipesched::args::{read_text, CostArgs, ScheduleArgs};
use pipesched::cost_file::CostFile;
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
    /// The costs `-s auto` is built for.
    #[command(flatten)]
    costs: CostArgs,
    /// For -s auto: read the costs from a JSON file instead, as `profile` writes it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["costs", "mem", "bandwidth"])]
    costs_file: Option<PathBuf>,
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
    let costs = if args.pick.is_auto() {
        Some(match &args.costs_file {
            Some(path) => {
                let text = read_text(path, 64 << 20, "cannot read the cost model")?;
                CostFile::from_json(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?.model
            }
            None => args.costs.model()?,
        })
    } else if args.costs.given() || args.costs_file.is_some() {
        return Err(Error::Usage(
            "--costs, --mem, --bandwidth and --costs-file are what -s auto is built for; `schedule` prints other schedules without them".into(),
        ));
    } else {
        None
    };
    let s = args.pick.schedule(costs.as_ref())?;
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
