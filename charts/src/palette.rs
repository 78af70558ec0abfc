//! Colours of the charts: one per op (Okabe–Ito, safe for colour-blind readers), a lighter tint
//! per later chunk of an interleaved schedule, and one colour per rank for the memory curves.
//!
//! Invariant: the seven ops get seven different hues, and the text colour chosen for a fill always
//! has enough contrast against it (dark text on light fills, white text on dark ones).

use pipesched_schedules::{Op, Placement};
use plotters::style::RGBColor;

/// Okabe–Ito blue.
const BLUE: RGBColor = RGBColor(0, 114, 178);
/// Okabe–Ito vermillion.
const VERMILLION: RGBColor = RGBColor(213, 94, 0);
/// Okabe–Ito orange.
const ORANGE: RGBColor = RGBColor(230, 159, 0);
/// Okabe–Ito bluish green.
const GREEN: RGBColor = RGBColor(0, 158, 115);
/// Okabe–Ito reddish purple.
const PURPLE: RGBColor = RGBColor(204, 121, 167);
/// Okabe–Ito sky blue.
const SKY: RGBColor = RGBColor(86, 180, 233);
/// Okabe–Ito yellow.
const YELLOW: RGBColor = RGBColor(240, 228, 66);

/// Gradient sums over data-parallel replicas (Okabe–Ito black, a strip under the boxes).
pub const SUM: RGBColor = RGBColor(0, 0, 0);
/// The background of plotting areas and of idle time.
pub const PAPER: RGBColor = RGBColor(255, 255, 255);
/// Text, axes and outlines.
pub const INK: RGBColor = RGBColor(30, 30, 30);
/// Secondary text (notes, axis descriptions).
pub const MUTED: RGBColor = RGBColor(100, 100, 100);
/// Grid lines and rank separators.
pub const RULE: RGBColor = RGBColor(225, 225, 225);

/// The base colour of `op` (chunk 0).
pub fn op_colour(op: Op) -> RGBColor {
    match op {
        Op::F => BLUE,
        Op::B => VERMILLION,
        Op::I => ORANGE,
        Op::W => GREEN,
        Op::R => PURPLE,
        Op::O => SKY,
        Op::L => YELLOW,
    }
}

/// What a legend says an op is.
pub fn op_name(op: Op) -> &'static str {
    match op {
        Op::F => "forward",
        Op::B => "backward",
        Op::I => "input grad",
        Op::W => "weight grad",
        Op::R => "recompute",
        Op::O => "offload",
        Op::L => "reload",
    }
}

/// The fill of `op` on chunk `chunk` of `v`: chunk 0 is the base colour, later chunks are
/// progressively mixed with white (never past 60 %, so every tint stays clearly coloured). Four
/// shades at most: with more than four chunks, chunks 3 and up share the palest (the legends say
/// "3+").
pub fn box_colour(op: Op, chunk: usize, v: usize) -> RGBColor {
    let base = op_colour(op);
    let shades = v.min(SHADES);
    if chunk == 0 || shades <= 1 {
        return base;
    }
    let t = 0.6 * chunk.min(shades - 1) as f64 / (shades - 1) as f64;
    mix(base, PAPER, t)
}

/// Shades of one op a chart tells apart: chunks 0, 1, 2 and 3 or more.
pub const SHADES: usize = 4;

/// The border of a box: its fill, darkened, so neighbouring boxes of one op stay distinct.
pub fn border_colour(fill: RGBColor) -> RGBColor {
    mix(fill, RGBColor(0, 0, 0), 0.45)
}

/// Text colour readable on `fill`.
pub fn text_on(fill: RGBColor) -> RGBColor {
    let RGBColor(r, g, b) = fill;
    let luma = 0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64;
    if luma > 150.0 {
        RGBColor(0, 0, 0)
    } else {
        PAPER
    }
}

/// The chunk (0 … v−1) a stage belongs to on its rank.
pub fn chunk_of(stage: usize, p: usize, placement: Placement) -> usize {
    match placement {
        Placement::Loop => stage / p.max(1),
        Placement::V => usize::from(stage >= p),
    }
}

/// The colour of rank `rank`'s memory curve among `p`: Okabe–Ito hues up to 8 ranks, then a
/// viridis-like ramp ordered by rank (dark blue → green → yellow-green).
pub fn rank_colour(rank: usize, p: usize) -> RGBColor {
    const DISTINCT: [RGBColor; 8] =
        [BLUE, VERMILLION, GREEN, ORANGE, PURPLE, SKY, RGBColor(0, 0, 0), RGBColor(150, 150, 150)];
    if p <= DISTINCT.len() {
        return DISTINCT[rank % DISTINCT.len()];
    }
    // Stops of the viridis colour map, stopping short of its pale yellow end.
    const RAMP: [RGBColor; 5] = [
        RGBColor(68, 1, 84),
        RGBColor(59, 82, 139),
        RGBColor(33, 145, 140),
        RGBColor(94, 201, 98),
        RGBColor(190, 208, 30),
    ];
    let t = rank as f64 / (p - 1) as f64 * (RAMP.len() - 1) as f64;
    let i = (t.floor() as usize).min(RAMP.len() - 2);
    mix(RAMP[i], RAMP[i + 1], t - i as f64)
}

/// `a` moved a fraction `t` of the way to `b`.
pub fn mix(a: RGBColor, b: RGBColor, t: f64) -> RGBColor {
    let c = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round().clamp(0.0, 255.0) as u8;
    RGBColor(c(a.0, b.0), c(a.1, b.1), c(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_chunks_get_distinct_fills() {
        for v in [2, 4] {
            let mut fills: Vec<RGBColor> =
                Op::ALL.iter().flat_map(|&op| (0..v).map(move |c| box_colour(op, c, v))).collect();
            let n = fills.len();
            fills.sort_by_key(|c| (c.0, c.1, c.2));
            fills.dedup();
            assert_eq!(fills.len(), n);
        }
        // Past four chunks, 3 and up share the palest shade, which is the palest of four.
        assert_eq!(box_colour(Op::F, 7, 8), box_colour(Op::F, 3, 8));
        assert_eq!(box_colour(Op::F, 3, 8), box_colour(Op::F, 3, 4));
        assert_ne!(box_colour(Op::F, 2, 8), box_colour(Op::F, 3, 8));
    }

    #[test]
    fn ranks_get_distinct_colours() {
        for p in [1, 2, 8, 16, 64] {
            let mut c: Vec<_> = (0..p).map(|r| rank_colour(r, p)).map(|c| (c.0, c.1, c.2)).collect();
            c.dedup();
            assert_eq!(c.len(), p);
        }
    }

    #[test]
    fn chunks_follow_the_placement() {
        assert_eq!((0..8).map(|s| chunk_of(s, 4, Placement::Loop)).collect::<Vec<_>>(), [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(chunk_of(5, 4, Placement::V), 1);
        assert_eq!(chunk_of(3, 4, Placement::V), 0);
    }
}
