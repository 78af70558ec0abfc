//! Prints `auto` next to the Zero Bubble paper's Table 5 on its 12 profiled settings (Table 9):
//! the bubble rate of `auto` under a limit of p micro-batches of activations (the paper's ZB-1p)
//! and of 2p (ZB-2p), by both of DESIGN.md's measures — the steady bubble rate, which is the
//! paper's (the longest span of a stage), with `auto` minimising the steady period, and the
//! bubble rate of one step from time 0, with `auto` minimising the makespan — and how long each
//! generation took. Run it in release: `cargo run --release -p pipesched-schedules --example
//! zero_bubble_table5`.

#[path = "../tests/table9/mod.rs"]
mod table9;

use std::time::Instant;

use pipesched_schedules::{auto, simulate_stats, Kind, Objective, Stats};

fn main() -> Result<(), pipesched_schedules::Error> {
    println!(
        "{:<6} {:>3} {:>4} | {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} | {:>8}",
        "model",
        "p",
        "m",
        "H1 pap",
        "H1 ours",
        "H2 pap",
        "H2 ours",
        "1p pap",
        "1p st",
        "2p pap",
        "2p st",
        "1p mk",
        "2p mk",
        "gen ms"
    );
    for s in table9::SETTINGS {
        let costs = s.costs();
        let stats = |kind: Kind| -> Result<Stats, pipesched_schedules::Error> {
            simulate_stats(&kind.generate(s.p, 1, s.m)?, &costs)
        };
        let (h1, h2) = (stats(Kind::ZbH1)?, stats(Kind::ZbH2)?);
        let mut slowest = 0.0f64;
        let mut rate = |k: u64, objective: Objective| -> Result<f64, pipesched_schedules::Error> {
            let t = Instant::now();
            let a = auto(s.p, s.m, &costs, s.limit(k), objective)?;
            slowest = slowest.max(t.elapsed().as_secs_f64() * 1e3);
            let st = simulate_stats(&a, &costs)?;
            Ok(match objective {
                Objective::SteadyPeriod => st.steady_bubble_rate,
                Objective::Makespan => st.bubble_rate,
            })
        };
        let (st1, st2) = (rate(1, Objective::SteadyPeriod)?, rate(2, Objective::SteadyPeriod)?);
        let (mk1, mk2) = (rate(1, Objective::Makespan)?, rate(2, Objective::Makespan)?);
        println!(
            "{:<6} {:>3} {:>4} | {:>7.4} {:>7.5} {:>7.4} {:>7.5} | {:>7.4} {:>7.5} {:>7.4} {:>7.5} | {:>7.5} {:>7.5} | {:>8.1}",
            s.model,
            s.p,
            s.m,
            s.zb_h1,
            h1.steady_bubble_rate,
            s.zb_h2,
            h2.steady_bubble_rate,
            s.zb_1p,
            st1,
            s.zb_2p,
            st2,
            mk1,
            mk2,
            slowest
        );
    }
    Ok(())
}
