//! The `pipesched` command line: argument definitions and dispatch.

mod devices_cmd;
mod gallery_cmd;
mod infer_cmd;
mod memory_cmd;
mod plan_cmd;
mod profile_cmd;
mod run_cmd;
mod schedule_cmd;
mod simulate_cmd;

use clap::{Parser, Subcommand};

use pipesched::Result;

/// Pipeline-parallel training schedules: generate, validate, simulate, chart.
#[derive(Debug, Parser)]
#[command(name = "pipesched", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a schedule as a grid, PyTorch-compatible CSV, or JSON.
    Schedule(schedule_cmd::PrintArgs),
    /// Simulate one step of a schedule under a cost model: makespan, bubble, peak memory, charts.
    Simulate(simulate_cmd::SimulateArgs),
    /// Measure every stage of a model and write its cost model (JSON) for `simulate --costs-file`.
    #[command(after_long_help = pipesched_stages::MODEL_FILE_HELP)]
    Profile(profile_cmd::ProfileArgs),
    /// List the devices stages can run on, and why a GPU cannot be used if it cannot.
    Devices(devices_cmd::DevicesArgs),
    /// Draw the chart gallery: timeline + memory of every schedule at p=4, m=8 (`--out plots`
    /// redraws the README's).
    Gallery(gallery_cmd::GalleryArgs),
    /// Find the fastest plan (partition, schedule, micro-batches, per-stage recompute) whose
    /// predicted peak bytes fit a memory cap; write it for `run --plan`.
    #[command(after_long_help = pipesched_stages::MODEL_FILE_HELP)]
    Plan(plan_cmd::PlanArgs),
    /// Where a training step's bytes go on every rank (model states, activations, the simulated
    /// peak), from shapes alone.
    #[command(after_long_help = pipesched_stages::MODEL_FILE_HELP)]
    Memory(memory_cmd::MemoryArgs),
    /// Execute a schedule on real threads and compare the measured step with the simulated one.
    #[command(after_long_help = pipesched_stages::MODEL_FILE_HELP)]
    Run(run_cmd::RunArgs),
    /// Run held-out micro-batches forward only through the pipeline (inference, evaluation):
    /// losses, measured vs simulated makespan, throughput, peak bytes measured vs predicted.
    #[command(after_long_help = pipesched_stages::MODEL_FILE_HELP)]
    Infer(infer_cmd::InferArgs),
}

impl Cli {
    /// Runs the chosen command.
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::Schedule(a) => schedule_cmd::run(a),
            Command::Simulate(a) => simulate_cmd::run(a),
            Command::Run(a) => run_cmd::run(a),
            Command::Infer(a) => infer_cmd::run(a),
            Command::Gallery(a) => gallery_cmd::run(a),
            Command::Devices(a) => devices_cmd::run(a),
            Command::Profile(a) => profile_cmd::run(a),
            Command::Plan(a) => plan_cmd::run(a),
            Command::Memory(a) => memory_cmd::run(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
