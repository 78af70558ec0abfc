//! Simulator speed at scale: p = 64, m = 1024 (about 200k actions; median of 11 runs) and
//! p = 1024, m = 8192 (17–25 million actions; median of 3) for every generator. Prints the time
//! to generate, validate, simulate (keeping the trace), compute the trace's stats, and simulate
//! for the stats alone (`simulate_stats`, what `pipesched simulate` runs without `--plot` or
//! `--trace`); asserts nothing.
//!
//! Run: `cargo bench -p pipesched-schedules --bench simulate`

use std::time::Instant;

use pipesched_schedules::{simulate, simulate_stats, validate, CostModel, Kind, Stats};

fn median_ms(mut f: impl FnMut(), runs: usize) -> f64 {
    if runs > 1 {
        f(); // warm-up
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let costs = CostModel::per_rank(1.0, 1.0, 0.5).with_latency(0.01);
    println!(
        "{:<12} {:>5} {:>5} {:>10} {:>12} {:>12} {:>12} {:>9} {:>15}",
        "schedule", "p", "m", "actions", "generate ms", "validate ms", "simulate ms", "stats ms", "sim-stats ms"
    );
    for (p, m, runs) in [(64, 1024, 11), (1024, 8192, 3)] {
        for kind in [Kind::OneFOneB, Kind::ZbH1, Kind::ZbH2, Kind::Interleaved] {
            let v = kind.default_chunks();
            let generate = median_ms(|| drop(kind.generate(p, v, m).unwrap()), runs);
            let s = kind.generate(p, v, m).unwrap();
            let check = median_ms(|| validate(&s).unwrap(), runs);
            let sim = median_ms(|| drop(simulate(&s, &costs).unwrap()), runs);
            let trace = simulate(&s, &costs).unwrap();
            let stats_ms = median_ms(|| drop(Stats::of(&trace)), runs);
            drop(trace);
            let sim_stats = median_ms(|| drop(simulate_stats(&s, &costs).unwrap()), runs);
            let stats = simulate_stats(&s, &costs).unwrap();
            println!(
                "{:<12} {:>5} {:>5} {:>10} {:>12.2} {:>12.2} {:>12.2} {:>9.2} {:>15.2}   (makespan {:.1}, bubble {:.2}%)",
                kind.name(),
                p,
                m,
                s.num_actions(),
                generate,
                check,
                sim,
                stats_ms,
                sim_stats,
                stats.makespan,
                100.0 * stats.bubble_rate
            );
        }
    }
}
