//! `Rect`: an axis-aligned rectangle of pixels, the unit in which labels are kept clear of each
//! other and of what is drawn.
//!
//! Invariant: `x0 ≤ x1` and `y0 ≤ y1`; the right and bottom edges are exclusive.

/// An axis-aligned pixel rectangle, `x0 ≤ x1`, `y0 ≤ y1`, right and bottom edges exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x0: i32,
    /// Top.
    pub y0: i32,
    /// Right (exclusive).
    pub x1: i32,
    /// Bottom (exclusive).
    pub y1: i32,
}

impl Rect {
    /// The `w` × `h` rectangle whose top-left corner is `(x, y)`.
    pub fn at(x: i32, y: i32, w: u32, h: u32) -> Rect {
        Rect { x0: x, y0: y, x1: x + w as i32, y1: y + h as i32 }
    }

    /// The bounding box of the segment from `a` to `b`, both ends included: exact for the
    /// horizontal and vertical segments of step lines.
    pub fn around(a: (i32, i32), b: (i32, i32)) -> Rect {
        Rect { x0: a.0.min(b.0), y0: a.1.min(b.1), x1: a.0.max(b.0) + 1, y1: a.1.max(b.1) + 1 }
    }

    /// Whether the two share a pixel.
    pub fn intersects(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    /// Whether `self` lies inside `o`.
    pub fn inside(&self, o: &Rect) -> bool {
        self.x0 >= o.x0 && self.x1 <= o.x1 && self.y0 >= o.y0 && self.y1 <= o.y1
    }

    /// Whether the pixel `(x, y)` is in `self`.
    pub fn holds(&self, (x, y): (i32, i32)) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_exclusive() {
        let a = Rect::at(0, 0, 10, 10);
        assert!(!a.intersects(&Rect::at(10, 0, 5, 5)));
        assert!(a.intersects(&Rect::at(9, 9, 5, 5)));
        assert!(a.holds((9, 9)) && !a.holds((10, 9)));
        assert!(Rect::at(2, 2, 3, 3).inside(&a) && !Rect::at(8, 8, 3, 3).inside(&a));
        assert_eq!(Rect::around((5, 7), (1, 7)), Rect { x0: 1, y0: 7, x1: 6, y1: 8 });
    }
}
