//! The benchmark's outputs: the Markdown table, the JSON file (written atomically), and the
//! charts — a timeline + memory figure per configuration, throughput bars, and the memory vs
//! throughput trade-off with its Pareto front. The table and both charts mark the best or tied
//! configurations by one rule, [`crate::ranking`]'s.

use std::path::{Path, PathBuf};

use serde_json::json;

use pipesched::output::write_atomic;
use pipesched::{units, Result};
use pipesched_charts::{render, render_stack};

use crate::charts::{render_throughput, render_tradeoff, ConfigPoint};
use crate::config::Args;
use crate::ranking::{self, Standing};
use crate::sweep::{Outcome, Row};

/// Fills in every row's throughput relative to the best.
pub fn rank(rows: &mut [Row]) {
    let best = rows.iter().map(|r| r.throughput).fold(0.0, f64::max);
    for r in rows {
        r.relative_throughput = if best > 0.0 { r.throughput / best } else { 0.0 };
    }
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// The Markdown table: one row per configuration, the best (`★ best`) or tied ones marked after
/// their name, and a line under the table saying what the mark means for this run.
pub fn table(args: &Args, rows: &[Row], unit: &str) -> String {
    let measured = !args.simulate_only;
    let standings = ranking::of_rows(rows);
    let mut out = String::new();
    out.push_str(&format!(
        "| configuration | step (ms) | spread (ms) | {unit} / s | vs best | bubble measured | bubble simulated | peak bytes (max rank) measured | predicted | activations rank 0 | recompute share |\n"
    ));
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (r, standing) in rows.iter().zip(&standings) {
        let name = match standing {
            Standing::Rest => r.label.clone(),
            marked => format!("{} {}", r.label, marked.mark()),
        };
        let spread = match (r.step_ms.iter().copied().reduce(f64::min), r.step_ms.iter().copied().reduce(f64::max)) {
            (Some(lo), Some(hi)) if measured => format!("{lo:.1}–{hi:.1}"),
            _ => "—".into(),
        };
        let peak_m = r.peak_bytes_measured.as_ref().and_then(|v| v.iter().max().copied());
        let peak_p = r.peak_bytes_predicted.iter().max().copied().unwrap_or(0);
        let rank0 = r.peak_bytes_measured.as_ref().unwrap_or(&r.peak_bytes_predicted).first().copied().unwrap_or(0);
        let act0 = rank0.saturating_sub(r.static_bytes.first().copied().unwrap_or(0));
        out.push_str(&format!(
            "| {} | {:.1} | {} | {:.1} | {:.3} | {} | {} | {} | {} | {} | {} |\n",
            name,
            r.step_ms_median,
            spread,
            r.throughput,
            r.relative_throughput,
            r.bubble_measured.map_or("—".into(), pct),
            pct(r.bubble_simulated),
            peak_m.map_or("—".into(), units::bytes),
            units::bytes(peak_p),
            units::bytes(act0),
            pct(r.recompute_share),
        ));
    }
    let what = if measured { "step-time spread (slowest to fastest measured step)" } else { "simulated step time" };
    if standings.contains(&Standing::Best) {
        out.push_str(&format!("\n★ best: the fastest, and its {what} overlaps no other configuration's.\n"));
    } else if standings.contains(&Standing::Tied) {
        out.push_str(&format!(
            "\ntied: the fastest and every configuration whose {what} overlaps the fastest's; this run cannot order them.\n"
        ));
    }
    out
}

/// A short description of this machine: CPU model and core count.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Writes `bench.json` into `--out`.
pub fn write_json(
    args: &Args,
    rows: &[Row],
    skipped: &[(String, String)],
    failed: &[(String, String)],
    gpu_products: Option<&[crate::gpu::ProductRow]>,
) -> Result<PathBuf> {
    let path = args.out.file("bench.json");
    let list =
        |l: &[(String, String)]| l.iter().map(|(c, why)| json!({"config": c, "reason": why})).collect::<Vec<_>>();
    let doc = json!({
        "date": today(),
        "machine": machine(),
        "model": args.model.model.to_string(),
        "p": args.shape.layout.p, "m": args.shape.m, "chunks": args.shape.layout.chunks, "batch": args.model.batch,
        "devices": args.model.devices.to_string(),
        "precision": args.model.precision.map(|p| p.to_string()),
        "steps": args.steps.steps, "warmup": args.steps.warmup, "simulate_only": args.simulate_only,
        "configs": rows,
        "gpu_products": gpu_products,
        "skipped": list(skipped),
        "failed": list(failed),
    });
    let text = serde_json::to_string_pretty(&doc).expect("JSON values always serialise");
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Writes every chart into `dir`; returns the files written.
pub fn write_charts(dir: &Path, args: &Args, outcomes: &[Outcome], unit: &str) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for o in outcomes {
        let path = dir.join(format!("bench-{}.png", o.row.label.replace(" / ", "-").replace(':', "")));
        match &o.measured {
            Some(m) => render_stack(&[("simulated", &o.simulated), ("measured", m)], &path)?,
            None => render(&o.simulated, &path)?,
        }
        written.push(path);
    }
    let rows: Vec<Row> = outcomes.iter().map(|o| o.row.clone()).collect();
    let points: Vec<ConfigPoint> = outcomes
        .iter()
        .zip(ranking::of_rows(&rows))
        .map(|(o, standing)| ConfigPoint {
            label: o.row.label.clone(),
            schedule: o.row.schedule.clone(),
            recompute: o.row.recompute.clone(),
            throughput: o.row.throughput,
            throughput_lo: o.row.throughput_range.0,
            throughput_hi: o.row.throughput_range.1,
            peak_bytes: o
                .row
                .peak_bytes_measured
                .as_ref()
                .unwrap_or(&o.row.peak_bytes_predicted)
                .iter()
                .copied()
                .max()
                .unwrap_or(0),
            standing,
        })
        .collect();
    if points.is_empty() {
        return Ok(written);
    }
    let what = if args.simulate_only { "simulated" } else { "measured" };
    let title = format!("{} · p={} m={} · {what}", args.model_label(), args.shape.layout.p, args.shape.m);
    for ext in ["svg", "png"] {
        let t = dir.join(format!("bench-throughput.{ext}"));
        render_throughput(&points, &format!("{unit} per second · {title}"), &t)?;
        let f = dir.join(format!("bench-tradeoff.{ext}"));
        render_tradeoff(&points, &format!("peak memory vs {unit} per second · {title}"), &f)?;
        written.extend([t, f]);
    }
    Ok(written)
}
