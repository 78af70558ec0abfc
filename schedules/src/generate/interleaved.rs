//! Interleaved 1F1B (Narayanan et al., "Efficient Large-Scale Language Model Training on GPU
//! Clusters Using Megatron-LM", SC 2021): v model chunks per rank, loop placement.

use super::{check_pm, finish};
use crate::action::{Action, Op};
use crate::error::{Error, Result};
use crate::schedule::Schedule;

/// Interleaved 1F1B with `v` chunks per rank (stage `s` on rank `s mod p`).
///
/// Work is counted in virtual micro-batches `k = 0 … m·v−1`: forward `k` runs chunk
/// `(k div p) mod v` on micro-batch `(k div p·v)·p + k mod p`; backward `k` runs chunk
/// `v−1−((k div p) mod v)` on the same micro-batch index. Rank `r` warms up with
/// `min(2(p−r−1) + (v−1)·p, m·v)` forwards (all of them when `m = p`, as Megatron-LM does), then
/// alternates one forward and one backward, then drains the backwards. `m` must be a multiple of
/// `p`. `interleaved(2, 2, 4)` (stages 0 and 2 on rank 0, 1 and 3 on rank 1):
///
/// ```text
///   step    0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15   16   17
/// rank 0  0F0  0F1  2F0  2F1  0F2  2B0  0F3  2B1  2F2  0B0  2F3  0B1    .  2B2    .  2B3  0B2  0B3
/// rank 1    .  1F0  1F1  3F0  3B0  3F1  3B1  1F2  1B0  1F3  1B1  3F2  3B2  3F3  3B3  1B2  1B3    .
/// ```
pub fn interleaved(p: usize, v: usize, m: usize) -> Result<Schedule> {
    check_pm("interleaved", p, v, m)?;
    let bad = |reason: String| Err(Error::BadArgs { schedule: "interleaved".into(), reason });
    if v < 2 {
        return bad(format!(
            "interleaved needs at least 2 chunks per rank (got v={v}); with one chunk it is 1F1B, use the 1f1b schedule"
        ));
    }
    if m % p != 0 {
        let lower = m / p * p;
        let hint = if lower > 0 { format!("m={lower} or m={}", lower + p) } else { format!("m={p}") };
        return bad(format!(
            "interleaved 1F1B (Megatron-LM) needs m to be a multiple of p so each round of p micro-batches moves through a chunk together; got m={m}, p={p}; try {hint}"
        ));
    }
    let total = m * v;
    let mb = |k: usize| (k / (p * v)) * p + k % p;
    let forward_chunk = |k: usize| (k / p) % v;
    let lanes = (0..p)
        .map(|r| {
            let f = |k: usize| Action::new(forward_chunk(k) * p + r, Op::F, mb(k));
            let b = |k: usize| Action::new((v - 1 - forward_chunk(k)) * p + r, Op::B, mb(k));
            let warm = if m == p { total } else { (2 * (p - r - 1) + (v - 1) * p).min(total) };
            // F and B of every virtual micro-batch, in one allocation.
            let mut lane = Vec::with_capacity(2 * total);
            lane.extend((0..warm).map(f));
            for k in 0..total - warm {
                lane.push(f(warm + k));
                lane.push(b(k));
            }
            lane.extend((total - warm..total).map(b));
            lane
        })
        .collect();
    finish("interleaved", p, v, m, lanes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_picture_is_the_output() {
        assert_eq!(interleaved(2, 2, 4).unwrap().grid(), super::super::doc_picture(include_str!("interleaved.rs"), 0));
    }

    #[test]
    fn m_must_be_a_multiple_of_p() {
        let e = interleaved(4, 2, 6).unwrap_err().to_string();
        assert!(e.contains("multiple of p") && e.contains("m=4 or m=8"), "{e}");
    }
}
