//! The simulator's memory estimate is an upper bound: for every generator, with and without
//! bytes in the cost model, keeping the trace or only the stats, the heap a simulation allocates
//! beyond its schedule's lanes stays within what `Footprint::simulation_bytes` says — the number
//! `pipesched simulate` refuses requests by before it allocates anything. Building V-Half and
//! V-Min stays within `Footprint::schedule_bytes` too.

use peak_alloc::PeakAlloc;
use pipesched_schedules::{simulate, simulate_stats, CostModel, Footprint, Kind, Simulation, StageCost, StageCosts};

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// The heap's peak is one counter for the whole process, which the test harness's own thread
/// also moves when a test ends (it records the result): so this file has one test, which
/// measures each case in turn.
#[test]
fn simulations_and_slot_grids_allocate_no_more_than_their_estimates() {
    a_simulation_allocates_no_more_than_its_estimate();
    the_slot_grid_generators_allocate_no_more_than_their_estimate();
}

/// Per-stage costs with every kind of byte, different on every stage.
fn with_bytes(stages: usize) -> CostModel {
    let costs = (0..stages as u64)
        .map(|s| StageCost {
            act_bytes: 100 + s,
            recompute_bytes: 10,
            w_bytes: 50 + s,
            fwd_msg_bytes: 30,
            bwd_msg_bytes: 20 + s,
            ..StageCost::times(1.0 + s as f64 * 0.1, 1.5, 0.5)
        })
        .collect();
    CostModel {
        costs: StageCosts::Stages(costs),
        latency: 0.3,
        bandwidth: None,
        static_bytes: vec![1000],
        host_link: None,
        time_unit: "ms".into(),
    }
}

fn a_simulation_allocates_no_more_than_its_estimate() {
    let mut checked = 0;
    for kind in Kind::ALL {
        for (p, m) in [(4, 32), (8, 64), (16, 256)] {
            let v = kind.default_chunks();
            let Ok(s) = kind.generate(p, v, m) else { continue };
            let footprint = Footprint::of(kind, p, v, m, 0).unwrap();
            let lanes = 8 * footprint.actions;
            for bytes in [false, true] {
                let costs = if bytes { with_bytes(s.stages()) } else { CostModel::per_rank(1.0, 1.0, 0.5) };
                for trace in [false, true] {
                    let estimate = footprint.simulation_bytes(Simulation { trace, with_bytes: bytes }).unwrap() - lanes;
                    let base = HEAP.current_usage();
                    HEAP.reset_peak_usage();
                    if trace {
                        drop(simulate(&s, &costs).unwrap());
                    } else {
                        drop(simulate_stats(&s, &costs).unwrap());
                    }
                    let used = (HEAP.peak_usage() - base) as u64;
                    assert!(
                        used <= estimate,
                        "{kind} p={p} m={m} bytes={bytes} trace={trace}: {used} bytes allocated, {estimate} estimated"
                    );
                    checked += 1;
                }
            }
        }
    }
    // Every generator takes all three sizes; two cost models × two ways to keep the result.
    assert_eq!(checked, Kind::ALL.len() * 3 * 4);
}

/// V-Half and V-Min build their lanes on a grid of slots first: the heap that takes, lanes
/// included, stays within `Footprint::schedule_bytes`, for few and many micro-batches per rank.
fn the_slot_grid_generators_allocate_no_more_than_their_estimate() {
    for kind in [Kind::VHalf, Kind::VMin] {
        for (p, m) in [(1, 1), (4, 1), (4, 32), (8, 64), (32, 8), (64, 64), (16, 2048)] {
            let estimate = Footprint::of(kind, p, 2, m, 0).unwrap().schedule_bytes().unwrap();
            let base = HEAP.current_usage();
            HEAP.reset_peak_usage();
            let s = kind.generate(p, 2, m).unwrap();
            let used = (HEAP.peak_usage() - base) as u64;
            drop(s);
            assert!(used <= estimate, "{kind} p={p} m={m}: {used} bytes allocated, {estimate} estimated");
        }
    }
}
