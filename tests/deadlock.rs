//! A pipeline that hangs fails within the timeout with a per-rank diagnostic on the schedule
//! grid, and every worker is joined — instead of hanging forever.

use std::time::Duration;

use pipesched::exec::{execute, ExecOptions};
use pipesched::synthetic::{SyntheticSpec, SyntheticStage};
use pipesched::Error;
use pipesched_schedules::{Action, Placement, Schedule};

fn schedule(m: usize, lanes: &[&str]) -> Schedule {
    let lanes: Vec<Vec<Action>> =
        lanes.iter().map(|l| l.split_whitespace().map(|a| a.parse().unwrap()).collect()).collect();
    Schedule::new("hand", lanes.len(), 1, m, Placement::Loop, lanes)
}

fn stages(n: usize) -> Vec<SyntheticStage> {
    let spec = SyntheticSpec::parse("F=100us,I=100us,W=100us,mem=1KiB").unwrap();
    (0..n).map(|_| SyntheticStage::new(spec.clone())).collect()
}

fn hang_report(s: &Schedule) -> String {
    let opts = ExecOptions { timeout: Duration::from_millis(300), ..Default::default() };
    match execute(s, &mut stages(s.stages()), &opts) {
        Err(Error::Hang { report, .. }) => report,
        Err(other) => panic!("expected a hang, got {other}"),
        Ok(_) => panic!("expected a hang, the step finished"),
    }
}

#[test]
fn two_ranks_waiting_for_each_other() {
    let s = schedule(2, &["0F0 0B0 0F1 0B1", "1F0 1F1 1B0 1B1"]);
    let report = hang_report(&s);
    assert!(
        report.contains(
            "rank 0, step 1: waiting to run 0B0: needs 1B0 from rank 1 (its step 2, not reached: rank 1 is at step 1)"
        ),
        "{report}"
    );
    assert!(
        report.contains(
            "rank 1, step 1: waiting to run 1F1: needs 0F1 from rank 0 (its step 2, not reached: rank 0 is at step 1)"
        ),
        "{report}"
    );
    assert!(report.contains("[0B0]") && report.contains("[1F1]"), "{report}");
}

#[test]
fn a_rank_that_never_sends() {
    // Rank 0 forgets micro-batch 1 entirely.
    let s = schedule(2, &["0F0 0B0", "1F0 1B0 1F1 1B1"]);
    let report = hang_report(&s);
    assert!(report.contains("rank 0, step 2: finished its lane"), "{report}");
    assert!(
        report.contains(
            "rank 1, step 2: waiting to run 1F1: needs 0F1 from rank 0 (not in rank 0's lane: it will never be sent)"
        ),
        "{report}"
    );
    assert!(report.contains("[1F1]"), "{report}");
}

#[test]
fn the_error_message_explains_the_hang() {
    let s = schedule(2, &["0F0 0B0 0F1 0B1", "1F0 1F1 1B0 1B1"]);
    let e = execute(&s, &mut stages(2), &ExecOptions { timeout: Duration::from_millis(200), ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("pipeline hang: rank "), "{e}");
    assert!(e.contains("waited 200ms"), "{e}");
}

#[test]
fn a_stage_error_stops_every_rank() {
    // W before I on rank 1: the synthetic stage refuses, and rank 0 (waiting for 1I0) stops.
    let s = schedule(1, &["0F0 0I0 0W0", "1F0 1W0 1I0"]);
    let e = execute(&s, &mut stages(2), &ExecOptions { timeout: Duration::from_secs(60), ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank 1, step 1 (1W0)") && e.contains("without its input-gradient backward"), "{e}");
}
