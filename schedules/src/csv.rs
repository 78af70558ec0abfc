//! PyTorch-compatible CSV schedules, compute-only format: one row per rank, comma-separated
//! action strings (`0F0,0F1,,0B0`), an empty cell is an idle slot. A cell may also hold PyTorch's
//! overlapped pair of DualPipeV, `(0F7;7B3)OVERLAP_F_B`: a forward and a backward its rank runs
//! as one overlapped action, read as the two actions back to back, forward first (pipesched's
//! DualPipeV; see `generate/dualpipe_v.rs`). PyTorch's DualPipeV also mixes, on one stage, full
//! backwards (`B`) with split ones (`I`, `W`); a stage takes one kind here, so on a stage that
//! mixes them each `B` is read as its `I` and `W` back to back — what a full backward computes.
//!
//! Export places each action on the unit clock of [`Schedule::grid`], so idle slots show as
//! empty cells; import ignores empty cells (a lane runs in order whatever the gaps) and sends
//! the result through [`validate`].

use crate::action::Action;
use crate::clock::unit_clock;
use crate::error::{Error, Result};
use crate::schedule::{Placement, Schedule};
use crate::validate::validate;

/// PyTorch's suffix of an overlapped forward-and-backward pair.
const OVERLAP: &str = "OVERLAP_F_B";

/// Writes `s` as CSV, one line per rank, idle ticks as empty cells.
pub fn to_csv(s: &Schedule) -> Result<String> {
    Ok(csv_lines(s)?.collect())
}

/// The CSV of `s` line by line (each ending in a newline), so a large schedule can be written out
/// without holding all of its text at once.
pub fn csv_lines(s: &Schedule) -> Result<impl Iterator<Item = String> + '_> {
    let ticks = unit_clock(s)?;
    Ok(s.lanes.iter().zip(ticks).map(|(lane, t)| {
        let mut line = String::new();
        // Cell c is preceded by c commas: pad with commas up to each action's tick.
        let mut col = 0;
        for (a, &tick) in lane.iter().zip(&t) {
            while col < tick {
                line.push(',');
                col += 1;
            }
            line.push_str(&a.to_string());
        }
        line.push('\n');
        line
    }))
}

/// Reads a CSV schedule. The number of ranks is the number of lines, the number of stages and
/// micro-batches the largest ones named plus one; the placement is `loop` unless the stages fit
/// only the `V` placement. The schedule is validated.
pub fn from_csv(text: &str, name: &str) -> Result<Schedule> {
    let mut lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return Err(Error::Csv {
            line: 1,
            cell: 1,
            reason: "the file is empty; expected one line of comma-separated actions per rank".into(),
        });
    }
    let mut lanes = Vec::with_capacity(lines.len());
    for (r, line) in lines.iter().enumerate() {
        let mut lane = Vec::new();
        for (c, cell) in line.split(',').enumerate() {
            let cell = cell.trim().trim_matches('"').trim();
            if cell.is_empty() {
                continue;
            }
            let bad = |reason: String| Error::Csv { line: r + 1, cell: c + 1, reason };
            if let Some(pair) = cell.strip_suffix(OVERLAP) {
                let inner = pair.strip_prefix('(').and_then(|p| p.strip_suffix(')'));
                let Some((first, second)) = inner.and_then(|p| p.split_once(';')) else {
                    return Err(bad(format!("an overlapped pair is written (F;B){OVERLAP}, e.g. (0F7;7B3){OVERLAP}")));
                };
                for part in [first, second] {
                    lane.push(part.trim().parse().map_err(|e: Error| bad(e.to_string()))?);
                }
                continue;
            }
            let a: Action = cell.parse().map_err(|e: Error| bad(e.to_string()))?;
            lane.push(a);
        }
        lanes.push(lane);
    }
    split_mixed_backwards(&mut lanes);
    let p = lanes.len();
    let all = lanes.iter().flat_map(|l| l.iter());
    let stages = all.clone().map(|a| a.stage() + 1).max().unwrap_or(0);
    let m = all.map(|a| a.mb() + 1).max().unwrap_or(0);
    if stages == 0 {
        return Err(Error::Csv { line: 1, cell: 1, reason: "the file holds no actions".into() });
    }
    if stages % p != 0 {
        return Err(Error::Csv {
            line: 1,
            cell: 1,
            reason: format!("the actions name {stages} stages (0..={}), not a multiple of the {p} ranks (lines); every rank must hold the same number of stages", stages - 1),
        });
    }
    let v = stages / p;
    let fits = |placement: Placement| {
        lanes.iter().enumerate().all(|(r, lane)| lane.iter().all(|a| placement.rank_of(a.stage(), p) == r))
    };
    let placement = if v == 2 && !fits(Placement::Loop) && fits(Placement::V) { Placement::V } else { Placement::Loop };
    let s = Schedule::new(name, p, v, m, placement, lanes);
    validate(&s)?;
    Ok(s)
}

