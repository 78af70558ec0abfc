//! Naming the points of a scatter plot: each name takes the first free spot on a ring of eight
//! around its marker (right, upper right, lower right, left, upper left, lower left, above,
//! below), ring after ring further out; off the first ring a thin leader line runs from the marker
//! to the name.
//!
//! Invariant: a placed name lies inside the bounds and touches no other name, no marker, no
//! segment of the given lines and no leader line; it is nearer its own marker than any other, or
//! else has a leader, which crosses no marker, line or name. A name that finds no such spot is not
//! placed (`None`), and the caller names its point another way.

use pipesched_charts::rect::Rect;

/// A name's place: its box, and the leader line to it when it is off the first ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    /// The box the name needs.
    pub rect: Rect,
    /// From the marker's edge to the nearest point of the box.
    pub leader: Option<[(i32, i32); 2]>,
}

/// A marker to name: its centre, the half-width of the square it covers, and the size of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    /// Centre, in pixels.
    pub at: (i32, i32),
    /// Half the side of the square the marker covers.
    pub radius: i32,
    /// Width and height of its name's box.
    pub size: (u32, u32),
}

fn overlaps(a: &Rect, b: &Rect) -> bool {
    a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1
}

fn contains(outer: &Rect, inner: &Rect) -> bool {
    inner.x0 >= outer.x0 && inner.x1 <= outer.x1 && inner.y0 >= outer.y0 && inner.y1 <= outer.y1
}

fn holds(r: &Rect, (x, y): (i32, i32)) -> bool {
    x >= r.x0 && x < r.x1 && y >= r.y0 && y < r.y1
}

/// Squared distance from `rect` to the point `(x, y)`.
fn gap(rect: &Rect, (x, y): (i32, i32)) -> i64 {
    let dx = (rect.x0 - x).max(x - (rect.x1 - 1)).max(0) as i64;
    let dy = (rect.y0 - y).max(y - (rect.y1 - 1)).max(0) as i64;
    dx * dx + dy * dy
}

/// The square a marker covers.
fn square(m: &Mark) -> Rect {
    let (x, y) = m.at;
    Rect { x0: x - m.radius, y0: y - m.radius, x1: x + m.radius + 1, y1: y + m.radius + 1 }
}

/// The part of a marker's square a leader must not cross: it may graze the 3 px margin.
fn core(m: &Mark) -> Rect {
    let (x, y) = m.at;
    let r = m.radius - 3;
    Rect { x0: x - r, y0: y - r, x1: x + r + 1, y1: y + r + 1 }
}

/// The pixels along a leader, ends excluded: one per step of at most a pixel in x and in y, so
/// the leader cannot slip between them across a one-pixel line.
fn along([a, b]: [(i32, i32); 2]) -> impl Iterator<Item = (i32, i32)> {
    let (dx, dy) = ((b.0 - a.0) as f64, (b.1 - a.1) as f64);
    let steps = dx.abs().max(dy.abs()).ceil().max(1.0) as i32;
    (1..steps).map(move |k| {
        let t = k as f64 / steps as f64;
        (a.0 + (dx * t).round() as i32, a.1 + (dy * t).round() as i32)
    })
}

/// Places the names of `marks` in the order `order` (marks not listed stay `None`), on at most
/// `rings` rings, inside `bounds`, clear of the segments of `lines` (pixel polylines, as
/// horizontal and vertical steps: a segment is kept clear by its bounding box).
pub(crate) fn place(
    marks: &[Mark],
    order: &[usize],
    lines: &[Vec<(i32, i32)>],
    bounds: Rect,
    rings: usize,
) -> Vec<Option<Placed>> {
    let squares: Vec<Rect> = marks.iter().map(square).collect();
    let cores: Vec<Rect> = marks.iter().map(core).collect();
    let segments: Vec<Rect> = lines
        .iter()
        .flat_map(|l| l.windows(2))
        .map(|w| Rect {
            x0: w[0].0.min(w[1].0),
            y0: w[0].1.min(w[1].1),
            x1: w[0].0.max(w[1].0) + 1,
            y1: w[0].1.max(w[1].1) + 1,
        })
        .collect();
    let mut out: Vec<Option<Placed>> = vec![None; marks.len()];
    let mut taken: Vec<Placed> = Vec::new();
    for &i in order {
        let m = &marks[i];
        let free = |p: &Placed| {
            contains(&bounds, &p.rect)
                && !squares.iter().chain(&segments).any(|o| overlaps(o, &p.rect))
                && !taken.iter().any(|t| overlaps(&t.rect, &p.rect))
                && !taken.iter().filter_map(|t| t.leader).any(|l| along(l).any(|q| holds(&p.rect, q)))
                && match p.leader {
                    // Without a leader, a name must be nearer its own marker than any other.
                    None => marks.iter().enumerate().all(|(j, o)| j == i || gap(&p.rect, o.at) > gap(&p.rect, m.at)),
                    Some(l) => along(l).all(|q| {
                        !cores.iter().chain(&segments).any(|c| holds(c, q)) && !taken.iter().any(|t| holds(&t.rect, q))
                    }),
                }
        };
        out[i] = (0..rings).flat_map(|ring| spots(m, ring)).find(free);
        if let Some(p) = out[i] {
            taken.push(p);
        }
    }
    out
}

