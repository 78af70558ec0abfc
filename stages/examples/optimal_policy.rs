//! Prints what the `optimal:BYTES` recompute policy does on each stage of a preset split into p
//! stages, at budgets from each stage's least to one that keeps everything — beside the fixed
//! policies, per micro-batch:
//!
//! ```text
//! cargo run -p pipesched-stages --release --example optimal_policy [PRESET] [P]
//! ```
//!
//! Columns: what `F` keeps, the most the micro-batch holds between ops (`F`'s bytes, or after
//! `R`), the most it holds inside `I` for `optimal`, and the layer forwards `R`/`I` run again.

use pipesched_stages::{ModelSpec, Partition, Policies, RecomputePolicy, Stage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "gpt-small".into());
    let p: usize = args.next().map_or(Ok(2), |a| a.parse())?;
    let model = ModelSpec::preset(&name)?;
    let rows = model.rows(model.batch).ok_or("rows overflow")?;
    let kib = |b: u64| format!("{:.1}", b as f64 / 1024.0);
    let plain = model.stage_specs(p, &Partition::Even, &Policies::all(RecomputePolicy::None))?;
    let probe = Stage::build_all(&model, &plain)?;
    println!("{name}, {p} stages, {rows} rows per micro-batch; KiB per micro-batch");
    println!("| stage | policy | F keeps | most between ops | most inside I | forwards re-run |");
    println!("|---|---|---:|---:|---:|---:|");
    for (k, stage) in probe.iter().enumerate() {
        let least = stage.optimal_least_budget(rows)?;
        let n = stage.layers().len();
        let mut policies: Vec<RecomputePolicy> =
            ["none", "every:2", "sqrt", "full"].iter().map(|t| t.parse()).collect::<Result<_, _>>()?;
        for (num, den) in [(1, 1), (5, 4), (3, 2), (2, 1), (3, 1), (6, 1)] {
            policies.push(RecomputePolicy::Optimal(least * num / den));
        }
        for policy in policies {
            let mut spec = plain[k].clone();
            spec.policy = policy;
            let mut s = Stage::new(&model, &spec)?;
            let b = s.predicted_bytes(rows);
            let (inside, forwards) = match policy {
                RecomputePolicy::Optimal(_) => {
                    let plan = s.optimal_plan(rows)?;
                    (kib(plan.peak()), plan.recomputed().len())
                }
                RecomputePolicy::None => ("".into(), 0),
                _ => ("".into(), n),
            };
            let recreated = if policy.drops() { b.recompute_bytes } else { 0 };
            let between = (b.act_bytes + recreated).max(b.w_bytes);
            println!("| {k} | {policy} | {} | {} | {inside} | {forwards} |", kib(b.act_bytes), kib(between));
        }
    }
    Ok(())
}
