//! The profiler times every rank's ops with every rank busy: a rank done measuring runs its ops
//! again, unmeasured, until the last rank is done, and then every rank stops.

use std::sync::atomic::{AtomicUsize, Ordering};

use pipesched::exec::Transport;
use pipesched::profile::{profile, ProfileOptions};
use pipesched::synthetic::{SyntheticSpec, SyntheticStage};
use pipesched_schedules::{Kind, StageCosts};

#[test]
fn a_rank_done_early_keeps_running_until_the_last_is_done() {
    let s = Kind::GPipe.generate(2, 1, 2).unwrap();
    let fast = SyntheticSpec::parse("F=100us,I=100us,W=100us").unwrap();
    let slow = SyntheticSpec::parse("F=10ms,I=10ms,W=10ms").unwrap();
    let mut stages = vec![SyntheticStage::new(fast).at(0), SyntheticStage::new(slow).at(1)];
    let opts = ProfileOptions { warmup: 1, reps: 3, recompute: vec![false; 2] };
    // `prepare` is called before every run of a stage: with the run's number while measuring
    // (1 to 4 here) and with 0 for the recording pass and for every unmeasured run after.
    let (measuring, after) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let prepare = |_: &mut SyntheticStage, run: usize| {
        let count = if run == 0 { &after } else { &measuring };
        count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    };
    let costs = profile(&s, &mut stages, &opts, prepare, &Transport::InProcess).unwrap();
    assert_eq!(measuring.load(Ordering::Relaxed), 2 * 4, "each stage measured warm-up + reps times");
    // The slow rank measures for 4 × 30 ms; the fast one's runs take 0.3 ms each. Its extra runs
    // (beyond the recording pass's 2) kept it busy all that time, bar scheduling hiccups.
    let extra = after.load(Ordering::Relaxed) - 2;
    assert!(extra >= 20, "the fast rank ran only {extra} extra runs while the slow one measured");
    // Nothing of the extra runs is in the costs.
    let StageCosts::Stages(stages) = &costs.costs else { panic!("per-stage costs expected") };
    assert!(
        stages[0].f < 5.0 && stages[1].f >= 10.0,
        "F per stage {:?} ms, not 0.1 and 10",
        [stages[0].f, stages[1].f]
    );
}
