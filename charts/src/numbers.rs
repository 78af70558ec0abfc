//! Which boxes of a timeline carry their micro-batch number, and how it is written:
//! 1. across the box, when the box holds the number with 2 px to spare on each side;
//! 2. turned upright (in a smaller font), when the box is a pixel wider than a digit of that font
//!    is tall and the row holds the number;
//! 3. over a run of slivers (neighbouring boxes of one fill, each too narrow for 1 or 2): every
//!    k-th micro-batch, k the smallest of 1, 2, 5, 10, 20, … whose numbers keep clear of each
//!    other, each centred on its box and inside its run;
//! 4. otherwise not at all (the legend says so).
//!
//! Every test measures the widest number of the chart, so boxes of one width are all treated
//! alike whatever their micro-batch; and boxes of one fill (one op on one chunk) are written
//! across only if their median box holds the number across, so a measured trace, whose boxes of
//! one kind vary a little in width, does not mix the two ways within a kind.
//!
//! Invariant: a number never leaves the box or run it names, never touches another number, and
//! is written in a colour chosen for the fill under it; the choice depends only on pixel sizes,
//! so it is the same in SVG and PNG.

use plotters::style::RGBColor;

use crate::palette::text_on;

/// A box drawn on the timeline: its row, its pixel extent from the plot's left edge, its
/// micro-batch and its fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Boxed {
    /// Row of the timeline.
    pub row: usize,
    /// Left edge, in pixels.
    pub x0: f64,
    /// Right edge, in pixels.
    pub x1: f64,
    /// Micro-batch.
    pub mb: usize,
    /// Fill colour.
    pub fill: RGBColor,
}

/// How a number is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// Across its box.
    Across,
    /// Turned upright inside its box.
    Turned,
    /// Across a run of slivers, centred on its own.
    Over,
}

/// One number to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Number {
    /// Row of the timeline.
    pub row: usize,
    /// Centre, in pixels from the plot's left edge.
    pub x: f64,
    /// The micro-batch.
    pub mb: usize,
    /// How it is written.
    pub way: Way,
    /// Text colour.
    pub colour: RGBColor,
}

/// The numbers of a timeline, and what the legend must say about them.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Numbering {
    /// Numbers to write.
    pub numbers: Vec<Number>,
    /// Some are turned upright.
    pub turned: bool,
    /// Runs of slivers carry every k-th micro-batch, k > 1.
    pub every: Option<usize>,
    /// Some boxes are too narrow to carry a number, alone or in a run.
    pub blank: bool,
}

/// Gap between neighbouring numbers over slivers, in pixels.
const GAP: f64 = 3.0;

/// How wide and tall a text is in a font, in pixels.
pub(crate) type Measure<'a> = &'a dyn Fn(&str) -> (f64, f64);

