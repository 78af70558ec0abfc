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
    println!("cpu: {cores} cores (one worker thread per rank; stages compute single-threaded)");
    for line in probe().lines() {
        println!("{line}");
    }
    Ok(())
}
