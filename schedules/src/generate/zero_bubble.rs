//! ZB-H1 and ZB-H2 (Qi, Wan, Huang, Lin, "Zero Bubble Pipeline Parallelism", ICLR 2024): the
//! backward split into `I` (input gradient, on the critical path) and `W` (weight gradient,
//! deferred to fill bubbles).

use super::{check_pm, finish};
use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// ZB-H1: 1F1B's peak memory with the bubble cut to about a third. Rank `r` warms up with
/// `p−r−1` forwards; then for each micro-batch `i`: one `F` if any remain, `I(i)`, and — once
/// `i ≥ r` — the oldest pending `W`; then the remaining `W`. `zb_h1(3, 5)`:
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15   16
/// rank 0  0F0  0F1  0F2    .    .  0I0  0W0  0F3  0I1  0W1  0F4  0I2  0W2  0I3  0W3  0I4  0W4
/// rank 1    .  1F0  1F1    .  1I0  1F2  1I1  1W0  1F3  1I2  1W1  1F4  1I3  1W2  1I4  1W3  1W4
/// rank 2    .    .  2F0  2I0  2F1  2I1  2F2  2I2  2W0  2F3  2I3  2W1  2F4  2I4  2W2  2W3  2W4
/// ```
pub fn zb_h1(p: usize, m: usize) -> Result<Schedule> {
    check_pm("zb-h1", p, 1, m)?;
    zero_bubble("zb-h1", p, m, 1)
}

/// ZB-H2: up to `2p−1` micro-batches in flight buy a zero bubble in the steady state (when
/// consecutive steps overlap; see DESIGN.md's `steady_period`). Needs `m ≥ 2p`. Rank `r` warms up
/// with `2(p−r−1)` forwards; then for each micro-batch `i`: one `F` if any remain, `I(i)`, and —
/// once `i ≥ 2r` — the oldest pending `W`; then the remaining `W`. `zb_h2(2, 4)`:
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9   10   11   12
/// rank 0  0F0  0F1  0F2  0I0  0W0  0F3  0I1  0W1  0I2  0W2  0I3  0W3    .
/// rank 1    .  1F0  1I0  1F1  1I1  1F2  1I2  1W0  1F3  1I3  1W1  1W2  1W3
/// ```
pub fn zb_h2(p: usize, m: usize) -> Result<Schedule> {
    check_pm("zb-h2", p, 1, m)?;
    if m < 2 * p {
        return Err(Error::BadArgs {
            schedule: "zb-h2".into(),
            reason: format!(
                "ZB-H2 warms up with 2(p−1) forwards on rank 0 and needs m ≥ 2p micro-batches; got m={m}, p={p}; use m ≥ {} or zb-h1",
                2 * p
            ),
        });
    }
    zero_bubble("zb-h2", p, m, 2)
}

/// The shared zero-bubble recipe with warm-up factor `w`.
fn zero_bubble(name: &str, p: usize, m: usize, w: usize) -> Result<Schedule> {
    let lanes = (0..p)
        .map(|r| {
            let warm = ((p - r - 1) * w).min(m);
            // F, I and W of every micro-batch, in one allocation.
            let mut lane = Vec::with_capacity(3 * m);
            lane.extend((0..warm).map(|j| Action::new(r, Op::F, j)));
            let mut next_f = warm;
            let mut next_w = 0;
            for i in 0..m {
                if next_f < m {
                    lane.push(Action::new(r, Op::F, next_f));
                    next_f += 1;
                }
                lane.push(Action::new(r, Op::I, i));
                if i >= r * w {
                    lane.push(Action::new(r, Op::W, next_w));
                    next_w += 1;
                }
            }
            lane.extend((next_w..m).map(|j| Action::new(r, Op::W, j)));
            lane
        })
        .collect();
    finish(name, p, 1, m, lanes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_pictures_are_the_output() {
        let src = include_str!("zero_bubble.rs");
        assert_eq!(zb_h1(3, 5).unwrap().grid(), super::super::doc_picture(src, 0));
        assert_eq!(zb_h2(2, 4).unwrap().grid(), super::super::doc_picture(src, 1));
    }

    #[test]
    fn zb_h2_needs_2p_microbatches() {
        let e = zb_h2(4, 7).unwrap_err().to_string();
        assert!(e.contains("m ≥ 2p") && e.contains("m=7"), "{e}");
    }
}