/// The eight spots of ring `ring` around `m`, in order of preference.
fn spots(m: &Mark, ring: usize) -> impl Iterator<Item = Placed> + '_ {
    let (x, y) = m.at;
    let (w, h) = (m.size.0 as i32, m.size.1 as i32);
    let d = m.radius + 1 + ring as i32 * (h + 4);
    let diag = m.radius + 1 + (ring as f64 * (h + 4) as f64 * 0.75) as i32;
    let corners = [
        (x + d, y - h / 2),
        (x + diag, y - diag - h),
        (x + diag, y + diag),
        (x - d - w, y - h / 2),
        (x - diag - w, y - diag - h),
        (x - diag - w, y + diag),
        (x - w / 2, y - d - h),
        (x - w / 2, y + d),
    ];
    corners.into_iter().map(move |(cx, cy)| {
        let rect = Rect { x0: cx, y0: cy, x1: cx + w, y1: cy + h };
        let leader = (ring > 0).then(|| leader(m, &rect));
        Placed { rect, leader }
    })
}

/// A line from the edge of `m`'s square towards the nearest point of `rect`, ending on it.
fn leader(m: &Mark, rect: &Rect) -> [(i32, i32); 2] {
    let (x, y) = m.at;
    let end = (x.clamp(rect.x0, rect.x1 - 1), y.clamp(rect.y0, rect.y1 - 1));
    let (dx, dy) = ((end.0 - x) as f64, (end.1 - y) as f64);
    let len = dx.hypot(dy).max(1.0);
    let r = m.radius as f64 + 2.0;
    let start = (x + (dx / len * r).round() as i32, y + (dy / len * r).round() as i32);
    [start, end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Rect = Rect { x0: 0, y0: 0, x1: 800, y1: 500 };

    fn mark(x: i32, y: i32) -> Mark {
        Mark { at: (x, y), radius: 8, size: (60, 16) }
    }

    /// Every placed name is clear of the others, of every marker and inside the bounds.
    fn check(marks: &[Mark], placed: &[Option<Placed>]) {
        let rects: Vec<Rect> = placed.iter().flatten().map(|p| p.rect).collect();
        for (k, a) in rects.iter().enumerate() {
            assert!(contains(&BOUNDS, a));
            assert!(rects[k + 1..].iter().all(|b| !overlaps(a, b)), "{a:?}");
            assert!(marks.iter().all(|m| !overlaps(&square(m), a)), "{a:?}");
        }
    }

    #[test]
    fn lone_marks_are_named_on_their_right_without_leaders() {
        let marks = [mark(100, 100), mark(400, 300)];
        let placed = place(&marks, &[0, 1], &[], BOUNDS, 3);
        check(&marks, &placed);
        assert_eq!(placed[0], Some(Placed { rect: Rect { x0: 109, y0: 92, x1: 169, y1: 108 }, leader: None }));
        // Only listed marks are named.
        assert_eq!(place(&marks, &[1], &[], BOUNDS, 3)[0], None);
    }

    #[test]
    fn names_turn_left_at_the_edge_and_keep_off_lines() {
        let marks = [mark(780, 100)];
        let placed = place(&marks, &[0], &[], BOUNDS, 1);
        assert_eq!(placed[0].unwrap().rect.x1, 780 - 9);
        // A horizontal line through the marker pushes the name above or below it.
        let line = vec![vec![(0, 100), (800, 100)]];
        let placed = place(&[mark(100, 100)], &[0], &line, BOUNDS, 1)[0].unwrap();
        assert!(placed.rect.y1 <= 100 || placed.rect.y0 > 100, "{placed:?}");
    }

    #[test]
    fn a_crowd_gets_leaders_or_goes_unnamed() {
        let marks: Vec<Mark> = (0..12).map(|k| mark(300 + 6 * (k % 4), 200 + 6 * (k / 4))).collect();
        let all: Vec<usize> = (0..marks.len()).collect();
        let placed = place(&marks, &all, &[], BOUNDS, 6);
        check(&marks, &placed);
        assert!(placed.iter().flatten().any(|p| p.leader.is_some()));
        // With one ring only, some find no room.
        assert!(place(&marks, &all, &[], BOUNDS, 1).iter().any(Option::is_none));
        // Leaders cross no other marker and no other name, nor a line.
        let line = vec![vec![(315, 150), (315, 260)]];
        for p in place(&marks, &all, &line, BOUNDS, 6).iter().flatten() {
            if let Some(l) = p.leader {
                assert!(along(l).all(|(x, y)| x != 315 || !(150..=260).contains(&y)), "{l:?} crosses the line");
            }
        }
        for (i, p) in placed.iter().enumerate() {
            let Some(l) = p.and_then(|p| p.leader) else { continue };
            for q in along(l) {
                let inside_other = |(j, m): (usize, &Mark)| j != i && holds(&core(m), q);
                assert!(!marks.iter().enumerate().any(inside_other), "leader of {i} crosses a marker");
                assert!(placed.iter().flatten().all(|o| !holds(&o.rect, q)));
            }
        }
    }

    #[test]
    fn a_name_wider_than_the_plot_is_not_placed() {
        let wide = Mark { size: (900, 16), ..mark(400, 200) };
        assert_eq!(place(&[wide], &[0], &[], BOUNDS, 6), [None]);
    }
}
