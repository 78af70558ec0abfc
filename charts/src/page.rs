//! The house style every chart shares: text styles in the embedded font, axes with grid lines at
//! the labelled ticks only, the frame of a plotting area with its label margins, and the page
//! margins.
//!
//! Invariant: a [`Frame`]'s chart maps its x and y ranges onto exactly the frame's pixels, so
//! charts that share a frame's `left` and `w` share their time columns.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::font::FAMILY;
use crate::palette::{INK, RULE};
use crate::units::short;

/// A chart with a linear x axis and a linear y axis, drawing on `DB`.
pub type Chart<'r, DB> = ChartContext<'r, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Result of drawing on a backend `DB`.
pub type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// An axis labeller.
pub type Labeller<'a> = &'a dyn Fn(&f64) -> String;

/// Pixels left of the plotting areas, for row names and value labels.
pub const LEFT: u32 = 96;
/// Pixels right of the plotting areas, for legends and tables.
pub const LEGEND: u32 = 250;
/// Height of the tick labels under a plotting area.
pub const TICKS: u32 = 24;

/// Where a plotting area sits on the page, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
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

    /// Bottom edge.
    pub fn bottom(&self) -> i32 {
        self.top + self.h as i32
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

/// A text style of the charts' font: `size` pixels, `colour`, bold or not, anchored at `h`, `v`.
pub fn style(size: f64, colour: RGBColor, bold: bool, h: HPos, v: VPos) -> TextStyle<'static> {
    let face = if bold { FontStyle::Bold } else { FontStyle::Normal };
    TextStyle {
        font: FontDesc::new(FontFamily::Name(FAMILY), size, face),
        color: colour.to_backend_color(),
        pos: Pos::new(h, v),
    }
}

/// Tick labels of a plain number axis: few digits, no trailing zeros.
pub fn number_label(x: &f64) -> String {
    short(*x)
}

/// Draws the house-style axes of `chart`: grid lines at the labelled ticks only, ink axes,
/// 13 px tick labels. `y` gives the number of value labels and their labeller; `None` leaves the
/// value axis unlabelled and without grid lines, for charts that label their rows by hand.
pub fn draw_axes<DB: DrawingBackend>(
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

/// `lo..hi` widened so no value sits on the frame: by `below` and `above` of its span on each
/// side (by a tenth of `hi` on each side when the span is 0, by 1 when all is 0). A range that
/// padding would make infinite is returned bare.
pub fn padded(lo: f64, hi: f64, below: f64, above: f64) -> (f64, f64) {
    let span = hi - lo;
    let (pad_lo, pad_hi) = if span > 0.0 {
        (span * below, span * above)
    } else if hi > 0.0 {
        (hi * 0.1, hi * 0.1)
    } else {
        (1.0, 1.0)
    };
    let (start, end) = (lo - pad_lo, hi + pad_hi);
    if (end - start).is_finite() {
        (start, end)
    } else {
        (lo.min(0.0), hi)
    }
}

/// `(start, end)`, started at 0 instead when it starts at or above 0 within a third of its
/// length: a range close to 0 keeps its origin, one far from it keeps its detail.
pub fn from_zero_when_near((start, end): (f64, f64)) -> (f64, f64) {
    if start >= 0.0 && start < (end - start) / 3.0 {
        (0.0, end)
    } else {
        (start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_keeps_values_off_the_frame() {
        assert_eq!(padded(40.0, 80.0, 0.1, 0.1), (36.0, 84.0));
        assert_eq!(padded(50.0, 50.0, 0.1, 0.1), (45.0, 55.0));
        assert_eq!(padded(0.0, 80.0, 0.1, 0.1), (-8.0, 88.0));
        assert_eq!(padded(0.0, 0.0, 0.1, 0.1), (-1.0, 1.0));
        assert_eq!(padded(0.0, f64::MAX, 0.1, 0.1), (0.0, f64::MAX));
        // A 32 MiB base with a 10 MiB swing, more room above.
        assert_eq!(padded(32.0, 42.0, 0.1, 0.2), (31.0, 44.0));
        assert_eq!(padded(10.0, 20.0, 0.1, 0.5), (9.0, 25.0));
    }

    #[test]
    fn ranges_near_zero_start_at_zero() {
        assert_eq!(from_zero_when_near(padded(4.0, 40.0, 0.1, 0.1)), (0.0, 43.6));
        assert_eq!(from_zero_when_near((36.0, 84.0)), (36.0, 84.0));
        // Below 0 (data at 0, padded): left alone, the axis writes no negative ticks.
        assert_eq!(from_zero_when_near((-8.0, 88.0)), (-8.0, 88.0));
    }
}
