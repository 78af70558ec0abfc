//! Simulator speed at scale: p = 64, m = 1024 (about 200k actions) for 1f1b and zb-h1.
//! Prints the median of several runs of generate, validate and simulate; asserts nothing.
//!
//! Run: `cargo bench -p pipesched-schedules --bench simulate`

use std::time::Instant;

use pipesched_schedules::{simulate, validate, CostModel, Kind, Stats};

fn median_ms(mut f: impl FnMut(), runs: usize) -> f64 {
    f(); // warm-up
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
    let (p, m) = (64, 1024);
    let costs = CostModel::per_rank(1.0, 1.0, 0.5).with_latency(0.01);
    println!("{:<12} {:>9} {:>14} {:>14} {:>14}", "schedule", "actions", "generate ms", "validate ms", "simulate ms");
    for kind in [Kind::OneFOneB, Kind::ZbH1, Kind::ZbH2, Kind::Interleaved] {
        let s = kind.generate(p, kind.default_chunks(), m).unwrap();
        let generate = median_ms(|| drop(kind.generate(p, kind.default_chunks(), m).unwrap()), 11);
        let check = median_ms(|| validate(&s).unwrap(), 11);
        let sim = median_ms(|| drop(simulate(&s, &costs).unwrap()), 11);
        let stats = Stats::of(&simulate(&s, &costs).unwrap());
        println!(
            "{:<12} {:>9} {:>14.2} {:>14.2} {:>14.2}   (makespan {:.1}, bubble {:.2}%)",
            kind.name(),
            s.num_actions(),
            generate,
            check,
            sim,
            stats.makespan,
            100.0 * stats.bubble_rate
        );
    }
}
