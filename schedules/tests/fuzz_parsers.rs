//! Every parser of the schedules crate — action strings, CSV schedules, cost-model JSON — given
//! random text and valid examples with a few edits, returns `Ok` or `Err` and never panics, hangs
//! or allocates past the cap; and what it accepts is usable: an `Ok` action prints back to
//! itself, an `Ok` CSV schedule validates, re-reads from its own CSV and simulates, an `Ok` cost
//! model re-reads from its own JSON (to the bit) and resolves against small schedules or says
//! why not.

mod fuzz;

use fuzz::alloc_cap::{capped, Capped};
use fuzz::config;
use fuzz::costs::{bandwidth, bytes, stage_cost, time};
use fuzz::mutate::{mutated, random_text};
use pipesched_schedules::{
    from_csv, simulate, to_csv, validate, with_recompute, Action, CostModel, Kind, Op, Schedule, StageCost, StageCosts,
    Stats,
};
use proptest::prelude::*;
use proptest::sample::select;

#[global_allocator]
static ALLOC: Capped = capped();

/// A valid action string: any stage and micro-batch the format holds, perhaps padded.
fn action_text() -> impl Strategy<Value = String> {
    let op = select(&Op::ALL[..]);
    let number = |max: u64| prop_oneof![0..8u64, Just(max), 0..=max];
    (number(65535), op, number(u32::MAX as u64), select(&["", " ", "\t"][..]))
        .prop_map(|(s, op, mb, pad)| format!("{pad}{s}{op}{mb}{pad}"))
}

/// A generated schedule of every kind at small p, v and m, some with recompute planned.
fn schedule() -> impl Strategy<Value = Schedule> {
    (select(&Kind::ALL[..]), 1usize..=4, 1usize..=3, 1usize..=8, any::<u8>()).prop_filter_map(
        "no schedule of that shape",
        |(kind, p, v, m, mask)| {
            let v = if kind.takes_chunks() { v } else { kind.default_chunks() };
            let s = kind.generate(p, v, m).ok()?;
            let flags: Vec<bool> = (0..s.stages()).map(|k| mask >> (k % 8) & 1 == 1).collect();
            with_recompute(&s, &flags).ok()
        },
    )
}

/// A generated schedule as CSV with two actions of one lane swapped: well-formed text that
/// breaks the order of a lane (or keeps it), which the validator must explain.
fn reordered_csv() -> impl Strategy<Value = String> {
    (schedule(), any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(s, r, a, b)| {
        let mut lanes: Vec<Vec<String>> = s.lanes.iter().map(|l| l.iter().map(|a| a.to_string()).collect()).collect();
        let lane = &mut lanes[r % s.p];
        let n = lane.len();
        lane.swap(a % n, b % n);
        lanes.iter().map(|l| l.join(",") + "\n").collect()
    })
}

/// A valid CSV schedule — a generated one, or a hand-written one in the V placement, with the
/// `\r\n` line ends and quoted cells other writers use — or one with a lane reordered.
fn csv_text() -> impl Strategy<Value = String> {
    let v_placement = "0F0,,,3F0,3B0,,,,0B0\n,1F0,2F0,2B0,1B0\n".to_string();
    prop_oneof![
        4 => schedule().prop_map(|s| to_csv(&s).expect("a generated schedule has a CSV")),
        2 => reordered_csv(),
        1 => schedule().prop_map(|s| to_csv(&s).unwrap().replace('\n', "\r\n").replace("0,", "0\",").replace(",", ",\"")),
        1 => Just(v_placement),
    ]
}

/// A valid cost model: per-rank or per-stage costs, with latency, perhaps a bandwidth, static
/// bytes, a unit.
fn cost_model() -> impl Strategy<Value = CostModel> {
    let costs = prop_oneof![
        stage_cost().prop_map(StageCosts::PerRank),
        prop::collection::vec(stage_cost(), 1..=4).prop_map(StageCosts::Stages),
    ];
    let statics = prop::collection::vec(bytes(), 0..=3);
    (costs, time(), bandwidth(), statics, select(&["ms", "units"][..])).prop_map(
        |(costs, latency, bandwidth, static_bytes, unit)| CostModel {
            costs,
            latency,
            bandwidth,
            static_bytes,
            host_link: None,
            time_unit: unit.into(),
        },
    )
}

/// A valid cost model's JSON, pretty or compact.
fn cost_json() -> impl Strategy<Value = String> {
    (cost_model(), any::<bool>()).prop_map(|(model, pretty)| {
        if pretty {
            model.to_json()
        } else {
            serde_json::to_string(&model).unwrap()
        }
    })
}

