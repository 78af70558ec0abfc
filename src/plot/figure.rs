//! The page of a chart: which bands (title, timelines, memory panels) sit where, how tall each
//! is for its `p`, and the drawing of them in order. Also the small drawing helpers the panels
//! share (text styles, the frame of a plotting area).
//!
//! Invariant: every panel of a figure plots time on the same pixel columns — from `LEFT` to
//! `width − LEGEND` — over the same range, 0 to the largest makespan of the figure, so a time
//! lines up vertically across all panels.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use pipesched_schedules::{Stats, Trace};

use super::font::FAMILY;
use super::palette::{INK, MUTED, PAPER, RULE};
use super::units::{short, summary, ByteUnit};
use super::{memory, timeline};

/// A chart with a linear time axis and a linear value axis, drawing on `DB`.
pub(crate) type Chart<'r, DB> = ChartContext<'r, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Result of drawing on a backend `DB`.
pub(crate) type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A value-axis labeller.
pub(crate) type Labeller<'a> = &'a dyn Fn(&f64) -> String;

/// Draws the house-style axes of `chart`: grid lines at the labelled ticks only, ink axes,
/// 13 px tick labels. `y` gives the number of value labels and their labeller; `None` leaves the
/// value axis unlabelled and without grid lines, for charts that label their rows by hand.
pub(crate) fn draw_axes<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    x_labels: usize,
    x_label: Labeller<'_>,
    y: Option<(usize, Labeller<'_>)>,
) -> DrawResult<DB> {
    let mut mesh = chart.configure_mesh();
    mesh.x_labels(x_labels)
        .x_label_formatter(&x_label)
        .bold_line_style(RULE)
        .max_light_lines(0)
        .axis_style(INK)
        .x_label_style(style(13.0, INK, false, HPos::Center, VPos::Top));
    match &y {
        Some((n, y_label)) => {
            mesh.y_labels(*n).y_label_formatter(y_label).y_label_style(style(
                13.0,
                INK,
                false,
                HPos::Right,
                VPos::Center,
            ));
        }
        None => {
            mesh.disable_y_mesh().y_labels(0);
        }
    }
    mesh.draw()
}

/// Pixels left of the plotting areas, for rank names and byte labels.
pub(crate) const LEFT: u32 = 96;
/// Pixels right of the plotting areas, for legends and the peak table.
pub(crate) const LEGEND: u32 = 250;
/// Height of the tick labels under each plotting area.
const TICKS: u32 = 24;
/// Height of a caption line above a panel.
const CAPTION: u32 = 26;
/// Height of the title line.
const TITLE: u32 = 40;
/// Space between bands.
const GAP: u32 = 14;
/// Height of the axis description under the last panel.
const AXIS_DESC: u32 = 24;

/// One trace to draw, with its caption and stats.
pub(crate) struct Panel<'a> {
    /// What the trace is (`simulated`, `measured`) in a stacked figure.
    pub label: Option<String>,
    /// Shown above the panel's timeline (stacked figures only).
    pub caption: Option<String>,
    /// The trace.
    pub trace: &'a Trace,
    /// Its stats.
    pub stats: Stats,
}

/// A whole chart: an optional title, the timelines of every panel, then their memory panels.
pub(crate) struct Figure<'a> {
    title: Option<String>,
    panels: Vec<Panel<'a>>,
    width: u32,
    height: u32,
    /// Time axis: 0 to this.
    x_max: f64,
    /// Memory axis: 0 to this many bytes (before headroom), shared by all memory panels.
    y_max: u64,
}

/// Where a plotting area sits on the page, in pixels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    /// Left edge.
    pub left: i32,
    /// Top edge.
    pub top: i32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Frame {
    /// Right edge.
    pub fn right(&self) -> i32 {
        self.left + self.w as i32
    }

    /// The area of this frame's chart: the frame, its tick labels below and `LEFT` pixels of label
    /// space to its left.
    pub fn area<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawingArea<DB, Shift> {
        root.clone().shrink((self.left - LEFT as i32, self.top), (self.w + LEFT, self.h + TICKS))
    }

    /// A cartesian chart on `area` (from [`Frame::area`]) whose plotting area is exactly this frame.
    pub fn chart<'r, DB: DrawingBackend>(
        &self,
        area: &'r DrawingArea<DB, Shift>,
        x: std::ops::Range<f64>,
        y: std::ops::Range<f64>,
    ) -> Result<Chart<'r, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
        ChartBuilder::on(area).x_label_area_size(TICKS).y_label_area_size(LEFT).build_cartesian_2d(x, y)
    }
}

/// A text style of the charts' font.
pub(crate) fn style(size: f64, colour: RGBColor, bold: bool, h: HPos, v: VPos) -> TextStyle<'static> {
    let face = if bold { FontStyle::Bold } else { FontStyle::Normal };
    TextStyle {
        font: FontDesc::new(FontFamily::Name(FAMILY), size, face),
        color: colour.to_backend_color(),
        pos: Pos::new(h, v),
    }
}

