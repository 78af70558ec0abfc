//! A message between ranks takes `c + b/B` — latency plus its bytes over the bandwidth — and a
//! message between stages of one rank takes nothing, exactly: closed forms under a bandwidth,
//! a bandwidth that changes nothing where no bytes cross ranks, and the trace's transfers drawn
//! with the delays the simulation used.
//!
//! Costs, bytes and bandwidths are small powers of two, so every delay and sum is exact in f64
//! and the comparisons are `==`.

use pipesched_schedules::{
    simulate, simulate_stats, CostModel, Kind, Op, Schedule, StageCost, StageCosts, Stats, Transfers,
};

/// Per-rank costs F = 1, I = 2, W = 1 (B = 3), latency `c`, activations of `fwd` bytes and
/// gradients of `bwd` bytes, bandwidth `bw`.
fn model(c: f64, fwd: u64, bwd: u64, bw: Option<f64>) -> CostModel {
    CostModel {
        costs: StageCosts::PerRank(StageCost {
            fwd_msg_bytes: fwd,
            bwd_msg_bytes: bwd,
            ..StageCost::times(1.0, 2.0, 1.0)
        }),
        latency: c,
        bandwidth: bw,
        static_bytes: vec![],
        host_link: None,
        time_unit: "ms".into(),
    }
}

fn stats(s: &Schedule, costs: &CostModel) -> Stats {
    Stats::of(&simulate(s, costs).unwrap())
}

/// Every number of the stats, as bits.
fn bits(s: &Stats) -> Vec<u64> {
    let mut v = vec![s.makespan, s.ideal, s.bubble_rate, s.steady_period, s.steady_bubble_rate];
    v.extend(s.busy.iter().chain(&s.idle).chain(&s.recompute));
    v.into_iter().map(f64::to_bits).collect()
}

/// GPipe: the first micro-batch's forward crosses `p−1` links down and the last one's gradient
/// `p−1` links back, every other message lands while its consumer is busy. With activations of
/// 1024 bytes and gradients of 3072 at 512 bytes per ms and c = 0.5: d_a = 2.5, d_g = 6.5, and
/// makespan = (m + p − 1)(F + B) + (p − 1)(d_a + d_g).
#[test]
fn gpipe_makespan_adds_latency_and_bytes_over_bandwidth_per_link() {
    let (f, b, d_a, d_g) = (1.0, 3.0, 0.5 + 1024.0 / 512.0, 0.5 + 3072.0 / 512.0);
    for p in [2usize, 3, 4, 8] {
        for m in [1usize, 2, 5, 16] {
            let s = Kind::GPipe.generate(p, 1, m).unwrap();
            let st = stats(&s, &model(0.5, 1024, 3072, Some(512.0)));
            let (p1, mp) = ((p - 1) as f64, (m + p - 1) as f64);
            assert_eq!(st.makespan, mp * (f + b) + p1 * (d_a + d_g), "p={p} m={m}");
            // Without the bandwidth only the latency is left on each link.
            let latency_only = stats(&s, &model(0.5, 1024, 3072, None));
            assert_eq!(latency_only.makespan, mp * (f + b) + p1 * 1.0, "p={p} m={m}");
        }
    }
}

/// 1F1B at p = m = 2, worked by hand: rank 1 runs F0 at F + d_a, then B0, F1, B1; rank 0's B0
/// waits for B0's gradient (d_g after it), its B1 for B1's: 3(F + B) + d_a + d_g = 12 + 9.
#[test]
fn one_f_one_b_two_ranks_by_hand() {
    let s = Kind::OneFOneB.generate(2, 1, 2).unwrap();
    let trace = simulate(&s, &model(0.5, 1024, 3072, Some(512.0))).unwrap();
    let ends: Vec<Vec<f64>> = trace.ranks.iter().map(|r| r.end.clone()).collect();
    // Rank 0: F0, F1, B0, B1; rank 1: F0, B0, F1, B1 (d_a = 2.5, d_g = 6.5).
    // Rank 1: F0 [3.5, 4.5], B0 [4.5, 7.5], F1 [7.5, 8.5] (its activation came at 4.5), B1
    // [8.5, 11.5]; rank 0: B0 from 7.5 + 6.5 = 14, B1 from 11.5 + 6.5 = 18.
    assert_eq!(ends[0], [1.0, 2.0, 17.0, 21.0]);
    assert_eq!(ends[1], [4.5, 7.5, 8.5, 11.5]);
    assert_eq!(Stats::of(&trace).makespan, 21.0);
}

/// With the same bytes both ways, a bandwidth is a longer latency: `c + b/B` on every link, to
/// the bit, for every schedule (V placement and chunks included: a message within a rank is free
/// either way). Checked against the latency goldens: c = 0.5 plus 256 bytes at 512 per unit is
/// the latency 1 of `p8_m24_f5_i6_w4_with_latency_1`.
#[test]
fn equal_message_bytes_act_as_a_longer_latency() {
    for kind in Kind::ALL {
        for (p, m) in [(2, 4), (4, 8), (3, 7)] {
            let Ok(s) = kind.generate(p, kind.default_chunks(), m) else { continue };
            let with_bw = model(0.25, 4096, 4096, Some(1024.0));
            let as_latency = model(0.25 + 4096.0 / 1024.0, 4096, 4096, None);
            assert_eq!(bits(&stats(&s, &with_bw)), bits(&stats(&s, &as_latency)), "{kind} p={p} m={m}");
            assert_eq!(bits(&simulate_stats(&s, &with_bw).unwrap()), bits(&stats(&s, &as_latency)), "{kind} p={p}");
        }
    }
    let golden = |kind: Kind| {
        let s = kind.generate(8, 1, 24).unwrap();
        let mut costs = CostModel::per_rank(5.0, 6.0, 4.0).with_latency(0.5).with_bandwidth(512.0);
        costs.costs = StageCosts::PerRank(StageCost {
            fwd_msg_bytes: 256,
            bwd_msg_bytes: 256,
            ..StageCost::times(5.0, 6.0, 4.0)
        });
        stats(&s, &costs)
    };
    assert_eq!(golden(Kind::OneFOneB).makespan, 519.0);
    assert_eq!(golden(Kind::ZbH1).makespan, 437.0);
    assert_eq!(golden(Kind::ZbH2).makespan, 402.0);
    assert_eq!(golden(Kind::ZbH2).steady_period, 395.0);
}

