//! Charts of traces: a timeline (one row per rank, one box per action, coloured by op) above a
//! memory panel (live bytes per rank over the same time axis), as SVG or PNG. And charts of a
//! benchmark's configurations ([`ConfigPoint`]): throughput bars ([`render_throughput`]) and
//! peak memory against throughput with the Pareto front ([`render_tradeoff`]).
//!
//! ```no_run
//! use pipesched::schedules::{simulate, CostModel, Kind};
//!
//! let schedule = Kind::ZbH1.generate(4, 1, 8)?;
//! let trace = simulate(&schedule, &CostModel::per_rank(1.0, 1.0, 0.5))?;
//! pipesched::plot::render(&trace, std::path::Path::new("zb-h1.png"))?;
//! # Ok::<(), pipesched::Error>(())
//! ```
//!
//! Invariant: a chart file appears under its final name complete or not at all (it is drawn into a
//! temporary file or buffer and renamed), and no input — empty, degenerate or huge — makes drawing
//! panic: every failure comes back as [`Error::Plot`], [`Error::Io`] or [`Error::Usage`].

mod bench;
mod figure;
mod font;
mod labels;
mod marks;
mod memory;
mod palette;
mod peaks;
mod throughput;
mod timeline;
mod tradeoff;
mod units;

pub use bench::ConfigPoint;
pub use throughput::render_throughput;
pub use tradeoff::render_tradeoff;

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use pipesched_schedules::{Stats, Trace};

use crate::error::{Error, Result};
use crate::output::{finish_atomic, temp_path, write_atomic};
use figure::{caption, DrawResult, Figure, Panel};

/// Draws `trace` to `path`: its title (schedule, p, m, v, makespan, bubble rate, source), the
/// timeline, and the memory panel below on the same time axis. The format follows the extension:
/// `.svg` or `.png`.
///
/// # Errors
///
/// [`Error::Usage`] for any other extension, [`Error::Io`] when the file cannot be written,
/// [`Error::Plot`] when drawing fails.
pub fn render(trace: &Trace, path: &Path) -> Result<()> {
    let stats = Stats::of(trace);
    let title = units::summary(trace, &stats);
    let figure = Figure::new(Some(title), vec![Panel { label: None, caption: None, trace, stats }]);
    write(&figure, path)
}

/// Draws several traces to `path` on one shared time axis (0 to the largest makespan): their
/// timelines stacked in the order given, each under its label and summary, then their memory
/// panels in the same order on one shared byte scale. Made for "simulated above measured".
///
/// # Errors
///
/// As [`render`]; also [`Error::Usage`] when `panels` is empty or the traces' time units differ.
pub fn render_stack(panels: &[(&str, &Trace)], path: &Path) -> Result<()> {
    let Some(&(_, first)) = panels.first() else {
        return Err(Error::Usage(format!("chart {}: no traces to draw; give at least one", path.display())));
    };
    if let Some(&(label, other)) = panels.iter().find(|(_, t)| t.time_unit != first.time_unit) {
        return Err(Error::Usage(format!(
            "chart {}: the traces share one time axis but \"{label}\" is in {} and the first in {}; convert them to one unit",
            path.display(),
            other.time_unit,
            first.time_unit
        )));
    }
    let panels = panels
        .iter()
        .map(|&(label, trace)| {
            let stats = Stats::of(trace);
            Panel { label: Some(label.to_string()), caption: Some(caption(label, trace, &stats)), trace, stats }
        })
        .collect();
    write(&Figure::new(None, panels), path)
}

/// The file formats charts are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

impl Format {
    /// The format named by `path`'s extension.
    fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(Error::Usage(format!(
                "chart {}: unsupported file type; name the chart file with .svg or .png",
                path.display()
            ))),
        }
    }
}

