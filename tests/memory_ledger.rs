//! The executor's byte ledger: measured peak held bytes per rank equal the prediction from the
//! stages' own accounting, for every schedule × recompute policy; the orderings of the papers hold on
//! real stages; and the ledger is honest — a counting global allocator never sees less live heap
//! than the ledger claims.

mod common;

use common::{cases, exec, model, schedule, Case};
use peak_alloc::PeakAlloc;
use pipesched::exec::Transport;
use pipesched::model::Model;
use pipesched_schedules::{simulate, Kind, Schedule, Stats, Trace};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

fn measured_and_predicted(model: &mut Model, s: &Schedule) -> (Vec<u64>, Vec<u64>) {
    let trace = model.run_step(s, 0, &exec()).unwrap().trace;
    let predicted = simulate(s, &model.predicted_bytes(s, &Transport::InProcess).unwrap()).unwrap();
    (Stats::of(&trace).peak_held_bytes, Stats::of(&predicted).peak_held_bytes)
}

#[test]
fn measured_peaks_equal_predicted_peaks_for_every_schedule_and_policy() {
    for Case { kind, policy, p, m, mut model, schedule } in cases() {
        let (measured, predicted) = measured_and_predicted(&mut model, &schedule);
        assert_eq!(measured, predicted, "{kind} {policy} p={p} m={m}");
    }
}

#[test]
fn optimal_measured_peaks_equal_predicted_peaks() {
    for common::OptimalCase { kind, policy, p, m, mut model, schedule } in common::optimal_cases() {
        let (measured, predicted) = measured_and_predicted(&mut model, &schedule);
        assert_eq!(measured, predicted, "{kind} {policy} p={p} m={m}");
        // Inside each stage's last I: what its plan predicts, between the steps it interleaves.
        let rows = model.batch;
        for s in &mut model.stages {
            let peak = s.stage_mut().optimal_plan(rows).unwrap().peak();
            assert_eq!(s.stage().backward_peak_bytes(), peak, "{kind} {policy} p={p} m={m}");
        }
    }
}

/// One stage, one micro-batch: the step's peak is inside the stage's `I`, where `optimal`
/// recomputes what its `F` dropped: static bytes plus the plan's peak, exactly, measured and
/// predicted.
#[test]
fn optimal_peaks_inside_its_backward() {
    for spec in [common::deep_tiny(), pipesched_stages::ModelSpec::gpt_tiny()] {
        let least = common::optimal_budgets(&spec, 1)[0];
        for kind in [Kind::GPipe, Kind::ZbH1] {
            let mut model = common::model_of(spec.clone(), 1, &format!("optimal:{least}B"));
            let s = schedule(kind, 1, 1, &model);
            let (measured, predicted) = measured_and_predicted(&mut model, &s);
            let rows = model.batch;
            let plan = model.stages[0].stage_mut().optimal_plan(rows).unwrap();
            let statics = per_rank(&model, &s)[0].0;
            assert!(plan.peak() > plan.kept(), "{}: the least budget recomputes", spec.name);
            assert_eq!(measured, vec![statics + plan.peak()], "{} {kind}", spec.name);
            assert_eq!(predicted, measured, "{} {kind}", spec.name);
        }
    }
}

/// Per rank: (static bytes, act_bytes of its stage) for a one-chunk schedule.
fn per_rank(model: &Model, s: &Schedule) -> Vec<(u64, u64)> {
    let costs = model.predicted_bytes(s, &Transport::InProcess).unwrap();
    let pipesched_schedules::StageCosts::Stages(stages) = &costs.costs else { unreachable!() };
    (0..s.p).map(|r| (costs.static_bytes[r], stages[r].act_bytes)).collect()
}

#[test]
fn gpipe_holds_m_microbatches_and_1f1b_p_minus_r() {
    let (p, m) = (4, 8);
    for (kind, held) in [(Kind::GPipe, [m; 4]), (Kind::OneFOneB, [4, 3, 2, 1])] {
        let mut model = model(p, "none");
        let s = schedule(kind, p, m, &model);
        let (measured, _) = measured_and_predicted(&mut model, &s);
        for (r, (statics, act)) in per_rank(&model, &s).into_iter().enumerate() {
            assert_eq!(measured[r], statics + held[r] as u64 * act, "{kind} rank {r}");
        }
    }
}

