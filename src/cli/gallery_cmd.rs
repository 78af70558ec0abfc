//! `pipesched gallery`: the chart gallery — timeline + memory for each of the eleven schedules at
//! p=4, m=8 (interleaved, interleaved-zb, ZB-V, looped BFS, V-Half, V-Min and DualPipeV with
//! v=2) under unequal costs, as SVG and PNG. `--out plots` redraws the charts the README shows.

use clap::Args;

use pipesched::args::{CostArgs, OutArgs};
use pipesched::plot::render;
use pipesched::Result;
use pipesched_schedules::{simulate, Kind, Stats};

/// Arguments of `pipesched gallery`.
#[derive(Debug, Args)]
pub struct GalleryArgs {
    /// The gallery's costs (default F=1ms,I=1ms,W=0.5ms,C=0.05ms and
    /// A=64MiB,W=16MiB,S=256MiB,M=16MiB, the README's).
    #[command(flatten)]
    costs: CostArgs,
    #[command(flatten)]
    out: OutArgs,
}

/// Writes `<schedule>.svg` and `<schedule>.png` for every schedule.
pub fn run(mut args: GalleryArgs) -> Result<()> {
    let dir = args.out.prepare()?;
    if args.costs.costs.is_none() {
        args.costs.costs = Some("F=1ms,I=1ms,W=0.5ms,C=0.05ms".parse().expect("the default costs parse"));
    }
    if args.costs.mem.is_none() {
        args.costs.mem = Some("A=64MiB,W=16MiB,S=256MiB,M=16MiB".parse().expect("the default bytes parse"));
    }
    let costs = args.costs.model()?;
    for kind in Kind::ALL {
        let schedule = kind.generate(4, kind.default_chunks(), 8)?;
        let trace = simulate(&schedule, &costs)?;
        for ext in ["svg", "png"] {
            let path = dir.join(format!("{}.{ext}", kind.name()));
            render(&trace, &path)?;
            pipesched::sayln!("wrote {}", path.display())?;
        }
        let st = Stats::of(&trace);
        pipesched::sayln!(
            "  {kind}: makespan {:.2} {}, bubble {:.1} %",
            st.makespan,
            costs.time_unit,
            100.0 * st.bubble_rate
        )?;
    }
    Ok(())
}
