//! Chrome traces follow the trace-event format that Perfetto and chrome://tracing read: every
//! event has the fields its phase requires, slices match the trace's actions, and every flow
//! arrow starts and ends inside a slice on the right track.

use std::time::Duration;

use serde_json::Value;

use pipesched::chrome::{chrome_trace, write_chrome_trace};
use pipesched::exec::{execute, ExecOptions};
use pipesched::synthetic::{SyntheticSpec, SyntheticStage};
use pipesched_schedules::{simulate, CostModel, Kind, StageCost, StageCosts, Trace};

fn measured_1f1b() -> Trace {
    let s = Kind::OneFOneB.generate(2, 1, 8).unwrap();
    let spec = SyntheticSpec::parse("F=200us,I=200us,W=100us,mem=64KiB").unwrap();
    let mut stages: Vec<SyntheticStage> = (0..2).map(|_| SyntheticStage::new(spec.clone())).collect();
    execute(&s, &mut stages, &ExecOptions { timeout: Duration::from_secs(30), ..Default::default() }).unwrap()
}

fn num(e: &Value, key: &str) -> f64 {
    e[key].as_f64().unwrap_or_else(|| panic!("{key} must be a number in {e}"))
}

/// Checks the required fields of every event and returns the events.
fn check_format(doc: &Value) -> Vec<Value> {
    let events = doc["traceEvents"].as_array().expect("traceEvents is an array").clone();
    for e in &events {
        let ph = e["ph"].as_str().expect("every event has a phase");
        assert!(e["pid"].is_u64(), "pid in {e}");
        assert!(e["name"].is_string(), "name in {e}");
        match ph {
            "M" => assert!(e["args"]["name"].is_string() || e["args"]["sort_index"].is_u64(), "{e}"),
            "X" => {
                assert!(e["tid"].is_u64() && e["cat"].is_string(), "{e}");
                assert!(num(e, "ts") >= 0.0 && num(e, "dur") >= 0.0, "{e}");
                assert!(e["args"]["stage"].is_u64() && e["args"]["microbatch"].is_u64(), "{e}");
            }
            "C" => {
                num(e, "ts");
                assert!(e["args"].as_object().unwrap().values().all(Value::is_number), "{e}");
            }
            "s" | "f" => {
                assert!(e["id"].is_u64() && e["tid"].is_u64() && e["cat"].is_string(), "{e}");
                num(e, "ts");
            }
            other => panic!("unexpected phase {other}"),
        }
    }
    events
}

fn slices_on(events: &[Value], tid: u64) -> Vec<(f64, f64)> {
    events
        .iter()
        .filter(|e| e["ph"] == "X" && e["tid"] == tid)
        .map(|e| (num(e, "ts"), num(e, "ts") + num(e, "dur")))
        .collect()
}

#[test]
fn a_measured_1f1b_trace_is_well_formed() {
    let trace = measured_1f1b();
    let doc = chrome_trace(&trace);
    let events = check_format(&doc);
    let slices = events.iter().filter(|e| e["ph"] == "X").count();
    assert_eq!(slices, 2 * 2 * 8, "one slice per action");
    let names: Vec<&str> =
        events.iter().filter(|e| e["ph"] == "M").filter_map(|e| e["args"]["name"].as_str()).collect();
    assert!(names.contains(&"rank 0") && names.contains(&"rank 1"));
    // 8 activations forward and 8 gradients back, each an s/f pair binding inside slices.
    let starts: Vec<&Value> = events.iter().filter(|e| e["ph"] == "s").collect();
    assert_eq!(starts.len(), 16);
    for s in starts {
        let f = events.iter().find(|e| e["ph"] == "f" && e["id"] == s["id"]).expect("every flow finishes");
        let inside = |e: &Value| {
            let ts = num(e, "ts");
            slices_on(&events, e["tid"].as_u64().unwrap()).iter().any(|&(a, b)| a <= ts && ts <= b)
        };
        assert!(inside(s) && inside(f), "{s} / {f}");
        assert_ne!(s["tid"], f["tid"]);
    }
    assert!(events.iter().any(|e| e["ph"] == "C" && e["name"] == "rank 1 live bytes"));
}

/// Under a bandwidth each arrow carries its own delay: activations of 1024 bytes and gradients of
/// 3072 at 512 bytes per unit, latency 0.5, arrive 2.5 and 6.5 after they leave.
#[test]
fn simulated_transfers_arrive_after_latency_plus_bytes_over_bandwidth() {
    let s = Kind::GPipe.generate(3, 1, 4).unwrap();
    let cost = StageCost { fwd_msg_bytes: 1024, bwd_msg_bytes: 3072, ..StageCost::times(1.0, 1.0, 1.0) };
    let mut model = CostModel::per_rank(1.0, 1.0, 1.0).with_latency(0.5).with_bandwidth(512.0);
    model.costs = StageCosts::PerRank(cost);
    let doc = chrome_trace(&simulate(&s, &model).unwrap());
    let events = check_format(&doc);
    let finishes: Vec<&Value> = events.iter().filter(|e| e["ph"] == "f").collect();
    assert_eq!(finishes.len(), 2 * 2 * 4);
    for f in finishes {
        let delay = num(&f["args"], "received") - num(&f["args"], "sent");
        let forward = f["name"].as_str().unwrap().contains('F');
        assert_eq!(delay, if forward { 2.5 } else { 6.5 }, "{f}");
    }
}

#[test]
fn simulated_traces_export_too_and_files_are_written_whole() {
    let s = Kind::ZbH1.generate(4, 1, 8).unwrap();
    let trace = simulate(&s, &pipesched_schedules::CostModel::per_rank(1.0, 1.0, 0.5).with_latency(0.1)).unwrap();
    let dir = std::env::temp_dir().join(format!("pipesched-chrome-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("zb.json");
    write_chrome_trace(&trace, &path).unwrap();
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let events = check_format(&doc);
    assert_eq!(events.iter().filter(|e| e["ph"] == "X").count(), s.num_actions());
    std::fs::remove_dir_all(&dir).unwrap();
}
