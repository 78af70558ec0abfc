//! `pipesched devices`: what stages can run on here — CPU cores, and the CUDA driver, GPUs,
//! cuBLAS and NVRTC, each found or not, with the reason.

use clap::Args;

use pipesched::Result;
use pipesched_stages::cuda::probe;

/// Arguments of `pipesched devices` (none).
#[derive(Debug, Args)]
pub struct DevicesArgs {}

/// Prints the devices.
pub fn run(_: DevicesArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    pipesched::sayln!("cpu: {cores} cores (one worker thread per rank; stages compute single-threaded)")?;
    let report = probe();
    for line in report.lines() {
        pipesched::sayln!("{line}")?;
    }
    let usable: Vec<String> =
        report.gpus.iter().filter(|g| report.check(g.ordinal).is_ok()).map(|g| format!("cuda:{}", g.ordinal)).collect();
    if usable.is_empty() {
        pipesched::sayln!("stages can run on: cpu")?;
    } else {
        pipesched::sayln!(
            "stages can run on: cpu, {} (--devices cuda, or one per rank: --devices cuda:0,cuda:0)",
            usable.join(", ")
        )?;
    }
    Ok(())
}
