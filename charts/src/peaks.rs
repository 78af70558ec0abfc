//! Placing the value labels of the memory peaks next to their dots without covering anything:
//! each label tries spots around its dot (right, left or centred; above, then below; then the same
//! further out) and takes the first that is inside the plot and clear of every label already
//! placed, of every dot and of every line.
//!
//! Invariant: the answer is all or nothing — either every peak gets a spot and no label touches
//! another label, a dot or a line, or `None`, and the caller shows the values elsewhere.

use crate::rect::Rect;

/// Radius, in pixels, kept clear around every dot.
const DOT: i32 = 6;

/// Top-left corners for labels of sizes `sizes` (w, h) at dots `dots`, all inside `bounds`, clear
/// of each other, of every dot and of every segment of `lines` (pixel polylines), or `None` if some
/// label finds no free spot.
pub(crate) fn place(
    dots: &[(i32, i32)],
    sizes: &[(u32, u32)],
    lines: &[Vec<(i32, i32)>],
    bounds: Rect,
) -> Option<Vec<(i32, i32)>> {
    let mut obstacles: Vec<Rect> =
        dots.iter().map(|&(x, y)| Rect { x0: x - DOT, y0: y - DOT, x1: x + DOT, y1: y + DOT }).collect();
    // A segment's bounding box: exact for the horizontal and vertical segments of step lines.
    obstacles.extend(lines.iter().flat_map(|line| line.windows(2).map(|w| Rect::around(w[0], w[1]))));
    let mut order: Vec<usize> = (0..dots.len()).collect();
    order.sort_by_key(|&i| (dots[i].0, dots[i].1));
    let mut placed: Vec<Rect> = Vec::with_capacity(dots.len());
    let mut corners = vec![(0, 0); dots.len()];
    for i in order {
        let (x, y) = dots[i];
        let (w, h) = sizes[i];
        let (wi, hi) = (w as i32, h as i32);
        // Nearest spots first: right, left and centred, above then below, one label height further
        // out per tier.
        let spots = (0..4).flat_map(|tier| {
            let up = y - hi - 2 - tier * (hi + 2);
            let down = y + 2 + tier * (hi + 2);
            let centred_up = y - DOT - 2 - hi - tier * (hi + 2);
            let centred_down = y + DOT + 2 + tier * (hi + 2);
            let right = x + DOT + 2;
            let left = x - DOT - 2 - wi;
            let centre = x - wi / 2;
            [(right, up), (left, up), (centre, centred_up), (right, down), (left, down), (centre, centred_down)]
        });
        let spot = spots.map(|(cx, cy)| Rect::at(cx, cy, w, h)).find(|r| {
            r.inside(&bounds) && !placed.iter().any(|o| o.intersects(r)) && !obstacles.iter().any(|o| o.intersects(r))
        })?;
        corners[i] = (spot.x0, spot.y0);
        placed.push(spot);
    }
    Some(corners)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Rect = Rect { x0: 0, y0: 0, x1: 1000, y1: 400 };

    fn no_overlap(dots: &[(i32, i32)], size: (u32, u32), corners: &[(i32, i32)]) {
        let rects: Vec<Rect> = corners.iter().map(|&(x, y)| Rect::at(x, y, size.0, size.1)).collect();
        for (i, a) in rects.iter().enumerate() {
            assert!(a.inside(&BOUNDS));
            for b in &rects[i + 1..] {
                assert!(!a.intersects(b), "{a:?} {b:?}");
            }
            for &(x, y) in dots {
                assert!(!a.intersects(&Rect { x0: x - DOT, y0: y - DOT, x1: x + DOT, y1: y + DOT }));
            }
        }
    }

    #[test]
    fn spread_out_peaks_are_labelled_beside_their_dots() {
        let dots = [(100, 100), (300, 150), (500, 200)];
        let corners = place(&dots, &[(60, 14); 3], &[], BOUNDS).unwrap();
        no_overlap(&dots, (60, 14), &corners);
        assert_eq!(corners[0], (100 + DOT + 2, 100 - 16));
    }

    #[test]
    fn close_peaks_are_staggered() {
        let dots = [(100, 100), (104, 100), (108, 100)];
        let corners = place(&dots, &[(60, 14); 3], &[], BOUNDS).unwrap();
        no_overlap(&dots, (60, 14), &corners);
    }

    #[test]
    fn crowded_peaks_give_up() {
        // Sixteen close dots still find spots in four tiers around them...
        let dots: Vec<(i32, i32)> = (0..16).map(|i| (100 + i, 100)).collect();
        no_overlap(&dots, (60, 14), &place(&dots, &[(60, 14); 16], &[], BOUNDS).unwrap());
        // ...forty do not.
        let dots: Vec<(i32, i32)> = (0..40).map(|i| (100 + i, 100)).collect();
        assert_eq!(place(&dots, &[(60, 14); 40], &[], BOUNDS), None);
        // A label that cannot fit inside the plot at all.
        assert_eq!(place(&[(5, 5)], &[(2000, 14)], &[], BOUNDS), None);
    }

    #[test]
    fn labels_keep_off_the_lines() {
        // A plateau running right from the dot, a rise left of it, a line just above.
        let dots = [(100, 100)];
        let lines = vec![vec![(0, 140), (90, 140), (90, 100), (400, 100)], vec![(0, 84), (400, 84)]];
        let corners = place(&dots, &[(60, 14)], &lines, BOUNDS).unwrap();
        let r = Rect::at(corners[0].0, corners[0].1, 60, 14);
        for line in &lines {
            for w in line.windows(2) {
                let seg = Rect::around(w[0], w[1]);
                assert!(!r.intersects(&seg), "{r:?} crosses {seg:?}");
            }
        }
        // Lines everywhere: no spot.
        let hatch: Vec<Vec<(i32, i32)>> = (0..100).map(|k| vec![(0, 4 * k), (1000, 4 * k)]).collect();
        assert_eq!(place(&dots, &[(60, 14)], &hatch, BOUNDS), None);
    }
}
