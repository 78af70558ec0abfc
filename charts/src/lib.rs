//! Charts of pipeline traces: a timeline (one row per rank, one box per action, coloured by op)
//! above a memory panel (the bytes of every rank over the same time axis), as SVG or PNG — and the
//! house style (font, colours, axes, frames, atomic chart files) for other charts drawn in the
//! same look, among them line charts of labelled series ([`render_lines`]), such as a training
//! loss per step.
//!
//! The trace charts read nothing but a [`Trace`] and its [`Stats`]: a simulated and a measured step
//! are drawn alike.
//!
//! ```no_run
//! use pipesched_schedules::{simulate, CostModel, Kind};
//!
//! let schedule = Kind::ZbH1.generate(4, 1, 8)?;
//! let trace = simulate(&schedule, &CostModel::per_rank(1.0, 1.0, 0.5))?;
//! pipesched_charts::render(&trace, std::path::Path::new("zb-h1.png"))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What a chart shows of a large trace, and what it leaves out, is decided in one place per
//! panel, and the chart's legend says which was done: in the timeline, spans narrower than two
//! pixels become one bar per pixel column and rows hold several ranks past 128; in the memory
//! panel, lines are thinned to each pixel column's extremes and past 64 ranks every k-th rank's
//! line is drawn. Drawing cost is bounded by the chart's pixels, not by the trace: a step of 25
//! million spans is drawn, not refused.
//!
//! Invariant: a chart file appears under its final name complete or not at all, and no input —
//! empty, degenerate or huge — makes drawing panic: every failure is an [`Error`].
#![warn(missing_docs)]

mod curve;
mod error;
mod figure;
pub mod file;
pub mod font;
mod lines;
mod memory;
mod numbers;
pub mod page;
pub mod palette;
mod peaks;
mod raster;
pub mod rect;
mod timeline;
pub mod units;

pub use error::{Error, Result};
pub use file::{write, Sheet};
pub use lines::{render_lines, LineChart, Series, MARKERS};
pub use plotters;

use std::path::Path;

use pipesched_schedules::{Stats, Trace};

use figure::{Figure, Panel};

/// Draws `trace` to `path`: its title (schedule, p, m, v, makespan, bubble rate, who made it),
/// the timeline, and — when the trace counts bytes — the memory panel below on the same time
/// axis. The format follows the extension: `.svg` or `.png`.
///
/// # Errors
///
/// [`Error::Format`] for any other extension, [`Error::Io`] when the file cannot be written,
/// [`Error::Draw`] when drawing fails.
pub fn render(trace: &Trace, path: &Path) -> Result<()> {
    let panel = Panel { label: None, stats: Stats::of(trace), trace };
    write(&Figure::new(vec![panel]), path)
}

