#[path = "../tests/table9/mod.rs"]
mod table9;
use pipesched_schedules::{auto, simulate, Objective};
fn main() {
    let idx: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let k: u64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let s = table9::SETTINGS[idx];
    let costs = s.costs();
    let a = auto(s.p, s.m, &costs, s.limit(k), Objective::SteadyPeriod).unwrap();
    let t = simulate(&a, &costs).unwrap();
    for (r, rk) in t.ranks.iter().enumerate() {
        let first = rk.start[0]; let last = *rk.end.last().unwrap();
        let busy: f64 = rk.start.iter().zip(&rk.end).map(|(a,b)| b-a).sum();
        let mut gaps = vec![];
        for x in 1..rk.start.len() { let g = rk.start[x]-rk.end[x-1]; if g > 1e-9 { gaps.push(format!("{}:{:.1}", rk.actions[x], g)); } }
        println!("rank {r}: first {first:.1} last {last:.1} span {:.1} idle {:.1} gaps {}", last-first, last-first-busy, gaps.join(" "));
    }
    for (r, lane) in a.lanes.iter().enumerate() { if r == 0 || r == s.p-1 { println!("{}", lane.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" ")); } }
}
