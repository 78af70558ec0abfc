//! Model files — `ModelSpec::from_toml` and `ModelSpec::from_json` — given random text and valid
//! files with a few edits, return `Ok` or `Err` and never panic, hang or allocate past the cap;
//! and an accepted model is usable: it validates, reads back from its own TOML and JSON, and its
//! stage specs and footprints (at its batch, and at batches too large to count) come back as
//! `Ok` or a clear `Err`.

#[path = "../../schedules/tests/fuzz/mod.rs"]
mod fuzz;

use fuzz::alloc_cap::{capped, Capped};
use fuzz::config;
use fuzz::mutate::{mutated, random_text};
use pipesched_stages::{Gpt, Load, LossKind, Mlp, ModelSpec, OptimizerSpec, Partition, Policies, Precision};
use proptest::prelude::*;
use proptest::sample::select;

#[global_allocator]
static ALLOC: Capped = capped();

/// The example model files of the repository.
const EXAMPLES: [&str; 4] = [
    include_str!("../../models/small.toml"),
    include_str!("../../models/wide.toml"),
    include_str!("../../models/tiny.json"),
    include_str!("../../models/deep-bf16.json"),
];

/// A valid model: a residual MLP or a GPT of small widths, any loss (MLP), dropout, seed (some
/// too large for TOML) and precision.
fn model() -> impl Strategy<Value = ModelSpec> {
    let mlp = (
        1usize..64,
        1usize..64,
        1usize..128,
        0usize..6,
        2usize..10,
        select(&[LossKind::CrossEntropy, LossKind::Mse][..]),
    )
        .prop_map(|(input, hidden, ffn, blocks, output, loss)| {
            ModelSpec::mlp("fuzz", Mlp { input, hidden, ffn, blocks, output }, loss, 1)
        });
    let gpt = (2usize..300, 1usize..6, 1usize..8, 1usize..64, 0usize..4, 1usize..20).prop_map(
        |(vocab, heads, per_head, ffn, layers, seq)| {
            ModelSpec::gpt("fuzz", Gpt { vocab, width: heads * per_head, heads, ffn, layers, seq }, 1)
        },
    );
    let rest = (0.0f32..0.9, any::<u64>(), 0usize..3, 1usize..32);
    (prop_oneof![mlp, gpt], rest).prop_map(|(m, (dropout, seed, precision, batch))| ModelSpec {
        dropout,
        seed,
        batch,
        precision: [Precision::F32, Precision::Bf16, Precision::F16][precision],
        ..m
    })
}

/// A valid TOML model file: an example of the repository or a generated model.
fn toml_text() -> impl Strategy<Value = String> {
    prop_oneof![
        select(&[EXAMPLES[0], EXAMPLES[1]][..]).prop_map(String::from),
        model().prop_filter_map("a seed TOML cannot hold", |m| m.to_toml().ok()),
    ]
}

/// A valid JSON model file: an example of the repository or a generated model.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![select(&[EXAMPLES[2], EXAMPLES[3]][..]).prop_map(String::from), model().prop_map(|m| m.to_json())]
}

/// A width or count: small, or at a limit of 32- or 64-bit arithmetic.
fn size() -> impl Strategy<Value = u64> {
    let limits =
        [1u64 << 31, 1 << 32, (1 << 32) + 1, 1 << 62, 1 << 63, u64::MAX / 16, u64::MAX / 3, u64::MAX - 1, u64::MAX];
    prop_oneof![0u64..40, select(limits.to_vec()), any::<u64>()]
}

/// A JSON model whose every number may sit at a limit: the size checks of `validate` in every
/// combination of fields, without the syntax errors that stop most edited files earlier.
fn extreme_json() -> impl Strategy<Value = String> {
    let loss = select(&["cross_entropy", "mse"][..]);
    let dropout = prop_oneof![Just(0.0f64), Just(0.5), Just(1.0), Just(-0.0), Just(1e-45), Just(1e39)];
    ([size(), size(), size(), size(), size(), size()], loss, dropout, any::<u64>()).prop_map(
        |([input, hidden, ffn, blocks, output, batch], loss, dropout, seed)| {
            format!(
                r#"{{"input": {input}, "hidden": {hidden}, "ffn": {ffn}, "blocks": {blocks}, "output": {output}, "loss": "{loss}", "batch": {batch}, "dropout": {dropout}, "seed": {seed}}}"#
            )
        },
    )
}

/// What an accepted model must be: valid, the same when read back from TOML and JSON, and split
/// and counted without a panic — at its own batch, and at batches whose bytes overflow.
fn check_model(spec: &ModelSpec) -> Result<(), TestCaseError> {
    prop_assert!(spec.validate().is_ok());
    match spec.to_toml() {
        Ok(text) => {
            let back = ModelSpec::from_toml(&text);
            prop_assert_eq!(back.as_ref(), Ok(spec));
        }
        // TOML integers are signed: only a seed past 2^63 − 1 cannot be written.
        Err(_) => prop_assert!(spec.seed > i64::MAX as u64),
    }
    let json = ModelSpec::from_json(&spec.to_json());
    prop_assert_eq!(json.as_ref(), Ok(spec));
    let adam = OptimizerSpec::adam(1e-3);
    for stages in 1..=4 {
        for partition in [Partition::Even, Partition::Balanced] {
            for policy in ["none", "full", "every:2", "sqrt"] {
                let policies: Policies = policy.parse().expect("a valid policy");
                let Ok(specs) = spec.stage_specs(stages, &partition, &policies) else { continue };
                for batch in [spec.batch, usize::MAX / 3, usize::MAX] {
                    let load = Load { batch, microbatches: 4, in_flight: vec![2; stages] };
                    if let Ok(footprint) = spec.footprint(&specs, &adam, &load) {
                        prop_assert!(footprint.total() > 0);
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn toml_from_random_text(text in random_text(256)) {
        if let Ok(spec) = ModelSpec::from_toml(&text) {
            check_model(&spec)?;
        }
    }

    #[test]
    fn json_from_random_text(text in random_text(256)) {
        if let Ok(spec) = ModelSpec::from_json(&text) {
            check_model(&spec)?;
        }
    }

    #[test]
    fn toml_near_valid(text in mutated(toml_text())) {
        if let Ok(spec) = ModelSpec::from_toml(&text) {
            check_model(&spec)?;
        }
    }

    #[test]
    fn json_at_the_limits(text in extreme_json()) {
        if let Ok(spec) = ModelSpec::from_json(&text) {
            check_model(&spec)?;
        }
    }

    #[test]
    fn json_near_valid(text in mutated(json_text())) {
        if let Ok(spec) = ModelSpec::from_json(&text) {
            check_model(&spec)?;
        }
    }
}