/// The numbers of `boxes` in rows `inner_h` pixels tall (the height a box takes). `across` and
/// `upright` measure a text in the fonts numbers are written in across and upright; a digit's
/// height is that of `"0"`.
pub(crate) fn number(boxes: &[Boxed], inner_h: f64, across: Measure<'_>, upright: Measure<'_>) -> Numbering {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[a].row.cmp(&boxes[b].row).then(boxes[a].x0.total_cmp(&boxes[b].x0)));
    let widest = boxes.iter().map(|b| b.mb).max().unwrap_or(0).to_string();
    let tw = across(&widest).0;
    let (digit_h, upright_w) = (upright("0").1, upright(&widest).0);
    let across_fits = |w: f64| w >= tw + 4.0;
    // Fills whose median box holds the number across.
    let mut fills: Vec<(RGBColor, Vec<f64>)> = Vec::new();
    for b in boxes {
        match fills.iter_mut().find(|(f, _)| *f == b.fill) {
            Some((_, widths)) => widths.push(b.x1 - b.x0),
            None => fills.push((b.fill, vec![b.x1 - b.x0])),
        }
    }
    let wide: Vec<RGBColor> = fills
        .into_iter()
        .filter_map(|(fill, mut widths)| {
            widths.sort_by(f64::total_cmp);
            across_fits(widths[widths.len() / 2]).then_some(fill)
        })
        .collect();
    let mut out = Numbering::default();
    // Boxes left for tier 3, in row and x order.
    let mut slivers: Vec<usize> = Vec::new();
    for &i in &order {
        let b = &boxes[i];
        let w = b.x1 - b.x0;
        let way = if across_fits(w) && wide.contains(&b.fill) {
            Way::Across
        } else if w >= digit_h + 1.0 && inner_h >= upright_w + 4.0 {
            out.turned = true;
            Way::Turned
        } else {
            slivers.push(i);
            continue;
        };
        out.numbers.push(Number { row: b.row, x: (b.x0 + b.x1) / 2.0, mb: b.mb, way, colour: text_on(b.fill) });
    }
    // Runs: neighbouring slivers of one row and fill, at most a pixel apart. `run[k]` is the run
    // of `slivers[k]`, as its pixel extent.
    let mut runs: Vec<(f64, f64)> = Vec::new();
    let mut run_of: Vec<usize> = Vec::with_capacity(slivers.len());
    for (k, &i) in slivers.iter().enumerate() {
        let b = &boxes[i];
        let joins = k > 0 && {
            let a = &boxes[slivers[k - 1]];
            a.row == b.row && a.fill == b.fill && b.x0 - a.x1 <= 1.0
        };
        if joins {
            let last = runs.len() - 1;
            runs[last].1 = runs[last].1.max(b.x1);
        } else {
            runs.push((b.x0, b.x1));
        }
        run_of.push(runs.len() - 1);
    }
    let mut labelled_runs = vec![false; runs.len()];
    let top = slivers.iter().map(|&i| boxes[i].mb).max().unwrap_or(0);
    let mut k = 1;
    while !slivers.is_empty() {
        // Candidates at this k: numbers that fit inside their run.
        let mut picked: Vec<(usize, f64, f64)> = Vec::new();
        for (s, &i) in slivers.iter().enumerate() {
            let b = &boxes[i];
            if b.mb % k != 0 {
                continue;
            }
            let x = (b.x0 + b.x1) / 2.0;
            let (l, r) = (x - tw / 2.0 - 1.0, x + tw / 2.0 + 1.0);
            let (r0, r1) = runs[run_of[s]];
            if l >= r0 && r <= r1 {
                picked.push((s, l, r));
            }
        }
        if picked.is_empty() {
            break;
        }
        let collides = |a: &(usize, f64, f64), b: &(usize, f64, f64)| {
            boxes[slivers[a.0]].row == boxes[slivers[b.0]].row && b.1 < a.2 + GAP
        };
        let clear = picked.windows(2).all(|w| !collides(&w[0], &w[1]));
        // Past the largest micro-batch only micro-batch 0 is left: keep those that do not collide.
        let last = k > top;
        if last && !clear {
            let mut kept: Vec<(usize, f64, f64)> = Vec::new();
            for c in picked {
                if kept.last().is_none_or(|k| !collides(k, &c)) {
                    kept.push(c);
                }
            }
            picked = kept;
        }
        if clear || last {
            for &(s, _, _) in &picked {
                let b = &boxes[slivers[s]];
                labelled_runs[run_of[s]] = true;
                let x = (b.x0 + b.x1) / 2.0;
                out.numbers.push(Number { row: b.row, x, mb: b.mb, way: Way::Over, colour: text_on(b.fill) });
            }
            out.every = (k > 1).then_some(k);
            break;
        }
        k = next_step(k);
    }
    out.blank = labelled_runs.iter().any(|&l| !l);
    out
}

