//! The validator rejects broken schedules, each with a message naming rank, step and action and
//! a grid with the offending step marked.

use pipesched_schedules::{validate, Action, Error, Placement, Schedule};

/// A loop-placed schedule from one line of action strings per rank, not validated.
fn schedule(m: usize, lanes: &[&str]) -> Schedule {
    let lanes: Vec<Vec<Action>> =
        lanes.iter().map(|l| l.split_whitespace().map(|a| a.parse().unwrap()).collect()).collect();
    Schedule::new("hand", lanes.len(), 1, m, Placement::Loop, lanes)
}

fn rejection(s: &Schedule) -> (String, String) {
    match validate(s).unwrap_err() {
        Error::Invalid { reason, grid } | Error::Deadlock { reason, grid } => (reason, grid),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn missing_backward() {
    let (reason, grid) = rejection(&schedule(2, &["0F0 0F1 0B0", "1F0 1F1 1B0 1B1"]));
    assert_eq!(
        reason,
        "missing backward: 0F1 (rank 0, step 1) has no backward; add 0B1 or both 0I1 and 0W1 to rank 0's lane"
    );
    assert!(grid.contains("[0F1]"), "{grid}");
}

#[test]
fn forward_only_schedules_need_every_forward_and_no_backward_anywhere() {
    let ok = schedule(2, &["0F0 0F1", "1F0 1F1"]);
    assert!(ok.is_forward_only());
    pipesched_schedules::validate(&ok).unwrap();
    // One stage training while the other only runs forwards is neither.
    let (reason, _) = rejection(&schedule(2, &["0F0 0F1", "1F0 1F1 1B0 1B1"]));
    assert_eq!(
        reason,
        "missing backward: 0F0 (rank 0, step 0) has no backward; add 0B0 or both 0I0 and 0W0 to rank 0's lane"
    );
    let (reason, _) = rejection(&schedule(2, &["0F0 0F1", "1F0"]));
    assert_eq!(reason, "missing forward: stage 1, micro-batch 1 has no 1F1 (expected in rank 1's lane)");
}

#[test]
fn duplicate_forward() {
    let (reason, grid) = rejection(&schedule(1, &["0F0 0F0 0B0", "1F0 1B0"]));
    assert_eq!(reason, "duplicate forward: 0F0 appears at rank 0, step 0 and again at rank 0, step 1");
    assert!(grid.contains("[0F0][0F0]"), "{grid}");
}

#[test]
fn backward_before_its_forward() {
    let (reason, grid) = rejection(&schedule(1, &["0B0 0F0", "1F0 1B0"]));
    assert_eq!(reason, "backward before its forward: 0B0 at rank 0, step 0 comes before 0F0 at step 1");
    assert!(grid.contains("[0B0]"), "{grid}");
}

#[test]
fn w_before_i() {
    let (reason, grid) = rejection(&schedule(1, &["0F0 0W0 0I0", "1F0 1I0 1W0"]));
    assert_eq!(reason, "W before I: 0W0 at rank 0, step 1 comes before 0I0 at step 2");
    assert!(grid.contains("[0W0]"), "{grid}");
}

#[test]
fn action_on_a_rank_that_does_not_hold_its_stage() {
    let (reason, grid) = rejection(&schedule(1, &["0F0 1F0 0B0", "1B0"]));
    assert_eq!(reason, "rank 0, step 1: 1F0 runs stage 1 on rank 0, but loop placement puts stage 1 on rank 1");
    assert!(grid.contains("[1F0]"), "{grid}");
}

#[test]
fn two_ranks_waiting_for_each_other_deadlock() {
    // Rank 0 waits for the gradient of micro-batch 0 before sending micro-batch 1's activation,
    // rank 1 waits for micro-batch 1's activation before sending micro-batch 0's gradient.
    let s = schedule(2, &["0F0 0B0 0F1 0B1", "1F0 1F1 1B0 1B1"]);
    let (reason, grid) = rejection(&s);
    // Rank 1 gets 1F0 in, then needs 0F1, which rank 0 runs only after 0B0 — which needs 1B0.
    assert_eq!(
        reason,
        "rank 0 is stuck at step 1 on 0B0, waiting for 1B0 (rank 1, step 2); rank 1 is stuck at step 1 on 1F1, waiting for 0F1 (rank 0, step 2)"
    );
    assert!(grid.contains("[0B0]") && grid.contains("[1F1]"), "{grid}");
    let text = validate(&s).unwrap_err().to_string();
    assert!(text.starts_with("deadlock: "), "{text}");
}

#[test]
fn out_of_range_indices() {
    let (reason, _) = rejection(&schedule(1, &["0F0 0F1 0B0", "1F0 1B0"]));
    assert!(reason.contains("names micro-batch 1, but the schedule has m=1"), "{reason}");
    let (reason, _) = rejection(&schedule(1, &["0F0 0B0 2F0", "1F0 1B0"]));
    assert!(reason.contains("names stage 2, but the model has 2 stages"), "{reason}");
}

#[test]
fn shape_problems() {
    let mut s = schedule(1, &["0F0 0B0"]);
    s.p = 2;
    assert!(rejection(&s).0.contains("p=2 ranks but 1 lanes"));
    s.p = 1;
    s.m = 0;
    assert!(rejection(&s).0.contains("at least 1"));
}

#[test]
fn a_wide_deadlocked_schedule_shows_a_window_around_the_stuck_steps() {
    let mut lanes = [String::new(), String::new()];
    for j in 0..60 {
        lanes[0].push_str(&format!("0F{j} 0B{j} "));
        lanes[1].push_str(&format!("1F{j} 1B{j} "));
    }
    // Swap rank 1's last two micro-batches' order so rank 0's 0B58 waits on a 1B58 that
    // comes after 1F59, which waits on 0F59, which comes after 0B58.
    lanes[1] = lanes[1].replace("1F58 1B58 1F59 1B59", "1F58 1F59 1B58 1B59");
    let s = schedule(60, &[lanes[0].as_str(), lanes[1].as_str()]);
    let (_, grid) = rejection(&s);
    assert!(grid.contains("[0B58]") && grid.contains('…'), "{grid}");
    assert!(grid.lines().all(|l| l.chars().count() < 400));
}

#[test]
fn a_stage_with_two_kinds_of_backward() {
    // Stage 1 gives micro-batch 0 a full backward and micro-batch 1 a split one: its gradient for
    // stage 0 would come from B for one and I for the other.
    let (reason, grid) = rejection(&schedule(2, &["0F0 0F1 0B0 0B1", "1F0 1B0 1F1 1I1 1W1"]));
    assert!(reason.starts_with("stage 1 mixes backward kinds: micro-batch 0 has a full backward 1B0"), "{reason}");
    assert!(grid.contains("[1B0]") && grid.contains("[1I1]"), "{grid}");
}

#[test]
fn the_simulator_refuses_what_validate_refuses() {
    use pipesched_schedules::{simulate, CostModel};
    // A duplicate forward and an action on the wrong rank: neither stops a walk of the lanes.
    for lanes in [["0F0 0F0 0B0", "1F0 1B0"], ["0F0 0B0 1F0", "1B0"]] {
        let s = schedule(1, &lanes);
        let e = simulate(&s, &CostModel::per_rank(1.0, 1.0, 1.0)).unwrap_err();
        assert_eq!(e, validate(&s).unwrap_err(), "{lanes:?}");
    }
}

#[test]
fn offload_and_reload_in_the_wrong_order_or_unpaired() {
    let ok = schedule(1, &["0F0 0O0 0L0 0B0"]);
    validate(&ok).unwrap();
    let (reason, grid) = rejection(&schedule(1, &["0F0 0L0 0O0 0B0"]));
    assert_eq!(reason, "reload before its offload: 0L0 at rank 0, step 1 comes before 0O0 at step 2");
    assert!(grid.contains("[0L0]"), "{grid}");
    let (reason, _) = rejection(&schedule(1, &["0F0 0O0 0B0 0L0"]));
    assert_eq!(reason, "recompute or backward before its reload: 0B0 at rank 0, step 2 comes before 0L0 at step 3");
    let (reason, _) = rejection(&schedule(1, &["0F0 0O0 0R0 0L0 0B0"]));
    assert_eq!(reason, "recompute or backward before its reload: 0R0 at rank 0, step 2 comes before 0L0 at step 3");
    let (reason, _) = rejection(&schedule(1, &["0O0 0F0 0L0 0B0"]));
    assert_eq!(reason, "offload before its forward: 0O0 at rank 0, step 0 comes before 0F0 at step 1");
    let (reason, _) = rejection(&schedule(1, &["0F0 0O0 0B0"]));
    assert_eq!(
        reason,
        "offload without its reload: 0O0 at rank 0, step 1 has no matching 0L0; an offloaded micro-batch must be reloaded before its backward, so give both or neither"
    );
    let (reason, _) = rejection(&schedule(1, &["0F0 0O0 0O0 0L0 0B0"]));
    assert!(reason.starts_with("duplicate offload: 0O0"), "{reason}");
}