/// What an accepted action must be: its own string parses back to it.
fn check_action(text: &str) -> Result<(), TestCaseError> {
    if let Ok(a) = text.parse::<Action>() {
        prop_assert_eq!(a.to_string().parse::<Action>(), Ok(a), "{:?}", text);
    }
    Ok(())
}

/// What an accepted CSV schedule must be: valid, the same when read back from its own CSV, and
/// simulated to the end under unit costs, with and without bytes.
fn check_csv(text: &str) -> Result<(), TestCaseError> {
    let Ok(s) = from_csv(text, "fuzz") else { return Ok(()) };
    prop_assert!(validate(&s).is_ok());
    let again = to_csv(&s).expect("a valid schedule has a CSV");
    let back = from_csv(&again, "fuzz");
    prop_assert_eq!(back.as_ref(), Ok(&s), "{:?}", text);
    let stats = Stats::of(&simulate(&s, &CostModel::per_rank(1.0, 1.0, 1.0)).expect("a valid schedule simulates"));
    let longest = s.lanes.iter().map(|l| l.len()).max().unwrap_or(0);
    // Unit per-rank costs give each of a rank's v chunks 1/v per op (a sum of thirds may round
    // down in its last bit).
    prop_assert!(
        stats.makespan * s.v as f64 >= longest as f64 * (1.0 - 1e-12),
        "each action takes at least 1/v: {}",
        stats.makespan
    );
    let mut with_bytes = CostModel::per_rank(1.0, 2.0, 0.5);
    with_bytes.costs = StageCosts::PerRank(StageCost { act_bytes: 10, w_bytes: 3, ..StageCost::times(1.0, 2.0, 0.5) });
    prop_assert!(simulate(&s, &with_bytes).is_ok());
    Ok(())
}

/// Small schedules a cost model is resolved against: one stage per rank, two chunks per rank,
/// a split backward, recompute.
fn targets() -> Vec<Schedule> {
    let one = Kind::OneFOneB.generate(2, 1, 4).unwrap();
    let recomputed = with_recompute(&one, &[true, false]).unwrap();
    vec![one, Kind::Interleaved.generate(2, 2, 4).unwrap(), Kind::ZbH1.generate(3, 1, 3).unwrap(), recomputed]
}

/// What an accepted cost model must be: the same when read back from its own JSON, and either
/// refused by a schedule with a reason or simulated to finite times.
fn check_cost(text: &str) -> Result<(), TestCaseError> {
    let Ok(model) = CostModel::from_json(text) else { return Ok(()) };
    let back = CostModel::from_json(&model.to_json());
    prop_assert_eq!(back.as_ref(), Ok(&model), "{:?}", text);
    for s in targets() {
        if model.resolve(&s).is_ok() {
            let trace = simulate(&s, &model).expect("costs that resolve simulate");
            let stats = Stats::of(&trace);
            prop_assert!(stats.makespan.is_finite() && stats.bubble_rate.is_finite(), "{:?}: {:?}", text, stats);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn action_strings_from_random_text(text in random_text(24)) {
        check_action(&text)?;
    }

    #[test]
    fn action_strings_near_valid(text in mutated(action_text())) {
        check_action(&text)?;
    }

    #[test]
    fn csv_schedules_from_random_text(text in random_text(256)) {
        check_csv(&text)?;
    }

    #[test]
    fn csv_schedules_near_valid(text in mutated(csv_text())) {
        check_csv(&text)?;
    }

    #[test]
    fn csv_schedules_reordered(text in reordered_csv()) {
        check_csv(&text)?;
    }

    #[test]
    fn cost_models_read_back_exactly(model in cost_model()) {
        let back = CostModel::from_json(&model.to_json());
        prop_assert_eq!(back.as_ref(), Ok(&model));
    }

    #[test]
    fn cost_models_from_random_text(text in random_text(256)) {
        check_cost(&text)?;
    }

    #[test]
    fn cost_models_near_valid(text in mutated(cost_json())) {
        check_cost(&text)?;
    }
}

/// A CSV naming huge stage and micro-batch numbers is refused by counting, before any table of
/// stages × micro-batches is allocated (the allocator here refuses anything over 256 MiB).
#[test]
fn huge_numbers_in_a_csv_are_refused_without_a_table() {
    for text in ["0F0,65535B4294967295\n", "0F4294967295\n", "0F0,0B0\n1F4294967295,1B4294967295\n"] {
        let e = from_csv(text, "huge").unwrap_err().to_string();
        assert!(e.contains("which need at least"), "{text:?}: {e}");
    }
    // 65536 stages × 1 micro-batch: a 64 KiB table, then the missing forwards are named.
    let e = from_csv("65535F0\n", "huge").unwrap_err().to_string();
    assert!(e.contains("missing forward: stage 0, micro-batch 0"), "{e}");
}
