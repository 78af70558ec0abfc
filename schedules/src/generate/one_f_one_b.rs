//! 1F1B / PipeDream-Flush (Narayanan et al., SOSP 2019 and ICML 2021): warm-up forwards, then
//! one forward and one backward alternately, then the remaining backwards.

use super::{check_pm, finish};
use crate::action::{Action, Op};
use crate::error::Result;
use crate::schedule::Schedule;

/// 1F1B: rank `r` runs `min(p−r−1, m)` warm-up forwards; then, while forwards remain, one `F`
/// and one `B`; then the remaining `B`. Rank `r` never holds more than `p−r` micro-batches.
/// `one_f_one_b(3, 5)`:
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9   10   11   12   13
/// rank 0  0F0  0F1  0F2    .    .  0B0  0F3  0B1  0F4  0B2    .  0B3    .  0B4
/// rank 1    .  1F0  1F1    .  1B0  1F2  1B1  1F3  1B2  1F4  1B3    .  1B4    .
/// rank 2    .    .  2F0  2B0  2F1  2B1  2F2  2B2  2F3  2B3  2F4  2B4    .    .
/// ```
pub fn one_f_one_b(p: usize, m: usize) -> Result<Schedule> {
    check_pm("1f1b", p, 1, m)?;
    let lanes = (0..p)
        .map(|r| {
            let warm = (p - r - 1).min(m);
            // F and B of every micro-batch, in one allocation.
            let mut lane = Vec::with_capacity(2 * m);
            lane.extend((0..warm).map(|j| Action::new(r, Op::F, j)));
            for j in 0..m {
                if warm + j < m {
                    lane.push(Action::new(r, Op::F, warm + j));
                }
                lane.push(Action::new(r, Op::B, j));
            }
            lane
        })
        .collect();
    finish("1f1b", p, 1, m, lanes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_picture_is_the_output() {
        assert_eq!(one_f_one_b(3, 5).unwrap().grid(), super::super::doc_picture(include_str!("one_f_one_b.rs"), 0));
    }
}
