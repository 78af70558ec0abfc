//! GPipe (Huang et al., NeurIPS 2019): every rank runs all forwards, then all backwards.

use super::{check_pm, finish};
use crate::action::{Action, Op};
use crate::error::Result;
use crate::schedule::Schedule;

/// GPipe: rank `r` runs `F(r, 0…m−1)`, then `B(r, 0…m−1)`. Every rank holds the activations of all
/// `m` micro-batches at the turn. `gpipe(3, 4)`:
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9   10   11
/// rank 0  0F0  0F1  0F2  0F3    .    .    .    .  0B0  0B1  0B2  0B3
/// rank 1    .  1F0  1F1  1F2  1F3    .    .  1B0  1B1  1B2  1B3    .
/// rank 2    .    .  2F0  2F1  2F2  2F3  2B0  2B1  2B2  2B3    .    .
/// ```
pub fn gpipe(p: usize, m: usize) -> Result<Schedule> {
    check_pm("gpipe", p, 1, m)?;
    let lanes = (0..p)
        .map(|r| {
            let forwards = (0..m).map(|j| Action::new(r, Op::F, j));
            let backwards = (0..m).map(|j| Action::new(r, Op::B, j));
            forwards.chain(backwards).collect()
        })
        .collect();
    finish("gpipe", p, 1, m, lanes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_picture_is_the_output() {
        assert_eq!(gpipe(3, 4).unwrap().grid(), super::super::doc_picture(include_str!("gpipe.rs"), 0));
    }
}
