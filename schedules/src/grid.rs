//! Text grids of schedules: one row per rank, one column per step, marked cells in brackets.
//!
//! Used for generator doc pictures, `pipesched schedule --format grid`, and every validator
//! error (which marks the offending step). Wide grids are cut to a window around the marks.
//! A leaf: it knows actions and nothing else (rows come from lanes, columns from any clock).

use crate::action::Action;

/// Widest grid drawn in full when cells are marked; wider ones show a window around the marks,
/// at most `2 · MAX_COLUMNS` wide. Grids without marks are always drawn in full.
const MAX_COLUMNS: usize = 40;

/// Most ranks drawn when cells are marked: beyond it only the marked ranks are drawn, at most
/// this many, and a line says how many were left out.
const MAX_ROWS: usize = 16;

/// Lanes as rows, one action per column (column = index in the lane, the validator's "step").
pub fn packed_rows<L: std::ops::Deref<Target = Vec<Action>>>(lanes: &[L]) -> Vec<Vec<Option<Action>>> {
    lanes.iter().map(|lane| lane.iter().copied().map(Some).collect()).collect()
}

/// Lanes placed on a clock: `ticks[r][k]` is the column of action `k` of rank `r`.
pub fn aligned_rows<L: std::ops::Deref<Target = Vec<Action>>>(
    lanes: &[L],
    ticks: &[Vec<usize>],
) -> Vec<Vec<Option<Action>>> {
    lanes
        .iter()
        .zip(ticks)
        .map(|(lane, t)| {
            let width = t.last().map_or(0, |&x| x + 1);
            let mut row = vec![None; width];
            for (a, &col) in lane.iter().zip(t) {
                row[col] = Some(*a);
            }
            row
        })
        .collect()
}

/// Renders rows as a grid. `marks` are `(rank, column)` cells drawn in brackets, with a caret
/// line under each marked row; a grid with marks is cut to a window around them (see
/// [`render_lanes`]).
pub fn render(rows: &[Vec<Option<Action>>], marks: &[(usize, usize)]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    draw(rows.len(), columns, |r, c| rows[r].get(c).copied().flatten(), marks)
}

/// Renders lanes packed (column = step in the lane) without copying them: only the cells drawn
/// are read, so an error about a schedule of millions of actions costs no more than a small one.
pub fn render_lanes<L: std::ops::Deref<Target = Vec<Action>>>(lanes: &[L], marks: &[(usize, usize)]) -> String {
    let columns = lanes.iter().map(|l| l.len()).max().unwrap_or(0);
    draw(lanes.len(), columns, |r, c| lanes[r].get(c).copied(), marks)
}

/// Draws `n` rows of `columns` cells, `cell(rank, column)` each, with `marks` in brackets.
fn draw(n: usize, columns: usize, cell: impl Fn(usize, usize) -> Option<Action>, marks: &[(usize, usize)]) -> String {
    let (lo, hi) = window(columns, marks);
    let shown = shown_rows(n, marks);
    let cell = &cell;
    let width = shown
        .iter()
        .flat_map(|&r| (lo..hi).filter_map(move |c| cell(r, c)))
        .map(|a| a.to_string().len())
        .chain(std::iter::once(hi.saturating_sub(1).to_string().len()))
        .max()
        .unwrap_or(1);
    let label = format!("rank {}", n.saturating_sub(1)).len();
    let mut out = String::new();
    // Header: step numbers.
    out.push_str(&format!("{:>label$} ", "step"));
    if lo > 0 {
        out.push_str(" … ");
    }
    for c in lo..hi {
        out.push_str(&format!(" {:>width$} ", c));
    }
    if hi < columns {
        out.push_str(" …");
    }
    trim_line(&mut out);
    for &r in &shown {
        out.push_str(&format!("{:>label$} ", format!("rank {r}")));
        if lo > 0 {
            out.push_str(" … ");
        }
        let mut carets = String::new();
        for c in lo..hi {
            let text = cell(r, c).map_or(String::from("."), |a| a.to_string());
            let marked = marks.contains(&(r, c));
            let (open, close) = if marked { ('[', ']') } else { (' ', ' ') };
            out.push_str(&format!("{open}{text:>width$}{close}"));
            carets.push_str(&if marked { format!(" {:^>width$} ", "") } else { " ".repeat(width + 2) });
        }
        if hi < columns {
            out.push_str(" …");
        }
        trim_line(&mut out);
        if carets.contains('^') {
            let pad = label + 1 + if lo > 0 { 3 } else { 0 };
            out.push_str(&format!("{}{}\n", " ".repeat(pad), carets.trim_end()));
        }
    }
    if shown.len() < n {
        out.push_str(&format!("(and {} more ranks)\n", n - shown.len()));
    }
    out
}