/// Draws several traces to `path` on one shared time axis (0 to the largest makespan): their
/// timelines stacked in the order given, each under its label and summary, then the memory
/// panels of those that count bytes, in the same order, on one shared byte axis. Made for
/// "simulated above measured".
///
/// # Errors
///
/// As [`render`]; also [`Error::Empty`] when `panels` is empty and [`Error::TimeUnits`] when the
/// traces' time units differ.
pub fn render_stack(panels: &[(&str, &Trace)], path: &Path) -> Result<()> {
    let Some(&(_, first)) = panels.first() else {
        return Err(Error::Empty { path: path.to_path_buf(), what: "traces" });
    };
    if let Some(&(label, other)) = panels.iter().find(|(_, t)| t.time_unit != first.time_unit) {
        return Err(Error::TimeUnits {
            path: path.to_path_buf(),
            label: label.to_string(),
            unit: other.time_unit.clone(),
            first: first.time_unit.clone(),
        });
    }
    let panels = panels
        .iter()
        .map(|&(label, trace)| Panel { label: Some(label.to_string()), stats: Stats::of(trace), trace })
        .collect();
    write(&Figure::new(panels), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_schedules::{simulate, CostModel, Kind, MemSample, RankTrace, Source, StageCost, StageCosts};
    use std::path::PathBuf;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    /// The gallery's unequal costs: F 1, I 1, W 0.5, 64 MiB of activations per micro-batch.
    fn model() -> CostModel {
        CostModel {
            costs: StageCosts::PerRank(StageCost {
                act_bytes: 64 << 20,
                w_bytes: 16 << 20,
                ..StageCost::times(1., 1., 0.5)
            }),
            latency: 0.05,
            bandwidth: None,
            static_bytes: vec![256 << 20],
            host_link: None,
            time_unit: "ms".into(),
        }
    }

    fn trace(kind: Kind, p: usize, m: usize) -> Trace {
        simulate(&kind.generate(p, kind.default_chunks(), m).unwrap(), &model()).unwrap()
    }

    /// A fresh directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pipesched-charts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The texts of an SVG chart (plotters writes each on its own line inside `<text>`).
    fn svg_texts(svg: &str) -> Vec<&str> {
        let lines: Vec<&str> = svg.lines().collect();
        lines.windows(2).filter(|w| w[0].starts_with("<text")).map(|w| w[1]).collect()
    }

    #[test]
    fn every_schedule_renders_as_svg_and_png() {
        let dir = scratch("five");
        for kind in Kind::ALL {
            let t = trace(kind, 4, 8);
            let svg = dir.join(format!("{}.svg", kind.name()));
            render(&t, &svg).unwrap();
            let text = std::fs::read_to_string(&svg).unwrap();
            let texts = svg_texts(&text);
            let title = texts.iter().find(|t| t.starts_with(&format!("{} · p=4 m=8", kind.name())));
            let title = title.unwrap_or_else(|| panic!("{kind:?}: title missing"));
            assert_eq!(title.matches("simulated").count(), 1, "{title}");
            // A box per action, each wide enough here to be its own.
            assert!(text.matches("<rect").count() >= t.num_spans(), "{kind:?}: fewer rects than actions");
            // The memory panel states the static base; its axis starts near it, not at 0.
            assert!(texts.contains(&"live memory per rank · static 256 MiB on every rank"), "{texts:?}");
            assert!(!texts.contains(&"0 MiB"), "{kind:?}: the byte axis starts at 0");

            let png = dir.join(format!("{}.png", kind.name()));
            render(&t, &png).unwrap();
            let bytes = std::fs::read(&png).unwrap();
            assert!(bytes.len() > 1000 && bytes.starts_with(&PNG_SIGNATURE), "{kind:?}: not a PNG");
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_trace_without_bytes_has_no_memory_panel() {
        let dir = scratch("no-bytes");
        let t = simulate(&Kind::OneFOneB.generate(8, 1, 24).unwrap(), &CostModel::per_rank(5.0, 6.0, 4.0)).unwrap();
        let path = dir.join("t.svg");
        render(&t, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let texts = svg_texts(&text);
        assert!(!texts.iter().any(|t| t.contains("memory") || t.ends_with(" B")), "{texts:?}");
        assert!(texts.contains(&"time (units)"));
        // A flat nonzero curve is information: it keeps its panel.
        let mut flat = t.clone();
        for r in &mut flat.ranks {
            r.memory = vec![MemSample::new(0.0, 3 << 20)];
        }
        render(&flat, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(svg_texts(&text).contains(&"live memory per rank · static 3 MiB on every rank"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn messages_in_flight_get_a_band_and_a_held_column() {
        let dir = scratch("flight");
        let mut costs = model();
        if let StageCosts::PerRank(c) = &mut costs.costs {
            c.fwd_msg_bytes = 8 << 20;
            c.bwd_msg_bytes = 8 << 20;
        }
        let t = simulate(&Kind::OneFOneB.generate(4, 1, 8).unwrap(), &costs).unwrap();
        let path = dir.join("t.svg");
        render(&t, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let texts = svg_texts(&text);
        let caption = "live memory per rank · static 256 MiB on every rank · pale band: messages in flight";
        assert!(texts.contains(&caption), "{texts:?}");
        assert!(texts.contains(&"held") && texts.contains(&"peak"));
        // One band per rank.
        assert_eq!(text.lines().filter(|l| l.starts_with("<polygon") && l.contains("opacity=\"0.25\"")).count(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stacked_traces_render_with_their_captions() {
        let dir = scratch("stack");
        let a = trace(Kind::OneFOneB, 2, 4);
        let mut b = trace(Kind::ZbH1, 2, 4);
        b.source = Source::Measured;
        for ext in ["svg", "png"] {
            let path = dir.join(format!("stack.{ext}"));
            render_stack(&[("simulated", &a), ("measured", &b)], &path).unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() > 0);
        }
        let text = std::fs::read_to_string(dir.join("stack.svg")).unwrap();
        let texts = svg_texts(&text);
        let caption = texts.iter().find(|t| t.starts_with("simulated: 1f1b")).unwrap();
        assert_eq!(caption.matches("simulated").count(), 1, "{caption}");
        assert!(texts.iter().any(|t| t.starts_with("measured: zb-h1")));
        assert!(text.matches("<rect").count() >= a.num_spans() + b.num_spans());
        let e = render_stack(&[], &dir.join("none.svg")).unwrap_err();
        assert!(matches!(e, Error::Empty { .. }) && e.to_string().contains("no traces"), "{e}");
        let mut seconds = b.clone();
        seconds.time_unit = "s".into();
        let e = render_stack(&[("a", &a), ("b", &seconds)], &dir.join("units.svg")).unwrap_err();
        assert!(matches!(e, Error::TimeUnits { .. }) && e.to_string().contains("\"b\" is in s"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unsupported_extension_is_an_error() {
        let t = trace(Kind::GPipe, 2, 2);
        for name in ["chart.jpg", "chart", "chart.svg.txt"] {
            let e = render(&t, Path::new(name)).unwrap_err();
            assert!(matches!(e, Error::Format { .. }), "{name}: {e}");
            assert!(e.to_string().contains(".svg or .png"), "{e}");
        }
    }

    #[test]
    fn unwritable_directory_is_an_error() {
        let t = trace(Kind::GPipe, 2, 2);
        for name in ["a.svg", "a.png"] {
            let path = std::env::temp_dir().join("pipesched-no-such-dir").join("deeper").join(name);
            let e = render(&t, &path).unwrap_err();
            assert!(matches!(e, Error::Io { .. }), "{name}: {e}");
            assert!(e.to_string().contains("cannot write"), "{e}");
        }
    }

    #[test]
    fn degenerate_traces_do_not_panic() {
        let dir = scratch("degenerate");
        let empty = |p: usize| Trace {
            source: Source::Measured,
            schedule: "empty".into(),
            p,
            v: 1,
            m: 0,
            placement: pipesched_schedules::Placement::Loop,
            time_unit: "ms".into(),
            ranks: vec![RankTrace::default(); p],
            transfers: pipesched_schedules::Transfers::Recorded(vec![]),
            sums: vec![],
        };
        let span = |start, end| pipesched_schedules::Span { action: "0F0".parse().unwrap(), start, end };
        let mut zero_time = empty(2);
        zero_time.ranks[0] = RankTrace::from_spans(&[span(0.0, 0.0)], vec![MemSample::new(0.0, 0)]);
        let mut nan = empty(1);
        nan.ranks[0] = RankTrace::from_spans(&[span(f64::NAN, 1.0)], vec![MemSample::new(f64::INFINITY, 5)]);
        // Overlapping spans (no real rank runs two actions at once): a thousand over the whole step.
        let mut overlapping = empty(1);
        overlapping.ranks[0] = RankTrace::from_spans(&vec![span(0.0, 10.0); 1000], vec![MemSample::new(0.0, 5)]);
        let cheap = simulate(&Kind::OneFOneB.generate(3, 1, 3).unwrap(), &CostModel::per_rank(1.0, 1.0, 1.0)).unwrap();
        for (i, t) in [empty(0), empty(1), empty(20), zero_time, nan, overlapping, cheap].iter().enumerate() {
            for ext in ["svg", "png"] {
                render(t, &dir.join(format!("{i}.{ext}"))).unwrap();
                render_stack(&[("a", t), ("b", t)], &dir.join(format!("{i}-stack.{ext}"))).unwrap();
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn many_ranks_and_actions_render() {
        let dir = scratch("large");
        for (p, m) in [(1, 4), (16, 32), (8, 64)] {
            let t = trace(Kind::ZbH2, p, m);
            render(&t, &dir.join(format!("zb-h2-{p}-{m}.png"))).unwrap();
            render(&t, &dir.join(format!("zb-h2-{p}-{m}.svg"))).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A step of a million spans is downsampled: the SVG holds a bounded number of shapes, every
    /// row is drawn, and the legend says how.
    #[test]
    fn a_million_spans_are_drawn_in_bounded_shapes() {
        let dir = scratch("huge");
        // 1F1B, p = 8, m = 65536: 1,048,576 actions on 8 lanes.
        let t = trace(Kind::OneFOneB, 8, 65_536);
        assert!(t.num_spans() >= 1 << 20);
        let svg = dir.join("huge.svg");
        render(&t, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let shapes = text.lines().filter(|l| l.starts_with("<rect") || l.starts_with("<polyline")).count();
        // At most about one bar per pixel column of each row (the plot is 1600 px wide).
        assert!(shapes < 8 * 1600 + 500, "{shapes} shapes");
        let texts = svg_texts(&text);
        assert!(texts.contains(&"thin spans: one bar per pixel,"), "{texts:?}");
        assert!(texts.contains(&"rank 7"));
        render(&t, &dir.join("huge.png")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Past 128 ranks, rows hold several ranks.
    #[test]
    fn many_ranks_share_rows() {
        let dir = scratch("ranks");
        let t = simulate(&Kind::OneFOneB.generate(300, 1, 300).unwrap(), &model()).unwrap();
        let svg = dir.join("ranks.svg");
        render(&t, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        let texts = svg_texts(&text);
        assert!(texts.contains(&"3 ranks per row") && texts.contains(&"ranks 0–2"), "{texts:?}");
        assert!(texts.contains(&"lines: every 10th rank, and the highest"), "{texts:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