/// The step after `k` in 1, 2, 5, 10, 20, 50, …
fn next_step(k: usize) -> usize {
    let mut decade = 1;
    while decade * 10 <= k {
        decade *= 10;
    }
    match k / decade {
        1 => 2 * decade,
        2 => 5 * decade,
        _ => 10 * decade,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLUE: RGBColor = RGBColor(0, 114, 178);
    const ORANGE: RGBColor = RGBColor(230, 159, 0);

    /// 6 px per character, 10 px tall.
    fn measure(text: &str) -> (f64, f64) {
        (6.0 * text.len() as f64, 10.0)
    }

    fn boxed(row: usize, x0: f64, x1: f64, mb: usize, fill: RGBColor) -> Boxed {
        Boxed { row, x0, x1, mb, fill }
    }

    fn ways(n: &Numbering) -> Vec<(usize, Way)> {
        n.numbers.iter().map(|n| (n.mb, n.way)).collect()
    }

    #[test]
    fn wide_boxes_get_numbers_across_narrow_ones_upright() {
        // Every box is measured by the widest number, "12": 16 px across; upright, 11 px of width
        // and a row of 16.
        let boxes = [boxed(0, 0.0, 16.0, 7, BLUE), boxed(0, 16.0, 32.0, 12, ORANGE), boxed(1, 0.0, 12.0, 12, BLUE)];
        let n = number(&boxes, 20.0, &measure, &measure);
        assert_eq!(ways(&n), [(7, Way::Across), (12, Way::Across), (12, Way::Turned)]);
        assert!(n.turned && !n.blank && n.every.is_none());
        // Rows too short to hold "12" upright: the box is a sliver, alone in its run, blank.
        let n = number(&boxes[2..], 15.0, &measure, &measure);
        assert_eq!(ways(&n), []);
        assert!(n.blank && !n.turned);
        assert_eq!(n.numbers.len(), 0);
        // White on dark fills, black on light ones.
        let n = number(&boxes, 20.0, &measure, &measure);
        assert_eq!((n.numbers[0].colour, n.numbers[1].colour), (RGBColor(255, 255, 255), RGBColor(0, 0, 0)));
    }

    #[test]
    fn one_fill_is_not_written_two_ways() {
        // Measured boxes of one kind, 15 to 17 px wide: the median (15) is too narrow across, so
        // the 17 px one is upright like the others.
        let boxes = [boxed(0, 0.0, 15.0, 10, BLUE), boxed(0, 20.0, 37.0, 11, BLUE), boxed(0, 40.0, 55.0, 12, BLUE)];
        assert_eq!(
            ways(&number(&boxes, 20.0, &measure, &measure)),
            [(10, Way::Turned), (11, Way::Turned), (12, Way::Turned)]
        );
        // Median wide enough: across where it fits, upright where it does not.
        let boxes = [boxed(0, 0.0, 15.0, 10, BLUE), boxed(0, 20.0, 37.0, 11, BLUE), boxed(0, 40.0, 57.0, 12, BLUE)];
        assert_eq!(
            ways(&number(&boxes, 20.0, &measure, &measure)),
            [(10, Way::Turned), (11, Way::Across), (12, Way::Across)]
        );
    }

    #[test]
    fn upright_numbers_use_their_own_font() {
        // 4 px per character, 7 px tall: "12" fits upright in a 9 px box.
        let small = |t: &str| (4.0 * t.len() as f64, 7.0);
        let boxes = [boxed(0, 0.0, 9.0, 12, BLUE)];
        assert_eq!(ways(&number(&boxes, 20.0, &measure, &small)), [(12, Way::Turned)]);
        assert_eq!(ways(&number(&boxes, 20.0, &measure, &measure)), []);
    }

    #[test]
    fn runs_of_slivers_carry_every_kth_number() {
        // Twenty adjacent 5 px forward boxes, micro-batches 0..20: the widest number, "19", needs
        // 14 px, so numbers 5 px apart collide at k = 1 and 2, and fit at k = 5 (25 px apart).
        let boxes: Vec<Boxed> = (0..20).map(|j| boxed(0, 5.0 * j as f64, 5.0 * (j + 1) as f64, j, BLUE)).collect();
        let n = number(&boxes, 20.0, &measure, &measure);
        assert_eq!(n.every, Some(5));
        // "0", centred on box 0 at 2.5 px, would start left of the run (2.5 − 3 − 1 < 0).
        assert_eq!(n.numbers.iter().map(|n| n.mb).collect::<Vec<_>>(), [5, 10, 15]);
        assert!(n.numbers.iter().all(|n| n.way == Way::Over));
        assert_eq!(n.numbers[0].x, 27.5);
        assert!(!n.blank);
    }

    #[test]
    fn slivers_between_other_colours_stay_blank() {
        // Interleaved-like: a 4 px sliver between wide boxes of another fill.
        let boxes = [boxed(0, 0.0, 30.0, 1, ORANGE), boxed(0, 30.0, 34.0, 2, BLUE), boxed(0, 34.0, 64.0, 3, ORANGE)];
        let n = number(&boxes, 20.0, &measure, &measure);
        assert_eq!(ways(&n), [(1, Way::Across), (3, Way::Across)]);
        assert!(n.blank && n.every.is_none());
    }

    #[test]
    fn steps_go_one_two_five() {
        let mut k = 1;
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(k);
            k = next_step(k);
        }
        assert_eq!(seen, [1, 2, 5, 10, 20, 50, 100]);
    }
}
