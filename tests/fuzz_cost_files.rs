//! Cost files — `CostFile::from_json`, what `simulate --costs-file` reads — given random text and
//! valid files with a few edits, return `Ok` or `Err` and never panic, hang or allocate past the
//! cap; and an accepted file is usable as `simulate` uses it: it reads back from its own JSON,
//! plans recompute into small schedules or says why not, and what it plans simulates to finite
//! times or is refused with a reason.

#[path = "../schedules/tests/fuzz/mod.rs"]
mod fuzz;

use fuzz::alloc_cap::{capped, Capped};
use fuzz::config;
use fuzz::costs::{bandwidth, bytes, stage_cost, time};
use fuzz::mutate::{mutated, random_text};
use pipesched::cost_file::CostFile;
use pipesched::workload::Layout;
use pipesched_schedules::{simulate, with_recompute, CostModel, Kind, Placement, Schedule, StageCosts, Stats};
use pipesched_stages::{
    LayerBytes, LayerCost, LayerCosts, LayerTimes, LossCost, ModelSpec, Partition, Policies, RecomputePolicy,
};
use proptest::prelude::*;
use proptest::sample::select;

#[global_allocator]
static ALLOC: Capped = capped();

fn policy() -> impl Strategy<Value = RecomputePolicy> {
    prop_oneof![
        Just(RecomputePolicy::None),
        Just(RecomputePolicy::Full),
        Just(RecomputePolicy::Sqrt),
        (1usize..5).prop_map(RecomputePolicy::Every),
    ]
}

/// A valid cost file: per-rank or per-stage costs, and perhaps the layout and policies it was
/// profiled under (fitting the targets below, or not; some layouts of sizes no schedule has).
fn cost_file_text() -> impl Strategy<Value = String> {
    let costs = prop_oneof![
        stage_cost().prop_map(StageCosts::PerRank),
        prop::collection::vec(stage_cost(), 1..=4).prop_map(StageCosts::Stages),
    ];
    let count = |small: std::ops::RangeInclusive<usize>| prop_oneof![4 => small, 1 => select(&[0, 256, 257, 1 << 16, 1 << 32, 1 << 63, usize::MAX][..])];
    let layout = prop::option::of((count(1..=3), count(1..=2), select(&[Placement::Loop, Placement::V][..])));
    let recompute = prop::option::of(prop::collection::vec(policy(), 1..=4));
    let grads = prop::option::of(prop::collection::vec(bytes(), 0..=4));
    (costs, time(), bandwidth(), prop::collection::vec(bytes(), 0..=3), layout, recompute, layer_costs(), grads)
        .prop_map(|(costs, latency, bandwidth, static_bytes, layout, recompute, layers, grad_bytes)| {
            let model = CostModel { costs, latency, bandwidth, static_bytes, host_link: None, time_unit: "ms".into() };
            let layout = layout.map(|(p, v, placement)| Layout { p, v, placement });
            CostFile { model, layout, recompute, layers, grad_bytes }.to_json()
        })
}

/// Per-layer costs of `tiny` (its layers' kinds and parameters, the times and other bytes
/// drawn), with some layers left off; or none.
fn layer_costs() -> impl Strategy<Value = Option<LayerCosts>> {
    let tiny = ModelSpec::tiny();
    let kinds: Vec<(String, u64)> =
        tiny.all_layers().iter().map(|l| (l.kind().to_string(), 4 * l.param_count() as u64)).collect();
    let n = kinds.len();
    let layer =
        (time(), time(), time(), time(), prop::option::of(time()), [bytes(), bytes(), bytes(), bytes(), bytes()]);
    let loss = (time(), time(), bytes(), bytes());
    let all = (prop::collection::vec(layer, 1..=n), loss, 1usize..=256);
    prop::option::of(all.prop_map(move |(layers, (lf, li, saved_bytes, target_bytes), rows)| {
        let layers = layers
            .into_iter()
            .zip(&kinds)
            .map(|((f, i, w, r, restore, [a, inp, out, wb, other]), (kind, params))| LayerCost {
                kind: kind.clone(),
                times: LayerTimes { f, i, w, r, restore },
                bytes: LayerBytes {
                    act_bytes: a,
                    input_bytes: inp,
                    output_bytes: out,
                    selective_bytes: restore.map(|_| a / 2),
                    w_bytes: wb,
                    param_bytes: *params,
                    grad_bytes: *params,
                    optimizer_bytes: other,
                },
            })
            .collect();
        let loss = LossCost { kind: ModelSpec::tiny().loss, f: lf, i: li, saved_bytes, target_bytes };
        LayerCosts { model_name: "tiny".into(), rows, layers, loss }
    }))
}

/// Schedules a cost file is planned into, as `simulate` does: one stage per rank at p = 2 and 3,
/// two chunks per rank, a split backward.
fn targets() -> Vec<Schedule> {
    vec![
        Kind::OneFOneB.generate(2, 1, 4).unwrap(),
        Kind::Interleaved.generate(2, 2, 4).unwrap(),
        Kind::ZbH1.generate(3, 1, 3).unwrap(),
    ]
}

/// What an accepted cost file must be: the same read back from its own JSON, and planned and
/// simulated — with the policies it records, with ones asked for — or refused with a reason.
fn check_cost_file(text: &str) -> Result<(), TestCaseError> {
    let Ok(file) = CostFile::from_json(text) else { return Ok(()) };
    let back = CostFile::from_json(&file.to_json());
    prop_assert_eq!(back.as_ref().ok(), Some(&file), "{:?}", text);
    let full = Policies::all(RecomputePolicy::Full);
    for base in targets() {
        for asked in [None, Some(&full)] {
            let Ok(schedule) = file.plan(&base, asked) else { continue };
            if file.model.resolve(&schedule).is_ok() {
                let stats = Stats::of(&simulate(&schedule, &file.model).expect("costs that resolve simulate"));
                prop_assert!(stats.makespan.is_finite() && stats.bubble_rate.is_finite(), "{:?}: {:?}", text, stats);
            }
        }
    }
    let tiny = ModelSpec::tiny();
    let base = Kind::OneFOneB.generate(2, 1, 4).unwrap();
    for policy in ["none", "full", "selective", "sqrt,none"] {
        let specs = tiny.stage_specs(2, &Partition::Even, &policy.parse().unwrap()).unwrap();
        let Ok(model) = file.compose(&tiny, &specs, Layout::looped(2, 1)) else { continue };
        let flags: Vec<bool> = specs.iter().map(|s| s.policy.drops()).collect();
        let schedule = with_recompute(&base, &flags).unwrap();
        if model.resolve(&schedule).is_ok() {
            prop_assert!(simulate(&schedule, &model).is_ok(), "{:?}", text);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn cost_files_from_random_text(text in random_text(256)) {
        check_cost_file(&text)?;
    }

    #[test]
    fn cost_files_near_valid(text in mutated(cost_file_text())) {
        check_cost_file(&text)?;
    }
}
