//! `auto` for small p and m under random costs and limits: it validates, finishes in the
//! simulator, never holds more activation bytes than the limit, and is never slower than the
//! handcrafted schedules that fit the same limit — 1F1B (whenever the limit holds p micro-batches)
//! and ZB-H1 — nor, when minimising the steady period, than ZB-H2.

use pipesched_schedules::{
    auto, one_f_one_b, simulate_stats, validate, zb_h1, zb_h2, CostModel, Objective, Schedule, StageCost, StageCosts,
    Stats,
};
use proptest::prelude::*;

/// Per-rank times, latency `c`, `act` bytes kept by `F` and `keep` from `I` until `W`, and
/// static bytes that the limit does not count.
fn model(t: (f64, f64, f64), c: f64, act: u64, keep: u64) -> CostModel {
    let (f, i, w) = t;
    let mut model = CostModel::per_rank(f, i, w).with_latency(c);
    model.costs = StageCosts::PerRank(StageCost { act_bytes: act, w_bytes: keep, ..StageCost::times(f, i, w) });
    model.static_bytes = vec![1000];
    model
}

fn stats(s: &Schedule, costs: &CostModel) -> Stats {
    simulate_stats(s, costs).unwrap()
}

/// The most activation bytes a rank of `s` holds under `costs` (static bytes are 1000).
fn activations(st: &Stats) -> u64 {
    st.peak_held_bytes.iter().max().unwrap() - 1000
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn validates_fits_and_beats_the_handcrafted_ones(
        p in 1usize..=5,
        m in 1usize..=12,
        t in (0u32..=6, 0u32..=6, 0u32..=6),
        c in prop_oneof![Just(0.0), Just(0.5), Just(2.0)],
        act in 1u64..=8,
        keep in 0u64..=10,
        extra in 0u64..=40,
        steady in any::<bool>(),
    ) {
        let t = (f64::from(t.0), f64::from(t.1), f64::from(t.2));
        let costs = model(t, c, act, keep);
        let limit = act.max(keep) + extra;
        let objective = if steady { Objective::SteadyPeriod } else { Objective::Makespan };
        let s = auto(p, m, &costs, limit, objective).unwrap();
        validate(&s).unwrap();
        prop_assert_eq!(s.num_actions(), 3 * p * m);
        let st = stats(&s, &costs);
        prop_assert!(activations(&st) <= limit, "{} > {}", activations(&st), limit);
        let key = |st: &Stats| if steady { st.steady_period } else { st.makespan };
        let ours = key(&st);
        let tol = 1e-9 * ours.max(1.0);
        if limit >= p as u64 * act.max(keep) {
            let base = stats(&one_f_one_b(p, m).unwrap(), &costs);
            if !steady {
                prop_assert!(ours <= base.makespan + tol, "auto {} > 1f1b {}", ours, base.makespan);
            }
        }
        let h1 = stats(&zb_h1(p, m).unwrap(), &costs);
        if activations(&h1) <= limit {
            prop_assert!(ours <= key(&h1) + tol, "auto {} > zb-h1 {}", ours, key(&h1));
        }
        if m >= 2 * p {
            let h2 = stats(&zb_h2(p, m).unwrap(), &costs);
            if activations(&h2) <= limit {
                prop_assert!(ours <= key(&h2) + tol, "auto {} > zb-h2 {}", ours, key(&h2));
            }
        }
    }

    #[test]
    fn a_limit_below_one_microbatch_is_refused(p in 1usize..=4, m in 1usize..=6, act in 1u64..=8, keep in 0u64..=10) {
        let costs = model((1.0, 1.0, 1.0), 0.0, act, keep);
        let need = act.max(keep);
        let e = auto(p, m, &costs, need - 1, Objective::Makespan).unwrap_err().to_string();
        prop_assert!(e.contains(&format!("at least {need} bytes")), "{}", e);
    }
}

#[test]
fn per_stage_costs_and_bandwidth_are_scheduled_too() {
    let stage = |f: f64, act: u64| StageCost {
        act_bytes: act,
        w_bytes: act / 2,
        fwd_msg_bytes: 64,
        bwd_msg_bytes: 64,
        ..StageCost::times(f, f, f / 2.0)
    };
    let mut costs = CostModel::per_rank(1.0, 1.0, 1.0).with_latency(0.1).with_bandwidth(128.0);
    costs.costs = StageCosts::Stages(vec![stage(1.0, 10), stage(2.0, 20), stage(1.5, 4), stage(1.0, 8)]);
    let s = auto(4, 10, &costs, 60, Objective::Makespan).unwrap();
    validate(&s).unwrap();
    let st = stats(&s, &costs);
    assert!(st.peak_held_bytes.iter().all(|&b| b <= 60), "{:?}", st.peak_held_bytes);
    assert!(st.makespan <= stats(&one_f_one_b(4, 10).unwrap(), &costs).makespan);
}