#[test]
fn full_keeps_least_every_k_and_sqrt_sit_in_between() {
    let (p, m) = (2, 4);
    let peak = |policy: &str| {
        let mut model = model(p, policy);
        let s = schedule(Kind::OneFOneB, p, m, &model);
        let statics: Vec<u64> = per_rank(&model, &s).into_iter().map(|x| x.0).collect();
        let (measured, _) = measured_and_predicted(&mut model, &s);
        measured.iter().zip(statics).map(|(a, b)| a - b).collect::<Vec<u64>>()
    };
    let (none, full, every, sqrt) = (peak("none"), peak("full"), peak("every:2"), peak("sqrt"));
    // Rank 0 holds p micro-batches at once, so what F keeps decides its peak: strictly ordered.
    assert!(full[0] < every[0] && every[0] < none[0], "full {full:?} every:2 {every:?} none {none:?}");
    assert!(full[0] < sqrt[0] && sqrt[0] < none[0], "full {full:?} sqrt {sqrt:?} none {none:?}");
    // The last rank holds one micro-batch at a time; recomputed in full before its backward, it
    // peaks at what `none` keeps, whatever the policy.
    for r in 0..p {
        assert!(full[r] <= every[r] && every[r] <= none[r] && full[r] <= sqrt[r] && sqrt[r] <= none[r], "rank {r}");
    }
    assert_eq!(full[p - 1], none[p - 1]);
    // `full` keeps only each stage's input: on rank 0, the micro-batches in flight hold
    // batch × input width f32 each, plus one micro-batch recomputed in full before its backward.
    let model = model(p, "full");
    let s = schedule(Kind::OneFOneB, p, m, &model);
    let bytes = model.stages[0].stage().predicted_bytes(model.batch);
    assert_eq!(bytes.act_bytes, (model.batch * model.spec.input_width() * 4) as u64);
    assert_eq!(full[0], (p as u64 - 1) * bytes.act_bytes + bytes.act_bytes + bytes.recompute_bytes, "{s:?}");
}

/// The largest sum of every rank's ledger at one instant.
fn ledger_total_peak(trace: &Trace) -> u64 {
    let mut events: Vec<(f64, usize, u64)> = Vec::new();
    for (r, rank) in trace.ranks.iter().enumerate() {
        events.extend(rank.memory.iter().map(|s| (s.time, r, s.bytes)));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut now = vec![0u64; trace.ranks.len()];
    let mut peak = 0;
    for (_, r, bytes) in events {
        now[r] = bytes;
        peak = peak.max(now.iter().sum());
    }
    peak
}

#[test]
fn the_heap_never_holds_less_than_the_ledger_claims() {
    let spec = pipesched_stages::ModelSpec::small();
    for kind in [Kind::GPipe, Kind::OneFOneB, Kind::ZbH1] {
        let opts = pipesched::model::ModelOptions {
            stages: 2,
            partition: pipesched_stages::Partition::Even,
            policies: "none".parse().unwrap(),
            optimizer: pipesched_stages::OptimizerSpec::adam(1e-3),
            batch: 32,
            data_seed: 1,
            corpus: None,
            devices: vec![],
            held: None,
            init: None,
        };
        let mut model = Model::build(spec.clone(), &opts).unwrap();
        let s = kind.generate(2, 1, 4).unwrap();
        let start = HEAP.current_usage() as u64;
        HEAP.reset_peak_usage();
        let trace = model.run_step(&s, 0, &exec()).unwrap().trace;
        let heap = HEAP.peak_usage() as u64;
        let ledger = ledger_total_peak(&trace);
        let statics: u64 = trace.ranks.iter().map(|r| r.memory[0].bytes).sum();
        eprintln!(
            "{kind}: heap at step start {start} B (ledger: {statics} B static); peak heap {heap} B, ledger {ledger} B: \
             heap above ledger by {} B ({:.1} %)",
            heap - ledger.min(heap),
            100.0 * (heap as f64 / ledger as f64 - 1.0)
        );
        assert!(heap >= ledger, "{kind}: the ledger claims {ledger} B but the heap peaked at {heap} B");
    }
}

#[test]
fn the_profiled_cost_model_predicts_the_measured_peaks() {
    // Bytes are deterministic even where times are not: what the profiler measured each op
    // keep, fed to the simulator, gives the ledger's peaks exactly.
    for kind in [Kind::OneFOneB, Kind::ZbH1, Kind::Interleaved] {
        for policy in ["none", "full", "sqrt"] {
            let (p, m) = (2, 4);
            let mut model = model(p * kind.default_chunks(), policy);
            let s = schedule(kind, p, m, &model);
            let profiled = pipesched::workload::profile_model(&s, &mut model, 1, &Transport::InProcess).unwrap();
            let measured = model.run_step(&s, 0, &exec()).unwrap().trace;
            let predicted = simulate(&s, &profiled).unwrap();
            assert_eq!(Stats::of(&measured).peak_held_bytes, Stats::of(&predicted).peak_held_bytes, "{kind} {policy}");
        }
    }
}
