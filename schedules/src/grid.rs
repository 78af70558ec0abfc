//! Text grids of schedules: one row per rank, one column per step, marked cells in brackets.
//!
//! Used for generator doc pictures, `pipesched schedule --format grid`, and every validator
//! error (which marks the offending step). Wide grids are cut to a window around the marks.
//! A leaf: it knows actions and nothing else (rows come from lanes, columns from any clock).

use crate::action::Action;

/// Widest grid drawn in full when cells are marked; wider ones show a window around the marks.
/// Grids without marks are always drawn in full.
const MAX_COLUMNS: usize = 40;

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
/// line under each marked row; a wide grid with marks is cut to a window around them.
pub fn render(rows: &[Vec<Option<Action>>], marks: &[(usize, usize)]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let cell = rows
        .iter()
        .flatten()
        .flatten()
        .map(|a| a.to_string().len())
        .chain(std::iter::once(columns.saturating_sub(1).to_string().len()))
        .max()
        .unwrap_or(1);
    let (lo, hi) = window(columns, marks);
    let label = format!("rank {}", rows.len().saturating_sub(1)).len();
    let mut out = String::new();
    // Header: step numbers.
    out.push_str(&format!("{:>label$} ", "step"));
    if lo > 0 {
        out.push_str(" … ");
    }
    for c in lo..hi {
        out.push_str(&format!(" {:>cell$} ", c));
    }
    if hi < columns {
        out.push_str(" …");
    }
    trim_line(&mut out);
    for (r, row) in rows.iter().enumerate() {
        out.push_str(&format!("{:>label$} ", format!("rank {r}")));
        if lo > 0 {
            out.push_str(" … ");
        }
        let mut carets = String::new();
        for c in lo..hi {
            let text = row.get(c).copied().flatten().map_or(String::from("."), |a| a.to_string());
            let marked = marks.contains(&(r, c));
            let (open, close) = if marked { ('[', ']') } else { (' ', ' ') };
            out.push_str(&format!("{open}{text:>cell$}{close}"));
            carets.push_str(&if marked { format!(" {:^>cell$} ", "") } else { " ".repeat(cell + 2) });
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
    out
}

/// Ends the current line without trailing spaces.
fn trim_line(out: &mut String) {
    out.truncate(out.trim_end_matches(' ').len());
    out.push('\n');
}

/// The column range drawn: everything if it fits, else a window around the marks.
fn window(columns: usize, marks: &[(usize, usize)]) -> (usize, usize) {
    if columns <= MAX_COLUMNS || marks.is_empty() {
        return (0, columns);
    }
    let first = marks.iter().map(|m| m.1).min().unwrap_or(0);
    let last = marks.iter().map(|m| m.1).max().unwrap_or(0);
    let lo = first.saturating_sub(MAX_COLUMNS / 4).min(columns - MAX_COLUMNS);
    let hi = (lo + MAX_COLUMNS).max(last + 1).min(columns);
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
    fn wide_grids_are_windowed() {
        let row: Vec<Option<Action>> = (0..100).map(|j| Some(Action::new(0, Op::F, j))).collect();
        let text = render(&[row], &[(0, 70)]);
        assert!(text.contains("[0F70]"));
        assert!(!text.contains(" 0F10 "));
        assert!(text.contains('…'));
    }
}
