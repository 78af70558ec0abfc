//! `pipesched schedule`: print a schedule as a grid, CSV or JSON.

use clap::{Args, ValueEnum};

use pipesched::args::ScheduleArgs;
use pipesched::Result;
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

/// Prints the schedule.
pub fn run(args: PrintArgs) -> Result<()> {
    let s = args.pick.schedule()?;
    match args.format {
        Format::Grid => print!("{}", s.grid()),
        Format::Csv => print!("{}", to_csv(&s)?),
        Format::Json => println!("{}", serde_json::to_string_pretty(&s).expect("a schedule always serialises")),
    }
    Ok(())
}