/// On every stage whose micro-batches mix full and split backwards, replaces each full `B` by
/// its `I` and `W`, back to back.
fn split_mixed_backwards(lanes: &mut [Vec<Action>]) {
    use crate::action::Op;
    let stages = lanes.iter().flatten().map(|a| a.stage() + 1).max().unwrap_or(0);
    let (mut full, mut split) = (vec![false; stages], vec![false; stages]);
    for a in lanes.iter().flatten() {
        match a.op {
            Op::B => full[a.stage()] = true,
            Op::I | Op::W => split[a.stage()] = true,
            _ => {}
        }
    }
    if !(0..stages).any(|s| full[s] && split[s]) {
        return;
    }
    for lane in lanes.iter_mut() {
        *lane = lane
            .iter()
            .flat_map(|&a| match a.op {
                Op::B if split[a.stage()] => {
                    vec![Action::new(a.stage(), Op::I, a.mb()), Action::new(a.stage(), Op::W, a.mb())]
                }
                _ => vec![a],
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::Kind;

    #[test]
    fn round_trips_every_generator() {
        for kind in Kind::ALL {
            for (p, m) in [(1, 2), (2, 4), (4, 8), (3, 6)] {
                let s = kind.generate(p, kind.default_chunks(), m).unwrap();
                let back = from_csv(&to_csv(&s).unwrap(), kind.name()).unwrap();
                assert_eq!(back, s, "{kind} p={p} m={m}");
            }
        }
    }

    #[test]
    fn reads_a_hand_written_pytorch_csv() {
        // 1F1B on 2 ranks, 3 micro-batches, as PyTorch's `_dump_csv` writes it.
        let text = "0F0,0F1,,0B0,0F2,0B1,,0B2\r\n,1F0,1B0,1F1,1B1,1F2,1B2\r\n";
        let s = from_csv(text, "hand").unwrap();
        assert_eq!((s.p, s.v, s.m), (2, 1, 3));
        assert_eq!(
            s.lanes[1].iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["1F0", "1B0", "1F1", "1B1", "1F2", "1B2"]
        );
    }

    #[test]
    fn reads_overlapped_pairs_as_two_actions() {
        // One rank, V placement of two stages, DualPipeV-style: the pair runs 0F1 then 1B0.
        let text = "0F0,1F0,(0F1;1B0)OVERLAP_F_B,1F1,0B0,1B1,0B1\n";
        let s = from_csv(text, "pair").unwrap();
        assert_eq!(
            s.lanes[0].iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["0F0", "1F0", "0F1", "1B0", "1F1", "0B0", "1B1", "0B1"]
        );
        for bad in ["(0F1)OVERLAP_F_B", "0F1;1B0)OVERLAP_F_B", "(0F1;1X0)OVERLAP_F_B"] {
            let e = from_csv(&format!("0F0,{bad}\n"), "bad").unwrap_err().to_string();
            assert!(e.contains("line 1, cell 2"), "{bad}: {e}");
        }
    }

    /// `lane` with every `I` directly followed by its `W` written as one full `B`.
    fn merged(lane: &[Action]) -> Vec<String> {
        use crate::action::Op;
        let mut out = Vec::new();
        let mut k = 0;
        while k < lane.len() {
            let a = lane[k];
            let full = a.op == Op::I && lane.get(k + 1) == Some(&Action::new(a.stage(), Op::W, a.mb()));
            out.push(if full { Action::new(a.stage(), Op::B, a.mb()).to_string() } else { a.to_string() });
            k += if full { 2 } else { 1 };
        }
        out
    }

    #[test]
    fn reads_dualpipev_as_pytorch_writes_it() {
        // PyTorch writes DualPipeV's pairs as `(F;B)OVERLAP_F_B`, with a full B where pipesched
        // runs I and W back to back, and the cool-down's split ones as I and W: write ours that
        // way and read it back to the same order.
        for (p, m) in [(2, 4), (4, 10)] {
            let s = crate::dualpipe_v(p, m).unwrap();
            let mut text = String::new();
            for lane in s.lanes.iter() {
                let cells = merged(lane);
                let mut out: Vec<String> = Vec::new();
                for cell in cells {
                    match out.last_mut() {
                        // A forward then a full backward of the other chunk: one overlapped pair.
                        Some(last) if cell.contains('B') && last.contains('F') && !last.contains(';') => {
                            *last = format!("({last};{cell})OVERLAP_F_B");
                        }
                        _ => out.push(cell),
                    }
                }
                text.push_str(&out.join(","));
                text.push('\n');
            }
            assert!(text.contains("OVERLAP_F_B"), "{text}");
            let back = from_csv(&text, "dualpipev").unwrap();
            let orders = |s: &Schedule| s.lanes.iter().map(|l| merged(l)).collect::<Vec<_>>();
            assert_eq!(orders(&back), orders(&s), "p={p} m={m}\n{text}");
            assert_eq!(back.placement, Placement::V);
        }
        // A stage mixing full and split backwards has its full ones split.
        let s = from_csv("0F0,0F1,0B0,0I1,0W1\n", "mixed").unwrap();
        assert_eq!(
            s.lanes[0].iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["0F0", "0F1", "0I0", "0W0", "0I1", "0W1"]
        );
    }

    #[test]
    fn detects_v_placement() {
        // Rank 0 holds stages 0 and 3, rank 1 holds 1 and 2.
        let text = "0F0,,,,3F0,3B0,,,,0B0\n,1F0,2F0,2B0,1B0\n";
        let text = text.replace(",,,,3F0", ",,,3F0");
        let s = from_csv(&text, "v").unwrap();
        assert_eq!(s.placement, Placement::V);
    }

    #[test]
    fn bad_cells_name_line_and_cell() {
        let e = from_csv("0F0,0X1\n", "bad").unwrap_err().to_string();
        assert!(e.contains("line 1, cell 2"), "{e}");
        assert!(from_csv("\n\n", "empty").unwrap_err().to_string().contains("empty"));
        let e = from_csv("0F0,0B0\n1F0\n", "no-backward").unwrap_err().to_string();
        assert!(e.contains("missing backward: 1F0 (rank 1, step 0)"), "{e}");
    }
}
