//! The closed forms of DESIGN.md hold exactly in the simulator (uniform per-rank costs, c = 0,
//! W ≤ min(F, I)), and every generator validates and finishes for all small p, v, m; stats taken
//! as the simulation runs are those of its trace.
//!
//! Costs are small integers (halves after splitting over v = 2 chunks), so every sum is exact in
//! f64 and the comparisons are `==`.

use pipesched_schedules::{
    simulate, simulate_stats, validate, with_recompute, CostModel, Kind, StageCost, StageCosts, Stats,
};
use proptest::prelude::*;

/// The m values the closed forms are checked at: p, 2p, 4p, and one that is not a multiple of p.
fn microbatches(p: usize) -> Vec<usize> {
    let mut ms = vec![p, 2 * p, 4 * p];
    if p > 1 {
        ms.push(2 * p + 1);
    }
    ms
}

/// Integer costs with W ≤ min(F, I): the regime the Zero Bubble paper's derivation assumes.
fn costs() -> impl Strategy<Value = (f64, f64, f64)> {
    (1u32..=8, 1u32..=8)
        .prop_flat_map(|(f, i)| (Just(f), Just(i), 0..=f.min(i)))
        .prop_map(|(f, i, w)| (f as f64, i as f64, w as f64))
}

fn run(kind: Kind, p: usize, m: usize, (f, i, w): (f64, f64, f64)) -> Stats {
    let s = kind.generate(p, kind.default_chunks(), m).unwrap();
    Stats::of(&simulate(&s, &CostModel::per_rank(f, i, w)).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn one_f_one_b_and_gpipe_bubble_is_p_minus_1_full_steps(p in 1usize..=16, c in costs()) {
        let (f, i, w) = c;
        for m in microbatches(p) {
            for kind in [Kind::OneFOneB, Kind::GPipe] {
                let st = run(kind, p, m, c);
                let work = m as f64 * (f + i + w);
                prop_assert_eq!(st.makespan - work, (p - 1) as f64 * (f + i + w), "{} p={} m={}", kind, p, m);
                if st.makespan > 0.0 {
                    prop_assert!((st.bubble_rate - (st.makespan - work) / st.makespan).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn zb_h1_bubble_is_p_minus_1_times_f_plus_i_minus_w(p in 1usize..=16, c in costs()) {
        let (f, i, w) = c;
        for m in microbatches(p) {
            let st = run(Kind::ZbH1, p, m, c);
            prop_assert_eq!(st.makespan - m as f64 * (f + i + w), (p - 1) as f64 * (f + i - w), "p={} m={}", p, m);
        }
    }

    #[test]
    fn interleaved_bubble_shrinks_by_v(p in 1usize..=16, c in costs()) {
        let (f, i, w) = c;
        for m in [p, 2 * p, 4 * p] {
            let st = run(Kind::Interleaved, p, m, c);
            prop_assert_eq!(st.makespan - m as f64 * (f + i + w), (p - 1) as f64 * (f + i + w) / 2.0, "p={} m={}", p, m);
        }
    }

    #[test]
    fn zb_h2_steady_period_has_bubble_p_minus_1_times_f_plus_i_minus_2w(p in 1usize..=16, c in costs()) {
        let (f, i, w) = c;
        for m in [2 * p, 4 * p, 2 * p + 1, 3 * p + 1] {
            let st = run(Kind::ZbH2, p, m, c);
            let work = m as f64 * (f + i + w);
            prop_assert_eq!(st.steady_period - work, (p - 1) as f64 * (f + i - 2.0 * w), "p={} m={}", p, m);
            prop_assert!(st.makespan >= st.steady_period);
        }
    }

    #[test]
    fn every_generator_validates_and_finishes(p in 1usize..=12, v in 2usize..=4, m in 1usize..=40, f in 1u32..4, i in 1u32..4, w in 0u32..4) {
        for kind in Kind::ALL {
            let v = if kind.takes_chunks() { v } else { kind.default_chunks() };
            let Ok(s) = kind.generate(p, v, m) else {
                // Only the documented refusals: interleaved needs p | m, ZB-H2 and DualPipeV
                // need m ≥ 2p, interleaved-zb m in max(1, m div p) equal rounds.
                prop_assert!(
                    (kind == Kind::Interleaved && m % p != 0)
                        || ((kind == Kind::ZbH2 || kind == Kind::DualPipeV) && m < 2 * p)
                        || (kind == Kind::InterleavedZb && m % (m / p).max(1) != 0)
                );
                continue;
            };
            prop_assert!(validate(&s).is_ok(), "{} p={} v={} m={}: {:?}", kind, p, v, m, validate(&s).err());
            let trace = simulate(&s, &CostModel::per_rank(f as f64, i as f64, w as f64)).unwrap();
            let spans = trace.num_spans();
            prop_assert_eq!(spans, s.num_actions());
            let per_mb = if s.splits_backward() { 3 } else { 2 };
            prop_assert_eq!(s.num_actions(), per_mb * s.stages() * m);
        }
    }

    #[test]
    fn stats_taken_while_simulating_are_the_traces(p in 1usize..=6, m in 1usize..=16, seed in 0u64..1000, latency in 0u32..3, bandwidth in prop::option::of(prop::sample::select(vec![0.5, 4.0, 64.0])), recompute in any::<bool>()) {
        // Per-stage costs with bytes of every kind, from a small generator of the seed, so
        // stages differ in time and memory.
        let mut x = seed;
        let mut next = move |n: u64| { x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (x >> 33) % n };
        for kind in Kind::ALL {
            let Ok(s) = kind.generate(p, kind.default_chunks(), m) else { continue };
            let s = if recompute { with_recompute(&s, &vec![true; s.stages()]).unwrap() } else { s };
            let stages = (0..s.stages())
                .map(|_| StageCost {
                    f: 1.0 + next(4) as f64,
                    i: 1.0 + next(4) as f64,
                    w: next(3) as f64 * 0.5,
                    r: if next(2) == 0 { None } else { Some(0.25 * next(8) as f64) },
                    act_bytes: next(100),
                    recompute_bytes: next(50),
                    w_bytes: next(80),
                    fwd_msg_bytes: next(30),
                    bwd_msg_bytes: next(30),
                })
                .collect();
            let mut costs = CostModel::per_rank(1.0, 1.0, 1.0).with_latency(latency as f64 * 0.5);
            costs.costs = StageCosts::Stages(stages);
            costs.static_bytes = vec![1000];
            costs.bandwidth = bandwidth;
            let traced = Stats::of(&simulate(&s, &costs).unwrap());
            let direct = simulate_stats(&s, &costs).unwrap();
            prop_assert_eq!(&direct, &traced, "{} p={} m={}", kind, p, m);
            // Bitwise, not just equal as floats: every number of both.
            let bits = |s: &Stats| {
                let mut v = vec![s.makespan, s.ideal, s.bubble_rate, s.steady_period, s.steady_bubble_rate];
                v.extend(s.busy.iter().chain(&s.idle).chain(&s.recompute));
                v.into_iter().map(f64::to_bits).collect::<Vec<u64>>()
            };
            prop_assert_eq!(bits(&direct), bits(&traced));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A forward-only pass streams the micro-batches through: `(m + p − 1)·F`, plus `(p − 1)·c`
    /// of latency, whatever the backward costs (it has none); a rank's peak is its static bytes
    /// and the activations its forward holds while it runs, the same for every m.
    #[test]
    fn forward_only_makespan_is_m_plus_p_minus_1_forwards(
        p in 1usize..=16, m in 1usize..=40, f in 1u32..=8, c in 0u32..=3, act in 0u64..=1000,
    ) {
        let s = Kind::Forward.generate(p, 1, m).unwrap();
        let (f, c) = (f as f64, c as f64 / 2.0);
        let stage = StageCost { act_bytes: act, fwd_msg_bytes: act / 2, ..StageCost::times(f, 7.0, 3.0) };
        let costs = CostModel {
            costs: StageCosts::Stages(vec![stage; p]),
            static_bytes: (0..p as u64).map(|r| 10 * r).collect(),
            ..CostModel::per_rank(f, 7.0, 3.0).with_latency(c)
        };
        let trace = simulate(&s, &costs).unwrap();
        let stats = Stats::of(&trace);
        prop_assert_eq!(stats.makespan, (m + p - 1) as f64 * f + (p - 1) as f64 * c);
        for (r, rank) in trace.ranks.iter().enumerate() {
            prop_assert_eq!(rank.peak_held_bytes(), 10 * r as u64 + act);
            // Nothing outlives the pass: every rank ends holding its static bytes.
            prop_assert_eq!(rank.memory.last().unwrap().held(), 10 * r as u64);
        }
        prop_assert_eq!(simulate_stats(&s, &costs).unwrap(), stats);
    }
}
