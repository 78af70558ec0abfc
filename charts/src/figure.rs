//! The page of a trace chart: which bands (title, timelines, memory panels) sit where, how tall
//! each is, and the drawing of them in order.
//!
//! Invariant: every panel of a figure plots time on the same pixel columns — from `LEFT` to
//! `width − LEGEND` — over the same range, 0 to the largest makespan of the figure, so a time
//! lines up vertically across all panels; memory panels share one byte axis, and a trace that
//! counts no bytes has none.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use pipesched_schedules::{Stats, Trace};

use crate::curve::has_bytes;
use crate::file::Sheet;
use crate::memory::{self, Scale};
use crate::page::{style, DrawResult, Frame, LEFT, LEGEND, TICKS};
use crate::palette::{INK, MUTED, PAPER};
use crate::timeline::Timeline;
use crate::units::{source_name, summary};

/// Height of a caption line above a panel.
const CAPTION: u32 = 26;
/// Height of the title line.
const TITLE: u32 = 40;
/// Space between bands.
const GAP: u32 = 14;
/// Height of the axis description under the last panel.
const AXIS_DESC: u32 = 24;

/// One trace to draw.
pub(crate) struct Panel<'a> {
    /// What the trace is (`simulated`, `measured`) in a stacked figure.
    pub label: Option<String>,
    /// The trace.
    pub trace: &'a Trace,
    /// Its stats.
    pub stats: Stats,
}

impl Panel<'_> {
    /// The caption above the panel's timeline in a stacked figure: its label and summary, and
    /// who made the trace unless the label already says it.
    fn caption(&self) -> Option<String> {
        let label = self.label.as_ref()?;
        let source = source_name(self.trace.source);
        let made = if label.contains(source) { String::new() } else { format!(" · {source}") };
        Some(format!("{label}: {}{made}", summary(self.trace, &self.stats)))
    }
}

/// A whole chart: an optional title, the timelines of every panel, then their memory panels.
pub(crate) struct Figure<'a> {
    title: Option<String>,
    panels: Vec<Panel<'a>>,
    timelines: Vec<Timeline>,
    /// Whether each panel has a memory band.
    memory: Vec<bool>,
    width: u32,
    height: u32,
    /// Time axis: 0 to this.
    x_max: f64,
    /// Byte axis of the memory panels.
    scale: Option<Scale>,
}

impl<'a> Figure<'a> {
    /// Lays out a figure of `panels`; a single unlabelled panel gets the trace's summary as title.
    pub fn new(panels: Vec<Panel<'a>>) -> Figure<'a> {
        let title = match panels.as_slice() {
            [only] if only.label.is_none() => {
                Some(format!("{} · {}", summary(only.trace, &only.stats), source_name(only.trace.source)))
            }
            _ => None,
        };
        // Gradient sums over replicas may end after the last action: the axis shows them too.
        let end = |p: &Panel| {
            if p.trace.sums.is_empty() {
                p.stats.makespan
            } else {
                p.stats.makespan.max(p.trace.step_end())
            }
        };
        let x_max = panels.iter().map(end).filter(|m| m.is_finite()).fold(0.0, f64::max);
        let x_max = if x_max > 0.0 { x_max } else { 1.0 };
        let lane = panels.iter().flat_map(|p| p.trace.ranks.iter().map(|r| r.len())).max().unwrap_or(0);
        // Wider for long lanes, but not so wide that text shrinks to nothing when the chart is
        // scaled to fit a screen.
        let plot_w = (lane.min(1 << 20) as u32).saturating_mul(10).clamp(1100, 1600);
        // Numbers are measured while planning.
        let _ = crate::font::ensure();
        let timelines = panels.iter().map(|p| Timeline::new(p.trace, x_max, plot_w)).collect();
        let memory: Vec<bool> = panels.iter().map(|p| has_bytes(p.trace)).collect();
        let scale = Scale::of(panels.iter().zip(&memory).filter(|(_, &m)| m).map(|(p, _)| p.trace));
        let mut fig =
            Figure { title, panels, timelines, memory, width: LEFT + plot_w + LEGEND, height: 0, x_max, scale };
        fig.height = fig.bands().last().map_or(100, |b| b.frame.bottom() as u32 + TICKS + AXIS_DESC + 8);
        fig
    }

    /// Every band, top to bottom: the timelines, then the memory panels of traces with bytes.
    fn bands(&self) -> Vec<Band> {
        let plot_w = self.width - LEFT - LEGEND;
        let mut top = 10 + if self.title.is_some() { TITLE } else { 0 };
        let mut bands = Vec::new();
        let mut add = |kind: BandKind, index: usize, caption: bool, h: u32| {
            let caption_h = if caption { CAPTION } else { 0 };
            let frame = Frame { left: LEFT as i32, top: (top + caption_h) as i32, w: plot_w, h };
            bands.push(Band { kind, index, frame });
            top += caption_h + h + TICKS + GAP;
        };
        for (i, panel) in self.panels.iter().enumerate() {
            add(BandKind::Timeline, i, panel.label.is_some(), self.timelines[i].height());
        }
        for (i, panel) in self.panels.iter().enumerate() {
            if self.memory[i] && self.scale.is_some() {
                add(BandKind::Memory, i, true, memory::height(panel.trace));
            }
        }
        bands
    }
}

impl Sheet for Figure<'_> {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&PAPER)?;
        if let Some(title) = &self.title {
            root.draw(&Text::new(
                title.clone(),
                (LEFT as i32, 10 + TITLE as i32 / 2),
                style(20.0, INK, true, HPos::Left, VPos::Center),
            ))?;
        }
        let bands = self.bands();
        for band in &bands {
            let panel = &self.panels[band.index];
            let caption_at = (band.frame.left, band.frame.top - CAPTION as i32 / 2);
            let caption_style = style(15.0, INK, true, HPos::Left, VPos::Center);
            match (band.kind, self.scale) {
                (BandKind::Timeline, _) => {
                    if let Some(caption) = panel.caption() {
                        root.draw(&Text::new(caption, caption_at, caption_style))?;
                    }
                    self.timelines[band.index].draw(root, band.frame, self.x_max)?;
                }
                (BandKind::Memory, Some(scale)) => {
                    let what = memory::caption(panel.trace);
                    let what = match &panel.label {
                        Some(label) => format!("{label}: {} — {what}", panel.trace.schedule),
                        None => what,
                    };
                    root.draw(&Text::new(what, caption_at, caption_style))?;
                    memory::draw(root, band.frame, panel.trace, self.x_max, scale)?;
                }
                (BandKind::Memory, None) => {}
            }
        }
        if let Some(last) = bands.last() {
            let unit = self.panels.first().map_or("", |p| p.trace.time_unit.as_str());
            let at = (last.frame.left + last.frame.w as i32 / 2, last.frame.bottom() + TICKS as i32 + 4);
            root.draw(&Text::new(format!("time ({unit})"), at, style(14.0, MUTED, false, HPos::Center, VPos::Top)))?;
        }
        Ok(())
    }
}