/// A page [`write`] can put in a file: its size, and its drawing on any backend.
pub(crate) trait Sheet {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws the page on `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

impl Sheet for Figure<'_> {
    fn size(&self) -> (u32, u32) {
        Figure::size(self)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        Figure::draw(self, root)
    }
}

/// The error for a benchmark chart given no configurations.
pub(crate) fn no_points(path: &Path) -> Error {
    Error::Usage(format!("chart {}: no configurations to draw; give at least one", path.display()))
}

/// Draws `figure` into `path`, atomically.
fn write(figure: &impl Sheet, path: &Path) -> Result<()> {
    let format = Format::of(path)?;
    let failed = |reason: String| Error::Plot { path: path.to_path_buf(), reason };
    font::ensure().map_err(failed)?;
    let size = figure.size();
    match format {
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                figure.draw(&root).map_err(|e| failed(e.to_string()))?;
                root.present().map_err(|e| failed(e.to_string()))?;
            }
            write_atomic(path, svg.as_bytes())
        }
        Format::Png => {
            let tmp = png_temp_path(path);
            // Creating the file first turns an unwritable directory into a plain I/O error.
            std::fs::File::create(&tmp).map_err(|source| Error::Io {
                action: "cannot write",
                path: path.to_path_buf(),
                source,
            })?;
            let drawn = {
                let root = BitMapBackend::new(&tmp, size).into_drawing_area();
                figure.draw(&root).and_then(|()| root.present()).map_err(|e| failed(e.to_string()))
            };
            if let Err(e) = drawn {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            finish_atomic(&tmp, path)
        }
    }
}

/// The temporary name of a PNG being written: [`temp_path`] plus `.png`, since the encoder picks
/// its format from the extension.
fn png_temp_path(path: &Path) -> PathBuf {
    let tmp = temp_path(path);
    let name = tmp.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    tmp.with_file_name(format!("{name}.png"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_schedules::{simulate, CostModel, Kind, RankTrace, Source, StageCost, StageCosts};

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    /// The unequal costs of the brief: F 1, I 1, W 0.5, 64 MiB of activations per micro-batch.
    fn model() -> CostModel {
        CostModel {
            costs: StageCosts::PerRank(StageCost {
                act_bytes: 64 << 20,
                w_bytes: 16 << 20,
                ..StageCost::times(1., 1., 0.5)
            }),
            latency: 0.05,
            static_bytes: vec![256 << 20],
            time_unit: "ms".into(),
        }
    }

    fn trace(kind: Kind, p: usize, m: usize) -> Trace {
        simulate(&kind.generate(p, kind.default_chunks(), m).unwrap(), &model()).unwrap()
    }

    /// A fresh directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pipesched-plot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn actions(trace: &Trace) -> usize {
        trace.ranks.iter().map(|r| r.len()).sum()
    }

    #[test]
    fn every_schedule_renders_as_svg_and_png() {
        let dir = scratch("five");
        for kind in Kind::ALL {
            let t = trace(kind, 4, 8);
            let svg = dir.join(format!("{}.svg", kind.name()));
            render(&t, &svg).unwrap();
            let text = std::fs::read_to_string(&svg).unwrap();
            assert!(text.contains(&format!("{} · p=4 m=8", kind.name())), "{kind:?}: title missing");
            assert!(text.contains("simulated"));
            assert!(text.matches("<rect").count() >= actions(&t), "{kind:?}: fewer rects than actions");

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
        assert!(text.contains("simulated: 1f1b") && text.contains("measured: zb-h1"));
        assert!(text.matches("<rect").count() >= actions(&a) + actions(&b));
        assert!(matches!(render_stack(&[], &dir.join("none.svg")), Err(Error::Usage(_))));
        let mut seconds = b.clone();
        seconds.time_unit = "s".into();
        let e = render_stack(&[("a", &a), ("b", &seconds)], &dir.join("units.svg")).unwrap_err();
        assert!(matches!(e, Error::Usage(_)) && e.to_string().contains("\"b\" is in s"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unsupported_extension_is_a_usage_error() {
        let t = trace(Kind::GPipe, 2, 2);
        for name in ["chart.jpg", "chart", "chart.svg.txt"] {
            let e = render(&t, Path::new(name)).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{name}: {e}");
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
        };
        let span = |start, end| pipesched_schedules::Span { action: "0F0".parse().unwrap(), start, end };
        let mut zero_time = empty(2);
        zero_time.ranks[0] =
            RankTrace::from_spans(&[span(0.0, 0.0)], vec![pipesched_schedules::MemSample::new(0.0, 0)]);
        let mut nan = empty(1);
        nan.ranks[0] =
            RankTrace::from_spans(&[span(f64::NAN, 1.0)], vec![pipesched_schedules::MemSample::new(f64::INFINITY, 5)]);
        let cheap = simulate(&Kind::OneFOneB.generate(3, 1, 3).unwrap(), &CostModel::per_rank(1.0, 1.0, 1.0)).unwrap();
        for (i, t) in [empty(0), empty(1), empty(20), zero_time, nan, cheap].iter().enumerate() {
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

    /// p = 64, m = 1024: about 200k boxes, drawn without labels, without failing.
    #[test]
    fn huge_trace_renders() {
        let dir = scratch("huge");
        let t = simulate(&Kind::ZbH1.generate(64, 1, 1024).unwrap(), &model()).unwrap();
        render(&t, &dir.join("huge.png")).unwrap();
        render(&t, &dir.join("huge.svg")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
