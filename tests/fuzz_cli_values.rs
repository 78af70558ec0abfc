//! The command line's value parsers — byte sizes, times, durations, `KEY=VALUE` lists, `--costs`,
//! `--mem`, `--bandwidth`, counts and rates, schedule names, `--devices`, `--model` (presets and synthetic
//! specs) — given random text and valid values with a few edits, return `Ok` or `Err` and never
//! panic, hang or allocate past the cap. What they accept is exact and usable: a byte size or a
//! time prints back to itself, a cost model from `--costs`/`--mem`/`--bandwidth` has finite
//! times and a finite bandwidth > 0, and resolves
//! against small schedules or says why not, a model is estimated before anything is built.

#[path = "../schedules/tests/fuzz/mod.rs"]
mod fuzz;

use std::str::FromStr;

use fuzz::alloc_cap::{capped, Capped};
use fuzz::config;
use fuzz::mutate::{mutated, random_text};
use pipesched::args::{at_least_one, pairs, positive, seconds, Bandwidth, ByteSize, CostArgs, Costs, Mem, Time};
use pipesched::synthetic::SyntheticSpec;
use pipesched::workload::{Demand, Devices, Layout, ModelChoice, WorkloadSpec};
use pipesched_schedules::{simulate, with_recompute, CostModel, Kind, Schedule, StageCosts, Stats};
use pipesched_stages::{OptimizerSpec, Partition, Policies};
use proptest::prelude::*;
use proptest::sample::select;

#[global_allocator]
static ALLOC: Capped = capped();

/// The byte units, with their sizes.
const UNITS: [(&str, u64); 12] = [
    ("", 1),
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("PiB", 1 << 50),
];

/// A number as flags write it: whole, with a fraction, with an exponent, or at a limit (a float
/// near its largest and smallest, the largest u64).
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u64..5000).prop_map(|n| n.to_string()),
        3 => (0u64..100, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
        3 => (1u32..9, -5i32..5).prop_map(|(a, e)| format!("{a}e{e}")),
        1 => select(&["1e308", "1.7e308", "1e300", "1e-300", "18446744073709551615"][..]).prop_map(String::from),
    ]
}

fn byte_size_text() -> impl Strategy<Value = String> {
    (number(), select(UNITS.map(|u| u.0).to_vec()), select(&["", " "][..]))
        .prop_map(|(n, unit, gap)| format!("{n}{gap}{unit}"))
}

fn time_text() -> impl Strategy<Value = String> {
    (number(), select(&["", "us", "µs", "ms", "s"][..])).prop_map(|(n, unit)| format!("{n}{unit}"))
}

/// `K=V` items over `keys`, each value from `value`, some keys left out, in any order.
fn pairs_text(keys: &'static [&'static str], value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (prop::sample::subsequence(keys, 1..=keys.len()).prop_shuffle(), prop::collection::vec(value, keys.len())).prop_map(
        |(chosen, values)| chosen.iter().zip(values).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
    )
}

fn costs_text() -> impl Strategy<Value = String> {
    let with_units =
        pairs_text(&["F", "I", "W", "R", "C"], (number(), select(&["us", "ms", "s"][..])).prop_map(|(n, u)| n + u));
    let bare = pairs_text(&["F", "I", "W", "R", "C"], number());
    prop_oneof![with_units, bare]
}

fn mem_text() -> impl Strategy<Value = String> {
    pairs_text(&["A", "W", "R", "S", "M"], byte_size_text())
}

/// A bandwidth: a byte size per second, ms or us, bare, or per a unit that is not one.
fn bandwidth_text() -> impl Strategy<Value = String> {
    (byte_size_text(), select(&["/s", "/ms", "/us", "/µs", "", " / s", "/min"][..])).prop_map(|(b, per)| b + per)
}

fn synthetic_text() -> impl Strategy<Value = String> {
    let times = pairs_text(&["F", "I", "W", "R"], time_text());
    let bytes = pairs_text(&["mem", "wmem", "msg"], byte_size_text());
    (times, bytes, any::<bool>())
        .prop_map(|(t, b, prefix)| format!("{}{t},{b}", if prefix { "synthetic:" } else { "" }))
}

/// Small schedules a cost model is resolved against: one stage per rank, two chunks per rank, a
/// split backward, recompute.
fn targets() -> Vec<Schedule> {
    let one = Kind::OneFOneB.generate(2, 1, 4).unwrap();
    let recomputed = with_recompute(&one, &[true, true]).unwrap();
    vec![one, Kind::Interleaved.generate(2, 2, 4).unwrap(), Kind::ZbH1.generate(3, 1, 3).unwrap(), recomputed]
}

/// Resolves `model` against every target; where it resolves, the simulation runs to finite times.
fn check_simulates(model: &CostModel, what: &str) -> Result<(), TestCaseError> {
    for s in targets() {
        if model.resolve(&s).is_ok() {
            let stats = Stats::of(&simulate(&s, model).expect("costs that resolve simulate"));
            prop_assert!(stats.makespan.is_finite() && stats.bubble_rate.is_finite(), "{}: {:?}", what, stats);
        }
    }
    Ok(())
}

