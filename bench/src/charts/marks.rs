//! How the benchmark charts tell configurations apart: a colour per schedule (Okabe–Ito), and per
//! recompute policy a marker shape (scatter) and a fill — solid, or a pale tint crossed by a hatch
//! (bars). Also the drawing of those marks in pixel coordinates, shared by plots and legends.
//!
//! Invariant: a schedule's colour depends only on its name and the schedules present (a known
//! schedule always has the same hue), and a policy's shape and fill only on its place in the legend
//! order, so the two charts of one benchmark mark every configuration alike; the first policy
//! (`none` when present) is the plain one — solid bar, round marker.

use pipesched_charts::page::DrawResult;
use pipesched_charts::palette::{border_colour, mix, rank_colour, PAPER};
use pipesched_charts::plotters::coord::Shift;
use pipesched_charts::plotters::prelude::*;

/// The colour of a schedule: a known one (`known`, its index in `KNOWN_SCHEDULES`) keeps its own
/// Okabe–Ito hue whichever others are present; the `unknown_rank`-th unknown one takes the next of
/// the remaining hues (sky blue, black, grey, then round again).
pub(crate) fn schedule_colour(known: Option<usize>, unknown_rank: usize) -> RGBColor {
    // The eight Okabe–Ito hues in palette order: blue, vermillion, green, orange, purple, sky,
    // black, grey (the first eight rank colours).
    let okabe_ito = |k: usize| rank_colour(k % 8, 8);
    match known {
        // gpipe blue, 1f1b orange, interleaved purple, zb-h1 green, zb-h2 vermillion.
        Some(k) => okabe_ito([0, 3, 4, 2, 1][k % 5]),
        None => okabe_ito(5 + unknown_rank % 3),
    }
}

/// `a` moved a fraction `t` of the way to white.
pub(crate) fn pale(a: RGBColor, t: f64) -> RGBColor {
    mix(a, PAPER, t)
}

/// Marker shapes, in the order policies take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Plus,
    Star,
}

const SHAPES: [Shape; 7] =
    [Shape::Circle, Shape::Square, Shape::TriangleUp, Shape::Diamond, Shape::TriangleDown, Shape::Plus, Shape::Star];

/// The marker of the policy at `index` of the legend (shapes repeat past seven policies).
pub(crate) fn shape(index: usize) -> Shape {
    SHAPES[index % SHAPES.len()]
}

/// The corners of `shape` centred on `(x, y)` with "radius" `r` pixels; every shape covers about
/// the same area as a circle of radius `r`.
pub(crate) fn outline(shape: Shape, (x, y): (i32, i32), r: f64) -> Vec<(i32, i32)> {
    let polar = |n: usize, radius: &dyn Fn(usize) -> f64, turn: f64| -> Vec<(i32, i32)> {
        (0..n)
            .map(|k| {
                let a = turn + std::f64::consts::TAU * k as f64 / n as f64;
                let d = radius(k);
                (x + (d * a.cos()).round() as i32, y + (d * a.sin()).round() as i32)
            })
            .collect()
    };
    let up = -std::f64::consts::FRAC_PI_2;
    match shape {
        Shape::Circle => polar(20, &|_| r, 0.0),
        Shape::Square => polar(4, &|_| r * 1.25, std::f64::consts::FRAC_PI_4),
        Shape::Diamond => polar(4, &|_| r * 1.3, 0.0),
        Shape::TriangleUp => polar(3, &|_| r * 1.55, up),
        Shape::TriangleDown => polar(3, &|_| r * 1.55, -up),
        Shape::Star => polar(10, &|k| if k % 2 == 0 { r * 1.6 } else { r * 0.7 }, up),
        Shape::Plus => {
            let (a, b) = ((r * 1.35).round() as i32, (r * 0.5).round() as i32);
            [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
                .iter()
                .map(|&(dx, dy)| (x + dx, y + dy))
                .collect()
        }
    }
}

/// Draws a marker: a white halo (so overlapping markers stay apart), the shape in `colour`, and,
/// when `ring` is set, a dark ring around it first (how the Pareto front is emphasised).
pub(crate) fn draw_marker<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    shape: Shape,
    at: (i32, i32),
    r: f64,
    colour: RGBColor,
    ring: Option<RGBColor>,
) -> DrawResult<DB> {
    if let Some(ring) = ring {
        root.draw(&Polygon::new(outline(shape, at, r + 4.0), ring.filled()))?;
    }
    root.draw(&Polygon::new(outline(shape, at, r + 1.5), PAPER.filled()))?;
    root.draw(&Polygon::new(outline(shape, at, r), colour.filled()))
}

/// Hatch directions of a bar fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hatch {
    /// Rising to the right.
    Rising,
    /// Falling to the right.
    Falling,
    Horizontal,
    Vertical,
}

