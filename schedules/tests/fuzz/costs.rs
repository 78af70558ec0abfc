//! Strategies for cost-model values, shared by the fuzz tests that build cost models and cost
//! files: times, byte counts and whole stage costs, each mixing ordinary values with the
//! extremes a file may hold.

use pipesched_schedules::StageCost;
use proptest::prelude::*;

/// A time as cost files write them: small, zero, or very large.
pub fn time() -> impl Strategy<Value = f64> {
    prop_oneof![0.0..10.0f64, Just(0.0), Just(1e300)]
}

/// A bandwidth in bytes per time unit, or none (unlimited): ordinary, or so small or so large
/// that message times overflow or vanish.
pub fn bandwidth() -> impl Strategy<Value = Option<f64>> {
    prop::option::of(prop_oneof![1.0..1e9f64, Just(1e-300), Just(1e300)])
}

/// A byte count: small, zero, or near the top of u64.
pub fn bytes() -> impl Strategy<Value = u64> {
    prop_oneof![0..(1u64 << 24), Just(0), Just(u64::MAX / 3)]
}

/// One stage's costs, every field drawn from the strategies above.
pub fn stage_cost() -> impl Strategy<Value = StageCost> {
    (time(), time(), time(), prop::option::of(time()), [bytes(), bytes(), bytes(), bytes(), bytes()]).prop_map(
        |(f, i, w, r, [a, rc, wb, fm, bm])| StageCost {
            f,
            i,
            w,
            r,
            act_bytes: a,
            recompute_bytes: rc,
            w_bytes: wb,
            fwd_msg_bytes: fm,
            bwd_msg_bytes: bm,
        },
    )
}