/// What a band shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BandKind {
    Timeline,
    Memory,
}

/// One panel's place on the page.
#[derive(Debug, Clone, Copy)]
struct Band {
    kind: BandKind,
    /// Which panel of the figure.
    index: usize,
    /// Its plotting area.
    frame: Frame,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_schedules::{simulate, CostModel, Kind, Source};

    fn panel<'a>(label: Option<&str>, t: &'a Trace) -> Panel<'a> {
        Panel { label: label.map(String::from), stats: Stats::of(t), trace: t }
    }

    #[test]
    fn panels_share_the_time_columns_and_do_not_overlap() {
        let mut model = CostModel::per_rank(1.0, 1.0, 1.0);
        model.static_bytes = vec![1 << 20];
        let a = simulate(&Kind::OneFOneB.generate(4, 1, 8).unwrap(), &model).unwrap();
        let b = simulate(&Kind::ZbH1.generate(4, 1, 8).unwrap(), &model).unwrap();
        let fig = Figure::new(vec![panel(Some("x"), &a), panel(Some("y"), &b)]);
        assert_eq!(fig.x_max, 33.0);
        let bands = fig.bands();
        assert_eq!(bands.len(), 4);
        for w in bands.windows(2) {
            assert_eq!((w[0].frame.left, w[0].frame.w), (w[1].frame.left, w[1].frame.w));
            assert!(w[0].frame.bottom() + (TICKS + CAPTION) as i32 <= w[1].frame.top);
        }
        assert!(bands[3].frame.bottom() < fig.size().1 as i32);
    }

    #[test]
    fn traces_without_bytes_get_no_memory_panel() {
        let none = simulate(&Kind::OneFOneB.generate(4, 1, 8).unwrap(), &CostModel::per_rank(1.0, 1.0, 1.0)).unwrap();
        let fig = Figure::new(vec![panel(None, &none)]);
        assert_eq!(fig.bands().iter().map(|b| b.kind).collect::<Vec<_>>(), [BandKind::Timeline]);
        assert!(fig.scale.is_none());
        // Stacked with one that has bytes: only that one's memory panel.
        let mut model = CostModel::per_rank(1.0, 1.0, 1.0);
        model.static_bytes = vec![5];
        let some = simulate(&Kind::OneFOneB.generate(4, 1, 8).unwrap(), &model).unwrap();
        let fig = Figure::new(vec![panel(Some("a"), &none), panel(Some("b"), &some)]);
        let kinds: Vec<(BandKind, usize)> = fig.bands().iter().map(|b| (b.kind, b.index)).collect();
        assert_eq!(kinds, [(BandKind::Timeline, 0), (BandKind::Timeline, 1), (BandKind::Memory, 1)]);
    }

    #[test]
    fn titles_say_who_made_the_trace_once() {
        let t = simulate(&Kind::ZbH1.generate(4, 1, 8).unwrap(), &CostModel::per_rank(1.0, 1.0, 0.5)).unwrap();
        let fig = Figure::new(vec![panel(None, &t)]);
        assert_eq!(fig.title.as_deref(), Some("zb-h1 · p=4 m=8 · makespan 24.5 units · bubble 18.4 % · simulated"));
        assert_eq!(
            panel(Some("simulated"), &t).caption().unwrap(),
            "simulated: zb-h1 · p=4 m=8 · makespan 24.5 units · bubble 18.4 %"
        );
        let mut measured = t.clone();
        measured.source = Source::Measured;
        assert_eq!(
            panel(Some("before"), &measured).caption().unwrap(),
            "before: zb-h1 · p=4 m=8 · makespan 24.5 units · bubble 18.4 % · measured"
        );
        assert!(Figure::new(vec![panel(Some("a"), &t)]).title.is_none());
    }
}