/// The hatch lines of the policy at `index` of the legend: none for the first (solid), then
/// `///`, `\\\`, crossed, `---`, `|||`, grid; repeating past seven.
pub(crate) fn hatches(index: usize) -> &'static [Hatch] {
    use Hatch::*;
    const PATTERNS: [&[Hatch]; 7] =
        [&[], &[Rising], &[Falling], &[Rising, Falling], &[Horizontal], &[Vertical], &[Horizontal, Vertical]];
    PATTERNS[index % PATTERNS.len()]
}

/// The hatch segments of direction `hatch` across the pixel box `(x0, y0)`–`(x1, y1)`, `gap` pixels
/// apart, each clipped to the box.
pub(crate) fn hatch_segments(
    hatch: Hatch,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
    gap: i32,
) -> Vec<[(i32, i32); 2]> {
    let (w, h) = (x1 - x0, y1 - y0);
    let gap = gap.max(2);
    if w <= 0 || h <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    match hatch {
        // Lines u + v = k (u rightwards, v downwards from the top-left corner) rise to the right.
        Hatch::Rising => {
            for k in (gap..w + h).step_by(gap as usize) {
                let (u0, u1) = ((k - h).max(0), k.min(w));
                out.push([(x0 + u0, y0 + k - u0), (x0 + u1, y0 + k - u1)]);
            }
        }
        // Lines u − v = k fall to the right.
        Hatch::Falling => {
            for k in (-h + gap..w).step_by(gap as usize) {
                let (u0, u1) = (k.max(0), (h + k).min(w));
                out.push([(x0 + u0, y0 + u0 - k), (x0 + u1, y0 + u1 - k)]);
            }
        }
        Hatch::Horizontal => {
            out.extend((gap / 2..h).step_by(gap as usize).map(|v| [(x0, y0 + v), (x1, y0 + v)]));
        }
        Hatch::Vertical => {
            out.extend((gap / 2..w).step_by(gap as usize).map(|u| [(x0 + u, y0), (x0 + u, y1)]));
        }
    }
    out
}

/// Draws a box filled the way the policy at `policy` of the legend fills a bar of `colour`: solid
/// for the first policy, otherwise a pale tint crossed by the policy's hatch in `colour`; and a
/// darker border.
pub(crate) fn draw_box<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    from: (i32, i32),
    to: (i32, i32),
    colour: RGBColor,
    policy: usize,
) -> DrawResult<DB> {
    let pattern = hatches(policy);
    let fill = if pattern.is_empty() { colour } else { pale(colour, 0.72) };
    root.draw(&Rectangle::new([from, to], fill.filled()))?;
    for &h in pattern {
        for seg in hatch_segments(h, from, to, 6) {
            root.draw(&PathElement::new(seg, colour.stroke_width(1)))?;
        }
    }
    if to.0 - from.0 >= 2 {
        root.draw(&Rectangle::new([from, to], border_colour(colour).stroke_width(1)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hatch_segments_stay_inside_their_box() {
        let (a, b) = ((10, 20), (70, 44));
        for h in [Hatch::Rising, Hatch::Falling, Hatch::Horizontal, Hatch::Vertical] {
            let segs = hatch_segments(h, a, b, 6);
            assert!(!segs.is_empty(), "{h:?}");
            for [p, q] in segs {
                for (x, y) in [p, q] {
                    assert!((a.0..=b.0).contains(&x) && (a.1..=b.1).contains(&y), "{h:?}: {x},{y}");
                }
            }
        }
        // A rising line runs from lower left to upper right.
        let [p, q] = hatch_segments(Hatch::Rising, (0, 0), (10, 10), 5)[0];
        assert_eq!((p, q), ((0, 5), (5, 0)));
        assert!(hatch_segments(Hatch::Rising, (5, 5), (5, 9), 6).is_empty());
    }

    #[test]
    fn known_schedules_get_distinct_colours_and_keep_them() {
        let mut c: Vec<(u8, u8, u8)> = (0..5).map(|k| schedule_colour(Some(k), 0)).map(|c| (c.0, c.1, c.2)).collect();
        c.extend((0..3).map(|k| schedule_colour(None, k)).map(|c| (c.0, c.1, c.2)));
        let n = c.len();
        c.sort();
        c.dedup();
        assert_eq!(c.len(), n);
    }

    #[test]
    fn shapes_are_centred_and_first_policy_is_plain() {
        assert_eq!(shape(0), Shape::Circle);
        assert!(hatches(0).is_empty() && !hatches(1).is_empty());
        for s in SHAPES {
            let pts = outline(s, (100, 50), 6.0);
            let (xs, ys): (Vec<i32>, Vec<i32>) = pts.iter().copied().unzip();
            let mid = |v: &[i32]| (v.iter().min().unwrap() + v.iter().max().unwrap()) / 2;
            assert!((mid(&xs) - 100).abs() <= 1, "{s:?}");
            assert!((mid(&ys) - 50).abs() <= 2, "{s:?}");
        }
    }
}
