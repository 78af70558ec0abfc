//! Matrix products: through `gemm`, single-threaded, on the host (with `backend/wide.rs`, the only `unsafe` outside the
//! `cuda` module); through cuBLAS for tensors on a GPU.
//!
//! Invariant: the same shapes and transpositions always take the same path through `gemm`
//! (`Parallelism::None`, destination never read, strides fixed by the shapes), so a product is a
//! pure function of its inputs' bits. Callers add a product into an accumulator themselves, in
//! their own fixed order, rather than letting `gemm` accumulate: that keeps the summation order
//! of a gradient independent of which op produced it. Host products run in the tensors' element
//! type (`gemm` in `f32`, or in `f64` for gradient checks); all three tensors of a product share
//! it, or the product is an error.

use gemm::Parallelism;

use crate::element::{Dtype, Element};
use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::tensor::{mixed, same_dtype, Store, Tensor};

/// One row-major product `[m, n] = op(A)·op(B)` with `op(A)` `[m, k]` and `op(B)` `[k, n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of the result.
    pub m: usize,
    /// The inner dimension.
    pub k: usize,
    /// Columns of the result.
    pub n: usize,
    /// Whether `A` is stored transposed (`[k, m]`).
    pub trans_a: bool,
    /// Whether `B` is stored transposed (`[n, k]`).
    pub trans_b: bool,
}

impl GemmShape {
    /// Floating-point operations: `2·m·k·n`.
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }

    /// The shapes `A` and `B` are stored in.
    pub fn operands(&self) -> ([usize; 2], [usize; 2]) {
        let a = if self.trans_a { [self.k, self.m] } else { [self.m, self.k] };
        let b = if self.trans_b { [self.n, self.k] } else { [self.k, self.n] };
        (a, b)
    }

    /// Runs the product on `a` and `b` (stored as [`operands`](GemmShape::operands) says) into
    /// `out` (`[m, n]`), in `f32`: the product alone, for measuring what the stages' products
    /// reach against it.
    pub fn run(&self, out: &mut Tensor, a: &Tensor, b: &Tensor) -> Result<()> {
        let t = |yes: bool| if yes { Trans::Yes } else { Trans::No };
        matmul_into(out, a, t(self.trans_a), b, t(self.trans_b), Precision::F32)
    }
}

/// Whether an operand enters a product as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trans {
    /// As stored.
    No,
    /// Transposed (read through swapped strides, never copied).
    Yes,
}

/// Shape and strides `(rows, cols, row_stride, col_stride)` of `t` as it enters a product.
fn view(t: &Tensor, trans: Trans) -> (usize, usize, isize, isize) {
    let (r, c) = (t.rows(), t.cols());
    match trans {
        Trans::No => (r, c, c as isize, 1),
        Trans::Yes => (c, r, 1, c as isize),
    }
}

/// `out = op(a) · op(b)` in `precision` (see [`Precision`]), overwriting `out` (never reading it:
/// it may hold anything), which must already have the product's shape.
pub(crate) fn matmul_into(
    out: &mut Tensor,
    a: &Tensor,
    ta: Trans,
    b: &Tensor,
    tb: Trans,
    precision: Precision,
) -> Result<()> {
    same_dtype("matrix product", &[out, a, b])?;
    if precision == Precision::F32 || !(out.is_host() && a.is_host() && b.is_host()) {
        return product(out, a, ta, b, tb, precision);
    }
    if out.dtype() == Dtype::F64 {
        return Err(Error::Dtype {
            place: "matrix product".into(),
            reason: format!(
                "{precision} products round to 16 bits, which an f64 gradient check cannot see through; check the layer with f32 products"
            ),
        });
    }
    let (mut ra, mut rb) = (a.try_clone()?, b.try_clone()?);
    precision.round_all(ra.data_mut());
    precision.round_all(rb.data_mut());
    product(out, &ra, ta, &rb, tb, Precision::F32)?;
    precision.round_all(out.data_mut());
    Ok(())
}

