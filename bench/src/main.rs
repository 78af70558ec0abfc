//! `pipesched-bench`: compares schedules on one pipeline and prints a Markdown table —
//! makespan, bubble rate, steady-state bubble, peak bytes — from the cost-model simulator.

use clap::Parser;

use pipesched::{flags, units, Error, Result};
use pipesched_schedules::{simulate, Kind, Stats};

/// Compare pipeline schedules.
#[derive(Debug, Parser)]
#[command(name = "pipesched-bench", version, about)]
struct Args {
    /// Number of ranks.
    #[arg(short = 'p', long = "ranks", default_value_t = 4)]
    p: usize,
    /// Number of micro-batches.
    #[arg(short = 'm', long = "microbatches", default_value_t = 8)]
    m: usize,
    /// Chunks per rank for interleaved.
    #[arg(long, short = 'v', default_value_t = 2)]
    chunks: usize,
    /// Comma-separated schedules to compare.
    #[arg(long, default_value = "gpipe,1f1b,interleaved,zb-h1,zb-h2")]
    schedules: String,
    /// Per-rank op times and latency (see `pipesched simulate --help`).
    #[arg(long, default_value = "F=1,I=1,W=0.5,C=0.05")]
    costs: String,
    /// Per-rank bytes (see `pipesched simulate --help`).
    #[arg(long, default_value = "A=64MiB,W=16MiB,S=1GiB")]
    mem: String,
}

fn run(args: Args) -> Result<()> {
    if args.p == 0 || args.m == 0 || args.chunks == 0 {
        return Err(Error::Usage(format!(
            "-p, -m and --chunks must be at least 1; got p={}, m={}, chunks={}",
            args.p, args.m, args.chunks
        )));
    }
    let costs = flags::cost_model(Some(&args.costs), Some(&args.mem))?;
    let kinds = args.schedules.split(',').map(|s| s.parse::<Kind>()).collect::<std::result::Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    for kind in kinds {
        let v = if kind == Kind::Interleaved { args.chunks } else { 1 };
        let s = kind.generate(args.p, v, args.m)?;
        rows.push((kind, v, Stats::of(&simulate(&s, &costs)?)));
    }
    let best = rows.iter().map(|r| r.2.makespan).fold(f64::INFINITY, f64::min);
    println!("Simulated, p={} m={}, per-rank costs {} and bytes {}\n", args.p, args.m, args.costs, args.mem);
    println!("| schedule | v | makespan | bubble | steady period | steady bubble | peak bytes rank 0 | peak bytes max | speed vs best |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (kind, v, st) in &rows {
        let max_peak = st.peak_bytes.iter().copied().max().unwrap_or(0);
        println!(
            "| {kind} | {v} | {:.2} | {:.1} % | {:.2} | {:.1} % | {} | {} | {:.3} |",
            st.makespan,
            100.0 * st.bubble_rate,
            st.steady_period,
            100.0 * st.steady_bubble_rate,
            units::bytes(st.peak_bytes[0]),
            units::bytes(max_peak),
            best / st.makespan
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
