//! `pipesched gallery`: regenerates the chart gallery — timeline + memory for each of the five
//! schedules at p=4, m=8 (interleaved with v=2) under unequal costs, as SVG and PNG.

use std::path::PathBuf;

use clap::Args;

use pipesched::plot::render;
use pipesched::{flags, Error, Result};
use pipesched_schedules::{simulate, Kind, Stats};

/// Arguments of `pipesched gallery`.
#[derive(Debug, Args)]
pub struct GalleryArgs {
    /// Folder to write the charts into.
    #[arg(long, default_value = "plots")]
    out: PathBuf,
    /// Per-rank op times in ms and cross-rank latency.
    #[arg(long, default_value = "F=1,I=1,W=0.5,C=0.05")]
    costs: String,
    /// Per-rank bytes.
    #[arg(long, default_value = "A=64MiB,W=16MiB,S=256MiB")]
    mem: String,
}

/// Writes `<schedule>.svg` and `<schedule>.png` for every schedule.
pub fn run(args: GalleryArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out).map_err(|source| Error::Io {
        action: "cannot create the gallery folder",
        path: args.out.clone(),
        source,
    })?;
    let mut costs = flags::cost_model(Some(&args.costs), Some(&args.mem))?;
    costs.time_unit = "ms".into();
    for kind in Kind::ALL {
        let schedule = kind.generate(4, kind.default_chunks(), 8)?;
        let trace = simulate(&schedule, &costs)?;
        for ext in ["svg", "png"] {
            let path = args.out.join(format!("{}.{ext}", kind.name()));
            render(&trace, &path)?;
            println!("wrote {}", path.display());
        }
        let st = Stats::of(&trace);
        println!("  {kind}: makespan {:.2} ms, bubble {:.1} %", st.makespan, 100.0 * st.bubble_rate);
    }
    Ok(())
}