/// Ends the current line without trailing spaces.
fn trim_line(out: &mut String) {
    out.truncate(out.trim_end_matches(' ').len());
    out.push('\n');
}

/// The ranks drawn: all of them, or — with marks and more than [`MAX_ROWS`] ranks — the marked
/// ones, at most `MAX_ROWS`.
fn shown_rows(n: usize, marks: &[(usize, usize)]) -> Vec<usize> {
    if n <= MAX_ROWS || marks.is_empty() {
        return (0..n).collect();
    }
    let mut rows: Vec<usize> = marks.iter().map(|m| m.0).filter(|&r| r < n).collect();
    rows.sort_unstable();
    rows.dedup();
    rows.truncate(MAX_ROWS);
    rows
}

/// The column range drawn: everything if it fits, else a window around the marks, at most
/// `2 · MAX_COLUMNS` wide from just before the first mark.
fn window(columns: usize, marks: &[(usize, usize)]) -> (usize, usize) {
    if columns <= MAX_COLUMNS || marks.is_empty() {
        return (0, columns);
    }
    let first = marks.iter().map(|m| m.1).min().unwrap_or(0);
    let last = marks.iter().map(|m| m.1).max().unwrap_or(0);
    let lo = first.saturating_sub(MAX_COLUMNS / 4).min(columns - MAX_COLUMNS);
    let hi = (lo + MAX_COLUMNS).max(last + 1).min(lo + 2 * MAX_COLUMNS).min(columns);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;

    #[test]
    fn marks_a_cell() {
        let rows = vec![vec![Some(Action::new(0, Op::F, 0)), None], vec![None, Some(Action::new(1, Op::F, 0))]];
        let text = render(&rows, &[(1, 1)]);
        assert_eq!(
            text,
            "  step    0    1\n\
             rank 0  0F0    .\n\
             rank 1    . [1F0]\n\
             \x20            ^^^\n"
        );
    }

    #[test]
    fn tall_marked_grids_show_the_marked_ranks() {
        let rows: Vec<Vec<Option<Action>>> = (0..100).map(|r| vec![Some(Action::new(r, Op::F, 0))]).collect();
        let text = render(&rows, &[(3, 0), (70, 0)]);
        assert!(text.contains(" 3F0]") && text.contains("[70F0]") && !text.contains("rank 4 "), "{text}");
        assert!(text.ends_with("(and 98 more ranks)\n"), "{text}");
        // Marks far apart: at most two windows wide.
        let row: Vec<Option<Action>> = (0..1000).map(|j| Some(Action::new(0, Op::F, j))).collect();
        let text = render(&[row], &[(0, 10), (0, 900)]);
        assert!(text.contains("[0F10]") && text.lines().all(|l| l.chars().count() < 700), "{text}");
    }

    #[test]
    fn wide_grids_are_windowed() {
        let row: Vec<Option<Action>> = (0..100).map(|j| Some(Action::new(0, Op::F, j))).collect();
        let text = render(&[row], &[(0, 70)]);
        assert!(text.contains("[0F70]"));
        assert!(!text.contains(" 0F10 "));
        assert!(text.contains('…'));
    }
}
