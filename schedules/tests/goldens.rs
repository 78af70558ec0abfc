//! Golden makespans, steady periods and memory peaks from the issue tracker's acceptance list.
//! Time starts at 0; one synchronous step; costs per rank (DESIGN.md).

use pipesched_schedules::{simulate, CostModel, Kind, StageCost, StageCosts, Stats};

fn stats(kind: Kind, p: usize, m: usize, cost: (f64, f64, f64), c: f64) -> Stats {
    let s = kind.generate(p, kind.default_chunks(), m).unwrap();
    Stats::of(&simulate(&s, &CostModel::per_rank(cost.0, cost.1, cost.2).with_latency(c)).unwrap())
}

#[test]
fn unit_costs_p4_m8() {
    let u = (1.0, 1.0, 1.0);
    assert_eq!(stats(Kind::OneFOneB, 4, 8, u, 0.0).makespan, 33.0);
    assert_eq!(stats(Kind::ZbH1, 4, 8, u, 0.0).makespan, 27.0);
    assert_eq!(stats(Kind::ZbH2, 4, 8, u, 0.0).makespan, 27.0);
    assert_eq!(stats(Kind::Interleaved, 4, 8, u, 0.0).makespan, 28.5);
    assert_eq!(stats(Kind::ZbH2, 4, 8, u, 0.0).steady_period, 24.0);
}

#[test]
fn p8_m24_f5_i6_w4() {
    let c = (5.0, 6.0, 4.0);
    assert_eq!(stats(Kind::OneFOneB, 8, 24, c, 0.0).makespan, 465.0);
    assert_eq!(stats(Kind::ZbH1, 8, 24, c, 0.0).makespan, 409.0);
    assert_eq!(stats(Kind::ZbH2, 8, 24, c, 0.0).makespan, 395.0);
    assert_eq!(stats(Kind::Interleaved, 8, 24, c, 0.0).makespan, 412.5);
    assert_eq!(stats(Kind::ZbH2, 8, 24, c, 0.0).steady_period, 381.0);
}

#[test]
fn p8_m24_f5_i6_w4_with_latency_1() {
    let c = (5.0, 6.0, 4.0);
    assert_eq!(stats(Kind::OneFOneB, 8, 24, c, 1.0).makespan, 519.0);
    assert_eq!(stats(Kind::ZbH1, 8, 24, c, 1.0).makespan, 437.0);
    assert_eq!(stats(Kind::ZbH2, 8, 24, c, 1.0).makespan, 402.0);
    assert_eq!(stats(Kind::Interleaved, 8, 24, c, 1.0).makespan, 442.5);
    assert_eq!(stats(Kind::ZbH2, 8, 24, c, 1.0).steady_period, 395.0);
}

/// Peak bytes per rank with M_act = `act` and M_w = `wb` < M_act, no static bytes.
fn peaks(kind: Kind, p: usize, m: usize, act: u64, wb: u64) -> Vec<u64> {
    let s = kind.generate(p, 1, m).unwrap();
    let cost =
        StageCost { f: 1.0, i: 1.0, w: 1.0, r: None, act_bytes: act, w_bytes: wb, ..StageCost::times(1.0, 1.0, 1.0) };
    let model = CostModel {
        costs: StageCosts::PerRank(cost),
        latency: 0.0,
        bandwidth: None,
        static_bytes: vec![],
        host_link: None,
        time_unit: "units".into(),
    };
    Stats::of(&simulate(&s, &model).unwrap()).peak_bytes
}

#[test]
fn memory_peaks_match_the_papers() {
    let (act, wb) = (1000u64, 300u64);
    for p in 1..=8usize {
        for m in [2 * p, 3 * p + 1, 4 * p] {
            let gpipe = peaks(Kind::GPipe, p, m, act, wb);
            let ofob = peaks(Kind::OneFOneB, p, m, act, wb);
            let h1 = peaks(Kind::ZbH1, p, m, act, wb);
            let h2 = peaks(Kind::ZbH2, p, m, act, wb);
            for r in 0..p {
                let r64 = r as u64;
                let p64 = p as u64;
                assert_eq!(gpipe[r], m as u64 * act, "gpipe p={p} m={m} r={r}");
                assert_eq!(ofob[r], (p64 - r64) * act, "1f1b p={p} m={m} r={r}");
                assert_eq!(h1[r], (p64 - r64) * act + r64 * wb, "zb-h1 p={p} m={m} r={r}");
                assert_eq!(h2[r], (2 * p64 - 2 * r64 - 1) * act + 2 * r64 * wb, "zb-h2 p={p} m={m} r={r}");
            }
        }
    }
}

#[test]
fn static_bytes_and_recompute_bytes_add_up() {
    // 1F1B p=2, m=4, with R before each B: rank 0 holds 2 micro-batches of kept bytes, and at
    // the first B also that micro-batch's re-created bytes.
    let mut s = Kind::OneFOneB.generate(2, 1, 4).unwrap();
    for lane in &mut s.lanes {
        let mut with_r = Vec::new();
        for a in lane.iter() {
            if a.op == pipesched_schedules::Op::B {
                with_r.push(pipesched_schedules::Action::new(a.stage(), pipesched_schedules::Op::R, a.mb()));
            }
            with_r.push(*a);
        }
        *lane = with_r.into();
    }
    pipesched_schedules::validate(&s).unwrap();
    let cost = StageCost {
        f: 1.0,
        i: 1.0,
        w: 1.0,
        r: Some(0.5),
        act_bytes: 10,
        recompute_bytes: 90,
        ..StageCost::times(1.0, 1.0, 1.0)
    };
    let model = CostModel {
        costs: StageCosts::PerRank(cost),
        latency: 0.0,
        bandwidth: None,
        static_bytes: vec![7, 5],
        host_link: None,
        time_unit: "ms".into(),
    };
    let st = Stats::of(&simulate(&s, &model).unwrap());
    assert_eq!(st.peak_bytes, vec![7 + 2 * 10 + 90, 5 + 10 + 90]);
    assert_eq!(st.recompute, vec![2.0, 2.0]);
    // t_B = t_I + t_W = 2 and t_R = 0.5 per micro-batch: busy = m (1 + 0.5 + 2) per rank.
    assert_eq!(st.busy, vec![14.0, 14.0]);
}
