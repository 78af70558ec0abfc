//! The stage values flags carry — recompute policies (`Policies`, `RecomputePolicy`), partitions,
//! devices, precisions — given random text and valid values with a few edits, parse to `Ok` or
//! `Err` and never panic; an accepted value prints back to itself, and is usable: policies give
//! one per stage or say why not, a partition splits a model or says why not.

#[path = "../../schedules/tests/fuzz/mod.rs"]
mod fuzz;

use std::fmt::Display;
use std::str::FromStr;

use fuzz::alloc_cap::Capped;
use fuzz::config;
use fuzz::mutate::{mutated, random_text};
use pipesched_stages::{Device, ModelSpec, Partition, Policies, Precision, RecomputePolicy};
use proptest::prelude::*;
use proptest::sample::select;

#[global_allocator]
static ALLOC: Capped = Capped;

/// One valid policy.
fn policy_text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(&["none", "full", "sqrt"][..]).prop_map(String::from),
        (1usize..64).prop_map(|k| format!("every:{k}")),
    ]
}

/// One policy, or one per stage.
fn policies_text() -> impl Strategy<Value = String> {
    prop::collection::vec(policy_text(), 1..=5).prop_map(|p| p.join(","))
}

/// `even`, `balanced`, or layer counts.
fn partition_text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(&["even", "balanced"][..]).prop_map(String::from),
        prop::collection::vec(1usize..6, 1..=5).prop_map(|c| c
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")),
    ]
}

fn device_text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(&["cpu", "cuda", "CPU", "Cuda"][..]).prop_map(String::from),
        (0usize..8).prop_map(|k| format!("cuda:{k}"))
    ]
}

fn precision_text() -> impl Strategy<Value = String> {
    select(&["f32", "fp32", "bf16", "f16", "fp16", "BF16"][..]).prop_map(String::from)
}

/// Whatever `text` parses to prints as text that parses to the same value.
fn prints_back<T: FromStr + Display + PartialEq + std::fmt::Debug>(text: &str) -> Result<Option<T>, TestCaseError> {
    let Ok(value) = text.parse::<T>() else { return Ok(None) };
    let again = value.to_string().parse::<T>().ok();
    prop_assert_eq!(again.as_ref(), Some(&value), "{:?}", text);
    Ok(Some(value))
}

/// Accepted policies give one policy per stage, or say why not; their checkpoints start at layer
/// 0 and increase within the stage.
fn check_policies(text: &str) -> Result<(), TestCaseError> {
    if let Some(list) = prints_back::<Policies>(text)? {
        for stages in 1..=6 {
            if let Ok(each) = list.for_stages(stages) {
                prop_assert_eq!(each.len(), stages);
            }
        }
        for p in &list.0 {
            for layers in [0, 1, 7, 1000] {
                let at = p.checkpoints(layers);
                prop_assert!(at.windows(2).all(|w| w[0] < w[1]) && at.iter().all(|&l| l < layers));
                prop_assert_eq!(at.first().copied(), (layers > 0 && *p != RecomputePolicy::None).then_some(0));
            }
        }
    }
    Ok(())
}

/// An accepted partition splits the tiny model into contiguous, non-empty ranges, or says why not.
fn check_partition(text: &str) -> Result<(), TestCaseError> {
    if let Some(partition) = prints_back::<Partition>(text)? {
        let model = ModelSpec::tiny();
        for stages in 1..=8 {
            if let Ok(ranges) = partition.ranges(&model, stages) {
                prop_assert_eq!(ranges.len(), stages);
                prop_assert!(ranges.iter().all(|r| !r.is_empty()));
                prop_assert_eq!(ranges.last().map(|r| r.end), Some(model.num_layers()));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn policies_from_random_text(text in random_text(32)) {
        check_policies(&text)?;
        prints_back::<RecomputePolicy>(&text)?;
    }

    #[test]
    fn policies_near_valid(text in mutated(policies_text())) {
        check_policies(&text)?;
        prints_back::<RecomputePolicy>(&text)?;
    }

    #[test]
    fn partitions_from_random_text(text in random_text(32)) {
        check_partition(&text)?;
    }

    #[test]
    fn partitions_near_valid(text in mutated(partition_text())) {
        check_partition(&text)?;
    }

    #[test]
    fn devices_and_precisions_from_random_text(text in random_text(16)) {
        prints_back::<Device>(&text)?;
        prints_back::<Precision>(&text)?;
    }

    #[test]
    fn devices_and_precisions_near_valid(device in mutated(device_text()), precision in mutated(precision_text())) {
        prints_back::<Device>(&device)?;
        prints_back::<Precision>(&precision)?;
    }
}