/// ZB-V at p = 2 puts stages 1 and 2 on rank 1: however many bytes pass between them, at any
/// bandwidth, they take nothing, and the step is the one without a bandwidth. The same bytes on
/// a link between ranks (stage 0's activation) lengthen it.
#[test]
fn messages_within_a_rank_take_nothing() {
    let s = Kind::ZbV.generate(2, 2, 6).unwrap();
    assert_eq!((s.rank_of(1), s.rank_of(2)), (1, 1));
    let costs = |bytes: [(u64, u64); 4], bw: Option<f64>| CostModel {
        costs: StageCosts::Stages(
            bytes
                .iter()
                .map(|&(fwd, bwd)| StageCost {
                    fwd_msg_bytes: fwd,
                    bwd_msg_bytes: bwd,
                    ..StageCost::times(1.0, 1.0, 1.0)
                })
                .collect(),
        ),
        latency: 0.5,
        bandwidth: bw,
        static_bytes: vec![],
        host_link: None,
        time_unit: "ms".into(),
    };
    let within = [(0, 0), (1 << 30, 0), (0, 1 << 30), (0, 0)];
    let base = simulate(&s, &costs(within, None)).unwrap();
    let slow = simulate(&s, &costs(within, Some(1.0))).unwrap();
    for (a, b) in base.ranks.iter().zip(&slow.ranks) {
        assert_eq!((&a.start, &a.end), (&b.start, &b.end));
    }
    assert_eq!(base.transfers(), slow.transfers());
    let across = [(1 << 10, 0), (0, 0), (0, 0), (0, 0)];
    let late = Stats::of(&simulate(&s, &costs(across, Some(1.0))).unwrap()).makespan;
    assert!(late >= Stats::of(&base).makespan + 1024.0, "{late}");
    // One rank: nothing crosses, whatever the bandwidth.
    let one = Kind::OneFOneB.generate(1, 1, 4).unwrap();
    let lone = |bw| stats(&one, &model(0.5, 1 << 30, 1 << 30, bw));
    assert_eq!(bits(&lone(Some(1.0))), bits(&lone(None)));
}

/// Without a bandwidth the simulation is the latency-only one, and so is a bandwidth with no
/// message bytes to carry: the same spans, stats and transfers, to the bit.
#[test]
fn no_bandwidth_or_no_bytes_is_the_latency_only_step() {
    for kind in [Kind::GPipe, Kind::OneFOneB, Kind::ZbH1, Kind::ZbH2, Kind::Interleaved, Kind::ZbV] {
        let s = kind.generate(4, kind.default_chunks(), 8).unwrap();
        let latency_only = CostModel::per_rank(1.0, 2.0, 1.0).with_latency(0.375);
        let plain = simulate(&s, &latency_only).unwrap();
        assert_eq!(plain.transfers, Transfers::Latency(0.375), "{kind}");
        let no_bytes = simulate(&s, &latency_only.clone().with_bandwidth(1.0)).unwrap();
        assert_eq!(plain.ranks, no_bytes.ranks, "{kind}");
        assert_eq!(plain.transfers(), no_bytes.transfers(), "{kind}");
        let bytes_no_bw = simulate(&s, &model(0.375, 1 << 20, 1 << 20, None)).unwrap();
        assert_eq!(bits(&Stats::of(&plain)), bits(&Stats::of(&bytes_no_bw)), "{kind}");
    }
}

/// The trace of a step under a bandwidth draws each transfer arriving `c + b/B` after it left,
/// by what it carries, and every consumer starts no earlier than its transfer arrived (GPipe's
/// first forward on each rank at exactly that time).
#[test]
fn trace_transfers_arrive_with_their_own_delay() {
    let s = Kind::GPipe.generate(4, 1, 3).unwrap();
    let trace = simulate(&s, &model(0.5, 1024, 3072, Some(512.0))).unwrap();
    assert!(matches!(&trace.transfers, Transfers::Delays(d) if d.len() == 4));
    let back = serde_json::from_str::<pipesched_schedules::Trace>(&trace.to_json()).unwrap();
    assert_eq!(back.transfers(), trace.transfers());
    let transfers = trace.transfers();
    assert_eq!(transfers.len(), 2 * 3 * 3);
    let start = |rank: usize, a| {
        let r = &trace.ranks[rank];
        r.start[r.actions.iter().position(|x| *x == a).unwrap()]
    };
    for t in &transfers {
        let delay = if t.from.op == Op::F { 2.5 } else { 6.5 };
        assert_eq!(t.received - t.sent, delay, "{t:?}");
        assert!(start(t.to_rank, t.to) >= t.received, "{t:?}");
        if t.from.op == Op::F && t.from.mb() == 0 {
            assert_eq!(start(t.to_rank, t.to), t.received, "{t:?}");
        }
    }
}
