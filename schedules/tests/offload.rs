//! Offload in the simulator: `O` and `L` take the stage's kept bytes over the host link, the
//! device peak falls by what was moved, and the host curve holds it instead.

use pipesched_schedules::{
    simulate, with_offload, CostModel, HostLink, Kind, Offload, Op, StageCost, StageCosts, Stats,
};

/// Uniform per-rank costs F = I = W = 1 keeping `act` bytes per micro-batch, static bytes 1000,
/// and a host link moving `act` bytes in one time unit.
fn model(act: u64) -> CostModel {
    CostModel {
        costs: StageCosts::PerRank(StageCost { act_bytes: act, ..StageCost::times(1.0, 1.0, 1.0) }),
        static_bytes: vec![1000],
        ..CostModel::per_rank(1.0, 1.0, 1.0)
    }
    .with_host_link(HostLink::new(act as f64, 0.0).unwrap())
}

#[test]
fn the_device_peak_falls_by_the_offloaded_bytes_and_the_host_holds_them() {
    let (p, m, act) = (4, 8, 100);
    for kind in [Kind::OneFOneB, Kind::GPipe, Kind::ZbH1] {
        let base = kind.generate(p, 1, m).unwrap();
        let plain = simulate(&base, &model(act)).unwrap();
        let offloaded = simulate(&with_offload(&base, &Offload::All).unwrap(), &model(act)).unwrap();
        for r in 0..p {
            let (before, after) = (&plain.ranks[r], &offloaded.ranks[r]);
            // Every micro-batch leaves the device right after its forward and comes back right
            // before its backward: one at a time is ever on the device.
            assert_eq!(after.peak_held_bytes(), 1000 + act, "{kind} rank {r}");
            let in_flight = (before.peak_held_bytes() - 1000) / act;
            assert_eq!(before.peak_held_bytes() - after.peak_held_bytes(), (in_flight - 1) * act, "{kind} rank {r}");
            assert!(plain.ranks[r].host.is_empty());
            // Nothing stays on the host after the step.
            assert_eq!(after.host.last().unwrap().bytes, 0, "{kind} rank {r}");
            // Each copy takes act / bandwidth = 1.
            for s in after.spans().filter(|s| s.action.op.is_transfer()) {
                assert_eq!(s.duration(), 1.0, "{kind} rank {r} {}", s.action);
            }
        }
        // 1F1B: rank r has p − r micro-batches in flight at its peak; with offload all but the
        // one being worked on wait on the host (and one more while a copy runs).
        if kind == Kind::OneFOneB {
            for r in 0..p {
                assert_eq!(plain.ranks[r].peak_held_bytes(), 1000 + (p - r) as u64 * act, "rank {r}");
            }
            assert_eq!(offloaded.ranks[0].peak_host_bytes(), p as u64 * act);
        }
        // Busy time grows by two copies per (stage, micro-batch).
        let busy =
            |t: &pipesched_schedules::Trace| t.ranks.iter().flat_map(|r| r.spans()).map(|s| s.duration()).sum::<f64>();
        assert_eq!(busy(&offloaded) - busy(&plain), (2 * p * m) as f64);
        let _ = Stats::of(&offloaded);
    }
}

#[test]
fn every_k_offloads_every_kth_microbatch() {
    let base = Kind::GPipe.generate(2, 1, 4).unwrap();
    let every2 = with_offload(&base, &Offload::Every(2.try_into().unwrap())).unwrap();
    let count = every2.actions().filter(|a| a.op == Op::O).count();
    assert_eq!(count, 2 * 2);
    let t = simulate(&every2, &model(100)).unwrap();
    // GPipe keeps all four micro-batches on stage 0 after its forwards; 0 and 2 are on the host,
    // and the peak comes when 0 is reloaded beside 1 and 3 (4 without offload).
    assert_eq!(t.ranks[0].peak_held_bytes(), 1000 + 3 * 100);
    assert_eq!(t.ranks[0].peak_host_bytes(), 2 * 100);
}

#[test]
fn offload_needs_a_host_link_and_bytes_to_move() {
    let s = with_offload(&Kind::OneFOneB.generate(2, 1, 2).unwrap(), &Offload::Stages(vec![1])).unwrap();
    let mut no_link = model(100);
    no_link.host_link = None;
    let e = simulate(&s, &no_link).unwrap_err().to_string();
    assert!(e.contains("no host link") && e.contains("--host-bandwidth"), "{e}");
    let nothing = CostModel::per_rank(1.0, 1.0, 1.0).with_host_link(HostLink::new(1.0, 0.0).unwrap());
    let e = simulate(&s, &nothing).unwrap_err().to_string();
    assert!(e.contains("stage 1 offloads, but keeps nothing"), "{e}");
    // A schedule without O or L needs no link.
    assert!(simulate(&Kind::OneFOneB.generate(2, 1, 2).unwrap(), &no_link).is_ok());
    let bad = r#"{"per_rank": {"f": 1, "i": 1, "w": 1}, "host_link": {"bandwidth": 0}}"#;
    let e = CostModel::from_json(bad).unwrap_err().to_string();
    assert!(e.contains("host link's bandwidth must be a finite number > 0"), "{e}");
}

#[test]
fn offload_round_trips_through_csv_and_json() {
    let s = with_offload(&Kind::ZbH1.generate(2, 1, 3).unwrap(), &Offload::All).unwrap();
    let back = pipesched_schedules::from_csv(&pipesched_schedules::to_csv(&s).unwrap(), &s.name).unwrap();
    assert_eq!(back.lanes, s.lanes);
    let m = model(64);
    assert_eq!(CostModel::from_json(&m.to_json()).unwrap(), m);
}
