//! `pipesched profile`: measure every stage of a model split over p ranks (v chunks each) and
//! write the cost model as JSON, for `pipesched simulate --costs-file`.

use std::path::PathBuf;

use clap::Args;

use pipesched::output::write_atomic;
use pipesched::{Error, Result};
use pipesched_schedules::{interleaved, one_f_one_b};

use super::model_args::ModelArgs;
use pipesched::workload::{profile_model, profile_synthetic, Workload};

/// Arguments of `pipesched profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Number of ranks.
    #[arg(short = 'p', long = "ranks", value_name = "P")]
    p: usize,
    /// Model chunks per rank (the model is split into p·v stages, loop placement).
    #[arg(long, short = 'v', default_value_t = 1, value_name = "V")]
    chunks: usize,
    /// Write the cost model here (default: print it).
    #[arg(short = 'o', long, value_name = "FILE.json")]
    output: Option<PathBuf>,
}

/// Profiles and writes the cost model.
pub fn run(args: ProfileArgs) -> Result<()> {
    if args.p == 0 || args.chunks == 0 {
        return Err(Error::Usage(format!(
            "-p and --chunks must be at least 1; got p={}, chunks={}",
            args.p, args.chunks
        )));
    }
    // Only where the stages sit matters to the profiler: any schedule with this placement will do.
    let base = if args.chunks == 1 { one_f_one_b(args.p, 1)? } else { interleaved(args.p, args.chunks, args.p)? };
    let costs = match args.model.spec().build(&base)? {
        Workload::Synthetic { mut stages, schedule, .. } => profile_synthetic(&schedule, &mut stages, 7)?,
        Workload::Real { mut model, schedule } => profile_model(&schedule, &mut model, 7)?,
    };
    let text = costs.to_json();
    match &args.output {
        Some(path) => {
            write_atomic(path, text.as_bytes())?;
            eprintln!("wrote {} ({} stages)", path.display(), args.p * args.chunks);
        }
        None => println!("{text}"),
    }
    Ok(())
}
