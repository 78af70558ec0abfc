//! Chrome trace-event export of any [`Trace`], simulated or measured: opens in Perfetto
//! (ui.perfetto.dev) and chrome://tracing.
//!
//! Layout: one process; one thread track per rank (named `rank r`, sorted by rank); one complete
//! event (`ph: "X"`) per action, named like `1F3`, with the stage, op and micro-batch in `args`;
//! one counter track per rank (`ph: "C"`) for live bytes, and one for host bytes on a rank that
//! offloads; and a flow arrow (`ph: "s"` → `"f"`)
//! from each send to its receive. Timestamps are microseconds: a trace in ms is scaled by 1000,
//! and abstract simulator units are drawn as if they were milliseconds.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use pipesched_schedules::{Action, Source, Trace};

use crate::output::{finish_atomic, temp_path};
use crate::{Error, Result};

/// The most spans a Chrome trace is written with: beyond a few million events neither Perfetto
/// nor chrome://tracing loads the file.
pub const MAX_SPANS: u64 = 2_000_000;

/// Refuses, before any work, a trace of `spans` actions too large to export.
pub fn check_size(spans: u64) -> Result<()> {
    if spans <= MAX_SPANS {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--trace: the step has {spans} actions, and a Chrome trace of more than {MAX_SPANS} does not load in Perfetto or chrome://tracing; trace a smaller run (fewer micro-batches -m or ranks -p), or drop --trace and use --json for the numbers"
    )))
}

/// Microseconds per trace time unit.
fn scale(trace: &Trace) -> f64 {
    match trace.time_unit.as_str() {
        "s" => 1e6,
        "us" => 1.0,
        _ => 1e3,
    }
}

/// The trace as a Chrome trace-event JSON value (for tests and small traces; files are written
/// event by event by [`write_chrome_trace`]).
pub fn chrome_trace(trace: &Trace) -> Value {
    let mut events = Vec::new();
    for_each_event(trace, |e| events.push(e));
    let source = source_name(trace);
    json!({"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"time_unit": trace.time_unit, "source": source}})
}

fn source_name(trace: &Trace) -> &'static str {
    match trace.source {
        Source::Simulated => "simulated",
        Source::Measured => "measured",
    }
}

/// Calls `emit` with every event of the trace, in file order.
fn for_each_event(trace: &Trace, mut emit: impl FnMut(Value)) {
    let k = scale(trace);
    let source = source_name(trace);
    emit(json!({
        "name": "process_name", "ph": "M", "pid": 0,
        "args": {"name": format!("pipesched {} p={} m={} v={} ({source})", trace.schedule, trace.p, trace.m, trace.v)}
    }));
    for (r, rank) in trace.ranks.iter().enumerate() {
        emit(json!({"name": "thread_name", "ph": "M", "pid": 0, "tid": r, "args": {"name": format!("rank {r}")}}));
        emit(json!({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": r, "args": {"sort_index": r}}));
        for span in rank.spans() {
            let a = span.action;
            emit(json!({
                "name": a.to_string(), "cat": a.op.to_string(), "ph": "X",
                "ts": span.start * k, "dur": span.duration() * k, "pid": 0, "tid": r,
                "args": {"stage": a.stage, "op": a.op.to_string(), "microbatch": a.microbatch}
            }));
        }
        for sample in &rank.memory {
            emit(json!({
                "name": format!("rank {r} live bytes"), "ph": "C", "ts": sample.time * k, "pid": 0,
                "args": {"bytes": sample.bytes}
            }));
        }
        for sample in &rank.host {
            emit(json!({
                "name": format!("rank {r} host bytes"), "ph": "C", "ts": sample.time * k, "pid": 0,
                "args": {"bytes": sample.bytes}
            }));
        }
    }
    // Gradient sums over replicas: each rank's communication thread, after the ranks.
    let p = trace.ranks.len();
    for (r, sums) in trace.sums.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let tid = p + r;
        emit(
            json!({"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": format!("rank {r} sums")}}),
        );
        emit(json!({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": tid, "args": {"sort_index": tid}}));
        for sum in sums {
            emit(json!({
                "name": format!("Σ stage {}", sum.stage), "cat": "sum", "ph": "X",
                "ts": sum.start * k, "dur": (sum.end - sum.start) * k, "pid": 0, "tid": tid,
                "args": {"stage": sum.stage, "bytes": sum.bytes}
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
        emit(
            json!({"name": name, "cat": "transfer", "ph": "s", "id": id, "ts": start_ts, "pid": 0, "tid": t.from_rank}),
        );
        emit(json!({
            "name": name, "cat": "transfer", "ph": "f", "bp": "e", "id": id, "ts": finish_ts, "pid": 0, "tid": t.to_rank,
            "args": {"sent": t.sent, "received": t.received}
        }));
    }
}

/// Writes the Chrome trace of `trace` to `path`, event by event into a temporary file that is
/// renamed when complete. Refuses traces of more than [`MAX_SPANS`] actions.
pub fn write_chrome_trace(trace: &Trace, path: &Path) -> Result<()> {
    check_size(trace.num_spans() as u64)?;
    let tmp = temp_path(path);
    let io = |source| Error::Io { action: "cannot write the Chrome trace", path: tmp.clone(), source };
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    let mut result = out.write_all(b"{\"traceEvents\":[");
    let mut first = true;
    for_each_event(trace, |event| {
        if result.is_ok() {
            let sep: &[u8] = if first { b"" } else { b"," };
            first = false;
            result =
                out.write_all(sep).and_then(|()| serde_json::to_writer(&mut out, &event).map_err(std::io::Error::from));
        }
    });
    let tail = json!({"time_unit": trace.time_unit, "source": source_name(trace)});
    result = result
        .and_then(|()| write!(out, "],\"displayTimeUnit\":\"ms\",\"otherData\":{tail}}}"))
        .and_then(|()| out.flush());
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    finish_atomic(&tmp, path)
}
