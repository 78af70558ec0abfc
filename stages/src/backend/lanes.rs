//! Row reductions in eight lanes, the one summation order of every row statistic the kernels
//! take (LayerNorm's mean and variance and their backward's two means, the softmax's and the
//! cross-entropy's normaliser, the softmax backward's dot product).
//!
//! Rule: element `j` of a row is added into lane `j mod 8`, each lane starting from −0 and
//! adding its elements in order; the lanes are then combined as
//! `((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))`.
//!
//! Invariant: the order depends on the row's length only, never on the build, the vector width
//! or the device — `kernels/ops.cu` sums the same way, and the CUDA emulation tests compare the
//! bits. Eight independent chains of additions fill one AVX2 vector and hide the latency that a
//! single chain of dependent additions exposed (a row of 128 was 128 additions back to back).

use crate::element::Element;

/// The number of lanes.
pub(crate) const LANES: usize = 8;

/// `Σ f(v_j)` in the lane order.
#[inline(always)]
pub(crate) fn sum_map<E: Element, T: Copy>(v: &[T], f: impl Fn(T) -> E) -> E {
    let mut acc = [E::NEG_ZERO; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += f(*x);
        }
    }
    for (a, x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(*x);
    }
    combine(acc)
}

/// `Σ v_j` in the lane order.
#[inline(always)]
pub(crate) fn sum<E: Element>(v: &[E]) -> E {
    sum_map(v, |x| x)
}

/// `Σ f(a_j, b_j)` over two rows of one length, in the lane order.
#[inline(always)]
pub(crate) fn sum_zip<E: Element>(a: &[E], b: &[E], f: impl Fn(E, E) -> E) -> E {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [E::NEG_ZERO; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += f(*x, *y);
        }
    }
    for ((s, x), y) in acc.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
        *s += f(*x, *y);
    }
    combine(acc)
}

/// The lanes combined pairwise.
#[inline(always)]
fn combine<E: Element>(l: [E; LANES]) -> E {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule written out element by element, the way `ops.cu` writes it.
    fn by_rule(v: &[f32]) -> f32 {
        let mut l = [-0.0f32; LANES];
        for (j, x) in v.iter().enumerate() {
            l[j % LANES] += *x;
        }
        ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
    }

    #[test]
    fn sums_follow_the_rule_for_every_length() {
        // Magnitudes far apart, so that any other order of the additions gives other bits.
        let v: Vec<f32> = (0..203).map(|j| ((j * 37 % 11) as f32 - 5.0) * 10f32.powi(j % 7 - 3)).collect();
        for n in 0..v.len() {
            let row = &v[..n];
            assert_eq!(sum(row).to_bits(), by_rule(row).to_bits(), "length {n}");
            let squares: Vec<f32> = row.iter().map(|x| x * x).collect();
            assert_eq!(sum_map(row, |x: f32| x * x).to_bits(), by_rule(&squares).to_bits(), "length {n}");
            let products: Vec<f32> = row.iter().zip(v.iter().rev()).map(|(a, b)| a * b).collect();
            let rev: Vec<f32> = v.iter().rev().take(n).copied().collect();
            assert_eq!(sum_zip(row, &rev, |a, b| a * b).to_bits(), by_rule(&products).to_bits(), "length {n}");
        }
        // The order differs from left to right: the test would notice a plain loop.
        let row = &v[..203];
        let plain = row.iter().fold(-0.0f32, |s, x| s + x);
        assert_ne!(sum(row).to_bits(), plain.to_bits());
    }

    #[test]
    fn an_empty_row_sums_to_negative_zero_and_zeros_keep_their_sign_rules() {
        assert_eq!(sum::<f32>(&[]).to_bits(), (-0.0f32).to_bits());
        assert_eq!(sum(&[-0.0f32, -0.0]).to_bits(), (-0.0f32).to_bits());
        assert_eq!(sum(&[0.0f32]).to_bits(), 0.0f32.to_bits());
        assert_eq!(sum(&[1.0f64, 2.0, 3.0]), 6.0);
    }
}