/// An accepted byte size prints back to itself, as a number of bytes and as written by Display.
fn check_byte_size(text: &str) -> Result<(), TestCaseError> {
    if let Ok(b) = text.parse::<ByteSize>() {
        prop_assert_eq!(b.0.to_string().parse::<ByteSize>(), Ok(b), "{:?}", text);
        prop_assert_eq!(b.to_string().parse::<ByteSize>(), Ok(b), "{:?}", text);
    }
    Ok(())
}

/// An accepted time is finite, ≥ 0, and prints back to itself; an accepted duration is > 0.
fn check_time(text: &str) -> Result<(), TestCaseError> {
    if let Ok(t) = text.parse::<Time>() {
        prop_assert!(t.value.is_finite() && t.value >= 0.0, "{:?}: {:?}", text, t);
        prop_assert_eq!(t.to_string().parse::<Time>(), Ok(t), "{:?}", text);
    }
    if let Ok(d) = seconds(text) {
        prop_assert!(!d.is_zero());
    }
    Ok(())
}

/// `--costs`, `--mem` and `--bandwidth`: an accepted value reads back from its own text, its
/// model's times are finite and ≥ 0 and its bandwidth finite and > 0, and the model resolves and
/// simulates or says why not.
fn check_costs(costs: &str, mem: &str, bandwidth: &str) -> Result<(), TestCaseError> {
    let (c, m) = (costs.parse::<Costs>().ok(), mem.parse::<Mem>().ok());
    let b = bandwidth.parse::<Bandwidth>().ok();
    if let Some(b) = &b {
        let again = b.to_string().parse::<Bandwidth>();
        prop_assert_eq!(again.as_ref(), Ok(b), "{:?}", bandwidth);
    }
    if let Some(c) = &c {
        let again = c.to_string().parse::<Costs>();
        prop_assert_eq!(again.as_ref(), Ok(c), "{:?}", costs);
    }
    if let Some(m) = &m {
        let again = m.to_string().parse::<Mem>();
        prop_assert_eq!(again.as_ref(), Ok(m), "{:?}", mem);
    }
    if c.is_none() && m.is_none() {
        return Ok(());
    }
    // A bandwidth is refused against some times and bytes (its unit, no message bytes); the
    // rest of the flags still make a model.
    let args = CostArgs { costs: c, mem: m, bandwidth: b };
    let model = match args.model() {
        Ok(model) => model,
        Err(_) => CostArgs { bandwidth: None, ..args }.model().expect("without --bandwidth the flags make a model"),
    };
    let StageCosts::PerRank(cost) = &model.costs else { panic!("the command line gives per-rank costs") };
    for (name, x) in [("F", cost.f), ("I", cost.i), ("W", cost.w), ("R", cost.t_r()), ("C", model.latency)] {
        prop_assert!(x.is_finite() && x >= 0.0, "{} = {} from --costs {:?}", name, x, costs);
    }
    if let Some(x) = model.bandwidth {
        prop_assert!(x.is_finite() && x > 0.0, "bandwidth {} from --bandwidth {:?}", x, bandwidth);
    }
    check_simulates(&model, costs)
}

/// An accepted synthetic spec keeps no more for W than F kept, and its cost model, at every
/// chunk count, has finite times and resolves and simulates or says why not.
fn check_synthetic(text: &str) -> Result<(), TestCaseError> {
    let Ok(spec) = SyntheticSpec::parse(text) else { return Ok(()) };
    prop_assert!(spec.w_bytes <= spec.act_bytes);
    for v in 1..=3 {
        let chunk = spec.split(v);
        prop_assert!(chunk.f <= spec.f && chunk.act_bytes <= spec.act_bytes);
    }
    let model = spec.cost_model(2);
    check_simulates(&model, text)?;
    let choice: ModelChoice = format!("synthetic:{}", text.strip_prefix("synthetic:").unwrap_or(text))
        .parse()
        .expect("a spec that parses is a synthetic model");
    check_estimate(choice)
}

/// A model choice is estimated for a small layout, at its own batch and at huge ones, without
/// building anything and without a panic.
fn check_estimate(model: ModelChoice) -> Result<(), TestCaseError> {
    for batch in [None, Some(usize::MAX / 3), Some(usize::MAX)] {
        let spec = WorkloadSpec {
            model: model.clone(),
            partition: Partition::Even,
            batch,
            data: None,
            optimizer: OptimizerSpec::adam(1e-3),
            seed: 0,
            devices: Devices::Cpu,
            init: None,
            loss_scale: None,
        };
        let demand =
            Demand { m: 4, in_flight: vec![2, 1], verify: batch.is_none(), actions: 16, steps: 2, stashed: vec![] };
        if let Ok(Some(estimate)) = spec.estimate(&Layout::looped(2, 1), &Policies::all(Default::default()), &demand) {
            prop_assert!(estimate.total() >= estimate.parts.iter().map(|p| p.bytes).max().unwrap_or(0));
        }
    }
    Ok(())
}