/// The product itself: `gemm` on the host (in the tensors' element type), cuBLAS on a GPU (in
/// `precision`).
#[allow(unsafe_code)]
fn product(out: &mut Tensor, a: &Tensor, ta: Trans, b: &Tensor, tb: Trans, precision: Precision) -> Result<()> {
    let (m, k, a_rs, a_cs) = view(a, ta);
    let (k2, n, b_rs, b_cs) = view(b, tb);
    if k != k2 || out.shape() != [m, n] {
        return Err(Error::Shape {
            place: "matrix product".into(),
            reason: format!(
                "op(a) is [{m}, {k}], op(b) is [{k2}, {n}], out is {:?}; need op(a) [m, k], op(b) [k, n], out [m, n]",
                out.shape()
            ),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        return out.fill_zero();
    }
    let (a_shape, b_shape) = (a.shape(), b.shape());
    let (out_dev, a_dev, b_dev) = (out.device(), a.device(), b.device());
    match (out.store_mut(), a.store(), b.store()) {
        (Store::Host(_), Store::Host(_), Store::Host(_)) => {
            host_product::<f32>(out, a, b, (m, n, k), (a_rs, a_cs), (b_rs, b_cs))
        }
        (Store::HostF64(_), Store::HostF64(_), Store::HostF64(_)) => {
            host_product::<f64>(out, a, b, (m, n, k), (a_rs, a_cs), (b_rs, b_cs))
        }
        (Store::Cuda(c), Store::Cuda(x), Store::Cuda(y)) => {
            let shape = crate::cuda::gemm::RowMajor { m, n, k, a: a_shape, ta, b: b_shape, tb };
            crate::cuda::gemm::matmul_into(c, x, y, shape, precision)
        }
        _ => {
            let other = if a_dev != out_dev { a_dev } else { b_dev };
            Err(mixed("matrix product", out_dev, other))
        }
    }
}

/// [`product`] on host tensors of `E` whose shapes it checked: `(m, n, k)` and the operands'
/// `(row, column)` strides.
#[allow(unsafe_code)]
fn host_product<E: Element>(
    out: &mut Tensor,
    a: &Tensor,
    b: &Tensor,
    (m, n, k): (usize, usize, usize),
    (a_rs, a_cs): (isize, isize),
    (b_rs, b_cs): (isize, isize),
) -> Result<()> {
    let dst = out.host_of_mut::<E>().as_mut_ptr();
    let (lhs, rhs) = (a.host_of::<E>().as_ptr(), b.host_of::<E>().as_ptr());
    // SAFETY: `dst` points to m·n writable floats (out's shape was checked above) laid out with
    // row stride n and column stride 1; `lhs` and `rhs` point to k·m and k·n readable floats
    // whose strides come from their own shapes via `view`, so every index gemm forms
    // (row·rs + col·cs for row < rows, col < cols of each operand) is in bounds. `out` is
    // borrowed mutably while `a` and `b` are borrowed shared, so the destination aliases neither
    // input. `read_dst = false` means gemm never reads the destination.
    unsafe {
        gemm_host(m, n, k, (dst, n as isize), (lhs, a_rs, a_cs), (rhs, b_rs, b_cs));
    }
    Ok(())
}

/// `dst = lhs · rhs` for an `[m, k]` and a `[k, n]` operand, each given as (pointer, row stride,
/// column stride), the destination as (pointer, row stride) with column stride 1: the one way
/// this crate calls `gemm` — single-threaded, overwriting the destination without reading it.
///
/// # Safety
/// Every element address the shapes and strides form must be in bounds of its buffer, the
/// destination's elements must be distinct and must not alias either operand.
#[allow(unsafe_code)]
unsafe fn gemm_host<E: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut E, isize),
    lhs: (*const E, isize, isize),
    rhs: (*const E, isize, isize),
) {
    // SAFETY: the caller's contract is gemm's (bounds, no aliasing); `read_dst = false`.
    unsafe {
        gemm::gemm::<E>(
            m,
            n,
            k,
            dst.0,
            1,
            dst.1,
            false,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            E::ZERO,
            E::ONE,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// A matrix inside a host buffer: element `(r, c)` at `offset + r·row_stride + c·col_stride`
/// (a head of a sequence inside a `[rows, heads·d]` activation, or its transpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    /// Index of element `(0, 0)`.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl Block {
    /// The `rows × cols` block at `offset` of a row-major buffer whose rows are `row_stride` long.
    pub fn at(offset: usize, rows: usize, cols: usize, row_stride: usize) -> Block {
        Block { offset, rows, cols, row_stride, col_stride: 1 }
    }

    /// The same elements read as the transpose.
    pub fn t(self) -> Block {
        Block { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Whether every element lies inside a buffer of `len` floats.
    fn fits(&self, len: usize) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return self.offset <= len;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.cols - 1).checked_mul(self.col_stride))
            .and_then(|(r, c)| r.checked_add(c)?.checked_add(self.offset));
        last.is_some_and(|last| last < len)
    }
}

/// `out[o] = a[ab] · b[bb]` on host buffers of `E`, overwriting the block `o` of `out` (never
/// reading it): the products inside attention, one head of one sequence at a time, read in place
/// through strides. Deterministic like [`matmul_into`]: the same shapes and strides take the same
/// path. The output block must be row-major without overlap (`col_stride` 1, `row_stride` at
/// least `cols`).
#[allow(unsafe_code)]
fn block_product<E: Element>(out: &mut [E], o: Block, a: &[E], ab: Block, b: &[E], bb: Block) -> Result<()> {
    let ok = ab.cols == bb.rows
        && o.rows == ab.rows
        && o.cols == bb.cols
        && o.col_stride == 1
        && o.row_stride >= o.cols
        && o.fits(out.len())
        && ab.fits(a.len())
        && bb.fits(b.len());
    if !ok {
        return Err(Error::Shape {
            place: "block product".into(),
            reason: format!(
                "a {ab:?} of {} floats, b {bb:?} of {}, out {o:?} of {}: inner sizes must agree and every block lie in its buffer",
                a.len(),
                b.len(),
                out.len()
            ),
        });
    }
    let (m, n, k) = (o.rows, o.cols, ab.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        for r in 0..m {
            out[o.offset + r * o.row_stride..][..n].fill(E::ZERO);
        }
        return Ok(());
    }
    let stride = |s: usize| s as isize;
    // SAFETY: `fits` checked that every element each block addresses (offset + r·rs + c·cs for
    // r < rows, c < cols) lies inside its buffer, so the pointers at the blocks' offsets and
    // every index gemm forms from these shapes and strides are in bounds. The output block has
    // column stride 1 and a row stride of at least its width, so no two of its elements share an
    // address; `out` is borrowed mutably and `a`, `b` shared, so it aliases neither input.
    // `read_dst = false`: gemm never reads the destination.
    unsafe {
        gemm_host(
            m,
            n,
            k,
            (out.as_mut_ptr().add(o.offset), stride(o.row_stride)),
            (a.as_ptr().add(ab.offset), stride(ab.row_stride), stride(ab.col_stride)),
            (b.as_ptr().add(bb.offset), stride(bb.row_stride), stride(bb.col_stride)),
        );
    }
    Ok(())
}

/// `count` equal blocks of one buffer, block `b` being `first` moved by `b·stride` elements:
/// one head of every sequence of an activation (or its transpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Block 0.
    pub first: Block,
    /// Blocks.
    pub count: usize,
    /// Distance between consecutive blocks.
    pub stride: usize,
}

