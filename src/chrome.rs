//! Chrome trace-event export of any [`Trace`], simulated or measured: opens in Perfetto
//! (ui.perfetto.dev) and chrome://tracing.
//!
//! Layout: one process; one thread track per rank (named `rank r`, sorted by rank); one complete
//! event (`ph: "X"`) per action, named like `1F3`, with the stage, op and micro-batch in `args`;
//! one counter track per rank (`ph: "C"`) for live bytes; and a flow arrow (`ph: "s"` → `"f"`)
//! from each send to its receive. Timestamps are microseconds: a trace in ms is scaled by 1000,
//! and abstract simulator units are drawn as if they were milliseconds.

use std::path::Path;

use serde_json::{json, Value};

use std::collections::HashMap;

use pipesched_schedules::{Action, Source, Trace};

use crate::output::write_atomic;
use crate::Result;

/// Microseconds per trace time unit.
fn scale(trace: &Trace) -> f64 {
    match trace.time_unit.as_str() {
        "s" => 1e6,
        "us" => 1.0,
        _ => 1e3,
    }
}

/// The trace as a Chrome trace-event JSON value.
pub fn chrome_trace(trace: &Trace) -> Value {
    let k = scale(trace);
    let source = match trace.source {
        Source::Simulated => "simulated",
        Source::Measured => "measured",
    };
    let mut events = vec![json!({
        "name": "process_name", "ph": "M", "pid": 0,
        "args": {"name": format!("pipesched {} p={} m={} v={} ({source})", trace.schedule, trace.p, trace.m, trace.v)}
    })];
    for (r, rank) in trace.ranks.iter().enumerate() {
        events
            .push(json!({"name": "thread_name", "ph": "M", "pid": 0, "tid": r, "args": {"name": format!("rank {r}")}}));
        events.push(json!({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": r, "args": {"sort_index": r}}));
        for span in rank.spans() {
            let a = span.action;
            events.push(json!({
                "name": a.to_string(), "cat": a.op.to_string(), "ph": "X",
                "ts": span.start * k, "dur": span.duration() * k, "pid": 0, "tid": r,
                "args": {"stage": a.stage, "op": a.op.to_string(), "microbatch": a.microbatch}
            }));
        }
        for sample in &rank.memory {
            events.push(json!({
                "name": format!("rank {r} live bytes"), "ph": "C", "ts": sample.time * k, "pid": 0,
                "args": {"bytes": sample.bytes}
            }));
        }
    }
    let starts: HashMap<Action, f64> =
        trace.ranks.iter().flat_map(|r| r.spans().map(|s| (s.action, s.start))).collect();
    for (id, t) in trace.transfers().iter().enumerate() {
        // The start binds to the producer's slice (a hair before its end), the finish to the
        // consumer's slice that encloses the arrival ("bp": "e").
        let from_start = starts.get(&t.from).copied().unwrap_or(t.sent);
        let start_ts = (t.sent * k - 0.001).max(from_start * k);
        let finish_ts = starts.get(&t.to).copied().unwrap_or(t.received) * k;
        let name = format!("{} → {}", t.from, t.to);
        events.push(
            json!({"name": name, "cat": "transfer", "ph": "s", "id": id, "ts": start_ts, "pid": 0, "tid": t.from_rank}),
        );
        events.push(json!({
            "name": name, "cat": "transfer", "ph": "f", "bp": "e", "id": id, "ts": finish_ts, "pid": 0, "tid": t.to_rank,
            "args": {"sent": t.sent, "received": t.received}
        }));
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"time_unit": trace.time_unit, "source": source}})
}

/// Writes the Chrome trace of `trace` to `path` (atomically).
pub fn write_chrome_trace(trace: &Trace, path: &Path) -> Result<()> {
    let text = serde_json::to_string(&chrome_trace(trace)).expect("a JSON value always serialises");
    write_atomic(path, text.as_bytes())
}