/// The time tick labels: plain numbers, few digits.
pub(crate) fn time_label(x: &f64) -> String {
    short(*x)
}

impl<'a> Figure<'a> {
    /// Lays out a figure of `panels` under an optional title.
    pub fn new(title: Option<String>, panels: Vec<Panel<'a>>) -> Figure<'a> {
        let x_max = panels.iter().map(|p| p.stats.makespan).filter(|m| m.is_finite()).fold(0.0, f64::max);
        let x_max = if x_max > 0.0 { x_max } else { 1.0 };
        let y_max = panels.iter().flat_map(|p| p.stats.peak_bytes.iter().copied()).max().unwrap_or(0);
        let lane = panels.iter().flat_map(|p| p.trace.ranks.iter().map(|r| r.len())).max().unwrap_or(0);
        // Wider for long lanes, but not so wide that text shrinks to nothing when the chart is
        // scaled to fit a screen.
        let plot_w = (lane as u32).saturating_mul(10).clamp(1100, 1600);
        let mut fig = Figure { title, panels, width: LEFT + plot_w + LEGEND, height: 0, x_max, y_max };
        fig.height = fig.bands().last().map_or(100, |b| b.frame.top as u32 + b.frame.h + TICKS + AXIS_DESC + 8);
        fig
    }

    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Every band, top to bottom: the timelines, then the memory panels.
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
            let h = timeline::height(panel.trace);
            add(BandKind::Timeline, i, panel.caption.is_some(), h);
        }
        for (i, panel) in self.panels.iter().enumerate() {
            add(BandKind::Memory, i, true, memory::height(panel.trace));
        }
        bands
    }

    /// Draws the figure on `root`.
    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&PAPER)?;
        if let Some(title) = &self.title {
            root.draw(&Text::new(
                title.clone(),
                (LEFT as i32, 10 + TITLE as i32 / 2),
                style(20.0, INK, true, HPos::Left, VPos::Center),
            ))?;
        }
        let unit = ByteUnit::for_max(self.y_max);
        let bands = self.bands();
        for band in &bands {
            let panel = &self.panels[band.index];
            let caption_at = (band.frame.left, band.frame.top - CAPTION as i32 / 2);
            let caption_style = style(15.0, INK, true, HPos::Left, VPos::Center);
            match band.kind {
                BandKind::Timeline => {
                    if let Some(caption) = &panel.caption {
                        root.draw(&Text::new(caption.clone(), caption_at, caption_style))?;
                    }
                    timeline::draw(root, band.frame, panel.trace, self.x_max)?;
                }
                BandKind::Memory => {
                    let what = match &panel.label {
                        Some(label) => format!("{label}: {} — live memory per rank", panel.trace.schedule),
                        None => "live memory per rank".to_string(),
                    };
                    root.draw(&Text::new(what, caption_at, caption_style))?;
                    memory::draw(root, band.frame, panel.trace, self.x_max, self.y_max, unit)?;
                }
            }
        }
        if let Some(last) = bands.last() {
            let unit = self.panels.first().map_or("", |p| p.trace.time_unit.as_str());
            let at = (last.frame.left + last.frame.w as i32 / 2, last.frame.top + (last.frame.h + TICKS) as i32 + 4);
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

/// The caption of a panel in a stacked figure: its label and its summary.
pub(crate) fn caption(label: &str, trace: &Trace, stats: &Stats) -> String {
    format!("{label}: {}", summary(trace, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_schedules::{simulate, CostModel, Kind};

    #[test]
    fn panels_share_the_time_columns_and_do_not_overlap() {
        let a = simulate(&Kind::OneFOneB.generate(4, 1, 8).unwrap(), &CostModel::per_rank(1.0, 1.0, 1.0)).unwrap();
        let b = simulate(&Kind::ZbH1.generate(4, 1, 8).unwrap(), &CostModel::per_rank(1.0, 1.0, 1.0)).unwrap();
        let panel = |t| Panel { label: Some("x".into()), caption: Some("x".into()), stats: Stats::of(t), trace: t };
        let fig = Figure::new(None, vec![panel(&a), panel(&b)]);
        assert_eq!(fig.x_max, 33.0);
        let bands = fig.bands();
        assert_eq!(bands.len(), 4);
        for w in bands.windows(2) {
            assert_eq!((w[0].frame.left, w[0].frame.w), (w[1].frame.left, w[1].frame.w));
            assert!(w[0].frame.top + w[0].frame.h as i32 + (TICKS + CAPTION) as i32 <= w[1].frame.top);
        }
        assert!(bands[3].frame.top as u32 + bands[3].frame.h < fig.size().1);
    }
}