impl Batch {
    /// Block `b`.
    pub fn block(&self, b: usize) -> Block {
        Block { offset: self.first.offset + b * self.stride, ..self.first }
    }

    /// The transpose of every block.
    pub fn t(self) -> Batch {
        Batch { first: self.first.t(), ..self }
    }

    /// Whether every block lies inside a buffer of `len` floats (the last is the farthest).
    fn fits(&self, len: usize) -> bool {
        let Some(last) = self.count.checked_sub(1) else { return true };
        last.checked_mul(self.stride)
            .and_then(|d| d.checked_add(self.first.offset))
            .is_some_and(|offset| Block { offset, ..self.first }.fits(len))
    }

    /// Whether the blocks, as outputs, are row-major and never share an element.
    fn disjoint_rows(&self) -> bool {
        let b = self.first;
        let span = b.rows.saturating_sub(1) * b.row_stride + b.cols;
        b.col_stride == 1 && b.row_stride >= b.cols && (self.count <= 1 || self.stride >= span)
    }
}

/// `out[o_b] = a[a_b] · b[b_b]` for every block `b` of three batches, in the tensors' element
/// type (`f32` on a GPU), overwriting the
/// output blocks (never reading them): the products inside attention, one head of every
/// sequence at once. On the host, [`block_product`] block by block; on a GPU, one cuBLAS
/// strided-batched product. Checked for both: equal counts, agreeing sizes, every block inside
/// its tensor, output blocks row-major and disjoint.
pub(crate) fn batched_product(out: &mut Tensor, o: Batch, a: &Tensor, ab: Batch, b: &Tensor, bb: Batch) -> Result<()> {
    let ok = o.count == ab.count
        && o.count == bb.count
        && ab.first.cols == bb.first.rows
        && o.first.rows == ab.first.rows
        && o.first.cols == bb.first.cols
        && o.disjoint_rows()
        && o.fits(out.len())
        && ab.fits(a.len())
        && bb.fits(b.len());
    if !ok {
        return Err(Error::Shape {
            place: "batched product".into(),
            reason: format!(
                "a {ab:?} of {} floats, b {bb:?} of {}, out {o:?} of {}: counts and inner sizes must agree, every block lie in its tensor and the output blocks be row-major and disjoint",
                a.len(),
                b.len(),
                out.len()
            ),
        });
    }
    same_dtype("batched product", &[out, a, b])?;
    let (out_dev, a_dev, b_dev) = (out.device(), a.device(), b.device());
    match (out.store_mut(), a.store(), b.store()) {
        (Store::Host(_), Store::Host(_), Store::Host(_)) => host_batched::<f32>(out, o, a, ab, b, bb),
        (Store::HostF64(_), Store::HostF64(_), Store::HostF64(_)) => host_batched::<f64>(out, o, a, ab, b, bb),
        (Store::Cuda(c), Store::Cuda(x), Store::Cuda(y)) => crate::cuda::gemm::batched(c, o, x, ab, y, bb),
        _ => {
            let other = if a_dev != out_dev { a_dev } else { b_dev };
            Err(mixed("batched product", out_dev, other))
        }
    }
}