/// Whatever `text` parses to prints as text that parses to the same value.
fn prints_back<T: FromStr + ToString + PartialEq + std::fmt::Debug>(text: &str) -> Result<(), TestCaseError> {
    if let Ok(value) = text.parse::<T>() {
        let again = value.to_string().parse::<T>().ok();
        prop_assert_eq!(again.as_ref(), Some(&value), "{:?}", text);
    }
    Ok(())
}

/// Counts and rates: what is accepted is within its bound.
fn check_numbers(text: &str) -> Result<(), TestCaseError> {
    if let Ok(n) = at_least_one(text) {
        prop_assert!(n >= 1);
    }
    if let Ok(x) = positive(text) {
        prop_assert!(x.is_finite() && x > 0.0);
    }
    Ok(())
}

/// `KEY=VALUE` lists: what is accepted is non-empty, and every key is known and given once.
fn check_pairs(text: &str) -> Result<(), TestCaseError> {
    let known = [("F", "forward"), ("mem", "bytes"), ("wmem", "bytes for W")];
    if let Ok(list) = pairs(text, &known) {
        prop_assert!(!list.is_empty());
        for (k, (key, _)) in list.iter().enumerate() {
            prop_assert!(known.iter().any(|(name, _)| name == key));
            prop_assert!(list[..k].iter().all(|(seen, _)| seen != key), "{} twice in {:?}", key, text);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn byte_sizes_are_exact(n in 0u64..(1 << 20), unit in 0usize..UNITS.len(), gap in any::<bool>()) {
        let (name, scale) = UNITS[unit];
        let text = format!("{n}{}{name}", if gap { " " } else { "" });
        let want = n.checked_mul(scale);
        match text.parse::<ByteSize>() {
            Ok(b) => prop_assert_eq!(Some(b.0), want, "{:?}", text),
            Err(e) => prop_assert!(want.is_none() && e.contains("too large"), "{:?}: {}", text, e),
        }
    }

    #[test]
    fn byte_sizes_from_random_text(text in random_text(24)) {
        check_byte_size(&text)?;
    }

    #[test]
    fn byte_sizes_near_valid(text in mutated(byte_size_text())) {
        check_byte_size(&text)?;
    }

    #[test]
    fn times_from_random_text(text in random_text(24)) {
        check_time(&text)?;
        check_numbers(&text)?;
    }

    #[test]
    fn times_near_valid(text in mutated(time_text())) {
        check_time(&text)?;
        check_numbers(&text)?;
    }

    #[test]
    fn pairs_from_random_text(text in random_text(48)) {
        check_pairs(&text)?;
    }

    #[test]
    fn pairs_near_valid(text in mutated(pairs_text(&["F", "mem", "wmem"], number()))) {
        check_pairs(&text)?;
    }

    #[test]
    fn costs_and_mem_from_random_text(costs in random_text(48), mem in random_text(48), bandwidth in random_text(24)) {
        check_costs(&costs, &mem, &bandwidth)?;
    }

    #[test]
    fn costs_and_mem_near_valid(costs in mutated(costs_text()), mem in mutated(mem_text()), bandwidth in mutated(bandwidth_text())) {
        check_costs(&costs, &mem, &bandwidth)?;
    }

    #[test]
    fn synthetic_specs_from_random_text(text in random_text(64)) {
        check_synthetic(&text)?;
    }

    #[test]
    fn synthetic_specs_near_valid(text in mutated(synthetic_text())) {
        check_synthetic(&text)?;
    }

    #[test]
    fn names_and_devices_from_random_text(text in random_text(24)) {
        prints_back::<Kind>(&text)?;
        prints_back::<Devices>(&text)?;
    }

    #[test]
    fn names_and_devices_near_valid(
        kind in mutated(select(Kind::ALL.map(Kind::name).to_vec()).prop_map(String::from)),
        devices in mutated(select(&["cpu", "cuda", "cuda:0,cuda:1", "cpu,CPU,cuda:3"][..]).prop_map(String::from)),
    ) {
        prints_back::<Kind>(&kind)?;
        prints_back::<Devices>(&devices)?;
    }

    /// `--model` names a preset, a file or synthetic stages; edited presets (which name no file
    /// here) and edited synthetic specs are read, refused or estimated without a panic.
    #[test]
    fn model_choices_near_valid(
        text in mutated(prop_oneof![select(&["tiny", "small", "medium"][..]).prop_map(String::from), synthetic_text()]),
    ) {
        if let Ok(choice) = text.parse::<ModelChoice>() {
            prop_assert_eq!(choice.to_string(), text.trim());
            check_estimate(choice)?;
        }
    }
}
