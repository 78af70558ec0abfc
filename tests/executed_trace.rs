//! The executor's trace is honest: every action runs once, in lane order, never before its
//! inputs exist, and the ledger's peak bytes equal the simulator's prediction exactly (bytes are
//! deterministic even where times are not).

use std::time::Duration;

use pipesched::exec::{execute, ExecOptions};
use pipesched::synthetic::{SyntheticSpec, SyntheticStage};
use pipesched_schedules::{simulate, Kind, Stats, Trace};

fn run(kind: Kind, p: usize, m: usize) -> (Trace, Trace) {
    let s = kind.generate(p, kind.default_chunks(), m).unwrap();
    let spec = SyntheticSpec::parse("F=200us,I=200us,W=100us,mem=64KiB,wmem=16KiB,msg=4KiB").unwrap();
    let mut stages: Vec<SyntheticStage> = (0..s.stages()).map(|_| SyntheticStage::new(spec.clone())).collect();
    let measured = execute(&s, &mut stages, &ExecOptions { timeout: Duration::from_secs(60) }).unwrap();
    let simulated = simulate(&s, &spec.cost_model(s.stages())).unwrap();
    (measured, simulated)
}

#[test]
fn every_schedule_runs_in_order_with_the_predicted_peak_bytes() {
    for kind in Kind::ALL {
        for (p, m) in [(1, 2), (2, 4), (3, 6), (4, 8)] {
            let (measured, simulated) = run(kind, p, m);
            let s = kind.generate(p, kind.default_chunks(), m).unwrap();
            for (r, rank) in measured.ranks.iter().enumerate() {
                let ran: Vec<_> = rank.spans.iter().map(|sp| sp.action).collect();
                assert_eq!(ran, s.lanes[r], "{kind} p={p} m={m} rank {r} ran out of order");
                for w in rank.spans.windows(2) {
                    assert!(w[0].end <= w[1].start, "{kind}: overlapping spans on rank {r}");
                }
            }
            for t in &measured.transfers {
                let from_end = measured.ranks[t.from_rank].spans.iter().find(|sp| sp.action == t.from).unwrap().end;
                let to_start = measured.ranks[t.to_rank].spans.iter().find(|sp| sp.action == t.to).unwrap().start;
                assert!(
                    t.sent >= from_end - 1e-9 && to_start >= t.received - 1e-9 && t.received >= t.sent,
                    "{kind}: {t:?}"
                );
            }
            assert_eq!(Stats::of(&measured).peak_bytes, Stats::of(&simulated).peak_bytes, "{kind} p={p} m={m}");
            let cross = simulated.transfers.len();
            assert_eq!(measured.transfers.len(), cross, "{kind} p={p} m={m}: one transfer per cross-rank edge");
        }
    }
}

#[test]
fn split_backward_schedules_hold_w_bytes_between_i_and_w() {
    let (measured, _) = run(Kind::ZbH1, 2, 4);
    // On rank 1 the first W is deferred by one micro-batch: after 1I0 the rank holds 16 KiB for
    // it until 1W0.
    // ZB-H1: (p − r)·M_act + r·M_w.
    assert_eq!(Stats::of(&measured).peak_bytes, vec![2 * 65536, 65536 + 16384]);
}

#[test]
fn the_profiled_cost_model_predicts_the_measured_peak_bytes() {
    use pipesched::profile::{profile, ProfileOptions};
    for kind in Kind::ALL {
        let s = kind.generate(2, kind.default_chunks(), 4).unwrap();
        let spec = SyntheticSpec::parse("F=100us,I=100us,W=50us,mem=48KiB,wmem=8KiB").unwrap();
        let mut stages: Vec<SyntheticStage> = (0..s.stages()).map(|_| SyntheticStage::new(spec.clone())).collect();
        let opts = ProfileOptions { warmup: 1, reps: 3, recompute: vec![false; s.stages()] };
        let costs = profile(&s, &mut stages, &opts, |_, _| Ok(())).unwrap();
        let measured = execute(&s, &mut stages, &ExecOptions { timeout: Duration::from_secs(60) }).unwrap();
        let predicted = simulate(&s, &costs).unwrap();
        assert_eq!(Stats::of(&measured).peak_bytes, Stats::of(&predicted).peak_bytes, "{kind}");
    }
}