/// [`batched_product`] on host tensors of `E`, block by block.
fn host_batched<E: Element>(out: &mut Tensor, o: Batch, a: &Tensor, ab: Batch, b: &Tensor, bb: Batch) -> Result<()> {
    let (dst, lhs, rhs) = (out.host_of_mut::<E>(), a.host_of::<E>(), b.host_of::<E>());
    for k in 0..o.count {
        block_product(dst, o.block(k), lhs, ab.block(k), rhs, bb.block(k))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &Tensor, ta: Trans, b: &Tensor, tb: Trans) -> Vec<f64> {
        let at = |i: usize, j: usize| if ta == Trans::No { a.get(i, j) } else { a.get(j, i) }.unwrap() as f64;
        let bt = |i: usize, j: usize| if tb == Trans::No { b.get(i, j) } else { b.get(j, i) }.unwrap() as f64;
        let (m, k, _, _) = view(a, ta);
        let n = view(b, tb).1;
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            }
        }
        out
    }

    fn filled(r: usize, c: usize, salt: usize) -> Tensor {
        Tensor::from_fn(r, c, |i, j| (((i * 31 + j * 17 + salt) % 23) as f32 - 11.0) / 7.0)
    }

    #[test]
    fn products_match_a_naive_sum_in_every_transposition() {
        let (m, k, n) = (37, 53, 29);
        for (ta, tb) in [(Trans::No, Trans::No), (Trans::Yes, Trans::No), (Trans::No, Trans::Yes)] {
            let a = if ta == Trans::No { filled(m, k, 1) } else { filled(k, m, 1) };
            let b = if tb == Trans::No { filled(k, n, 2) } else { filled(n, k, 2) };
            let mut out = Tensor::full(m, n, f32::NAN);
            matmul_into(&mut out, &a, ta, &b, tb, Precision::F32).unwrap();
            for (x, y) in out.data().iter().zip(naive(&a, ta, &b, tb)) {
                assert!((*x as f64 - y).abs() < 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn same_shapes_give_the_same_bits() {
        let (a, b) = (filled(64, 300, 3), filled(300, 96, 4));
        let first = a.matmul(&b).unwrap();
        for _ in 0..3 {
            let mut out = Tensor::full(64, 96, 123.0);
            matmul_into(&mut out, &a.clone(), Trans::No, &b.clone(), Trans::No, Precision::F32).unwrap();
            assert!(out.bit_eq(&first));
        }
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let mut out = Tensor::zeros(2, 2);
        let e = matmul_into(&mut out, &filled(2, 3, 0), Trans::No, &filled(4, 2, 0), Trans::No, Precision::F32)
            .unwrap_err();
        assert!(e.to_string().contains("op(a) is [2, 3]"), "{e}");
        let mut empty = Tensor::full(2, 2, 5.0);
        matmul_into(&mut empty, &Tensor::zeros(2, 0), Trans::No, &Tensor::zeros(0, 2), Trans::No, Precision::F32)
            .unwrap();
        assert_eq!(empty.data(), &[0.0; 4]);
    }

    #[test]
    fn block_products_read_heads_in_place() {
        // A [6, 8] buffer holding two sequences of 3 rows and two heads of width 4: head 1 of
        // sequence 1 times the transpose of head 0 of sequence 0, against copies.
        let buf = filled(6, 8, 5);
        let q = Block::at(3 * 8 + 4, 3, 4, 8);
        let k = Block::at(0, 3, 4, 8);
        let mut out = vec![f32::NAN; 2 * 3 * 5];
        let o = Block::at(5 + 1, 3, 3, 5);
        block_product(&mut out, o, buf.data(), q, buf.data(), k.t()).unwrap();
        let qc = Tensor::from_fn(3, 4, |r, c| buf.get(3 + r, 4 + c).unwrap());
        let kc = Tensor::from_fn(3, 4, |r, c| buf.get(r, c).unwrap());
        let want = naive(&qc, Trans::No, &kc, Trans::Yes);
        for r in 0..3 {
            for c in 0..3 {
                let got = out[6 + r * 5 + c] as f64;
                assert!((got - want[r * 3 + c]).abs() < 1e-5, "{got} vs {}", want[r * 3 + c]);
            }
        }
        assert!(out[5].is_nan() && out[9].is_nan(), "only the block is written");
        let far = Block::at(40, 3, 4, 8);
        let e = block_product(&mut out, o, buf.data(), far, buf.data(), k.t()).unwrap_err();
        assert!(e.to_string().contains("lie in its buffer"), "{e}");
    }

    #[test]
    fn batched_products_check_counts_bounds_overlap_and_overflow() {
        let a = filled(6, 8, 1);
        let mut out = Tensor::full(6, 6, f32::NAN);
        let q = Batch { first: Block::at(0, 3, 4, 8), count: 2, stride: 3 * 8 };
        let o = Batch { first: Block::at(0, 3, 3, 6), count: 2, stride: 3 * 6 };
        batched_product(&mut out, o, &a, q, &a, q.t()).unwrap();
        // Each block is the product of its own pair: sequence 1's block against a copy.
        let mut one = vec![f32::NAN; 9];
        block_product(&mut one, Block::at(0, 3, 3, 3), a.data(), q.block(1), a.data(), q.block(1).t()).unwrap();
        assert_eq!(&out.data()[18..21], &one[..3]);
        let e = |o: Batch, ab: Batch, bb: Batch| {
            let mut out = Tensor::zeros(6, 6);
            batched_product(&mut out, o, &a, ab, &a, bb).unwrap_err().to_string()
        };
        assert!(e(Batch { count: 3, ..o }, q, q.t()).contains("counts and inner sizes must agree"), "a count mismatch");
        assert!(e(Batch { count: 3, ..o }, Batch { count: 3, ..q }, Batch { count: 3, ..q }.t())
            .contains("lie in its tensor"));
        assert!(e(Batch { stride: 2, ..o }, q, q.t()).contains("disjoint"), "overlapping output blocks");
        let huge = Batch { stride: usize::MAX / 2, ..q };
        assert!(e(o, huge, huge.t()).contains("lie in its tensor"), "an overflowing stride is refused, not a panic");
    }
}
