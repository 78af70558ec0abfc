//! Row-major products through column-major cuBLAS.
//!
//! A row-major `[r, c]` matrix is, read column-major, its transpose `[c, r]` with leading
//! dimension `c`. So the row-major product `C = op(A)·op(B)` (`C` is `[m, n]`) is computed as the
//! column-major product `Cᵀ = op(B)ᵀ·op(A)ᵀ`: cuBLAS gets `B`'s buffer first and `A`'s second,
//! with the transpose flags kept (`op(B)ᵀ` of the column-major view of `B` is `B` itself
//! untransposed), the sizes `(n, m, k)`, and each operand's row length as its leading dimension.
//! [`col_major`] is that mapping as a pure function, tested on the CPU against a column-major
//! reference product; [`matmul_into`] hands it to cuBLAS — `sgemm` in `f32`, `GemmEx` with
//! 16-bit operands and result and `f32` compute in bf16 or f16 (operands converted by the
//! `k_to_*` kernels into temporaries freed when the product is done, the result converted back
//! by `k_from_*`).
//!
//! Reproducibility: cuBLAS gives the same bits for the same call on GPUs of one architecture and
//! SM count, but with several streams active at once it may pick other internal implementations
//! unless each stream has its own handle (cuBLAS documentation, "Results reproducibility"). Every
//! lane here is one stream with one handle of its own, so a pipelined step can match the
//! sequential one on the same GPU bit for bit.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaSlice, DeviceRepr};
use half::{bf16, f16};

use super::runtime::{alloc_uninit, current, device_error, launch, DeviceBuffer, Gpu, KArg};
use crate::error::{Error, Result};
use crate::matmul::{Batch, Block, GemmShape, Trans};
use crate::precision::{Format, Precision};

/// A row-major product `[m, n] = op(A)·op(B)`: the stored shapes and transpositions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowMajor {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `A` as stored, `[rows, cols]`.
    pub a: [usize; 2],
    pub ta: Trans,
    /// `B` as stored.
    pub b: [usize; 2],
    pub tb: Trans,
}

/// The column-major call that computes a [`RowMajor`] product: `C' = op(X)·op(Y)` with `X`
/// the *second* row-major operand's buffer and `Y` the first's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ColMajor {
    /// Whether cuBLAS transposes its first operand (`B`'s buffer).
    pub trans_x: bool,
    /// Whether cuBLAS transposes its second operand (`A`'s buffer).
    pub trans_y: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ldx: usize,
    pub ldy: usize,
    pub ldc: usize,
}

/// The mapping described in the module comment.
pub(crate) fn col_major(p: RowMajor) -> ColMajor {
    ColMajor {
        trans_x: p.tb == Trans::Yes,
        trans_y: p.ta == Trans::Yes,
        m: p.n,
        n: p.m,
        k: p.k,
        ldx: p.b[1].max(1),
        ldy: p.a[1].max(1),
        ldc: p.n.max(1),
    }
}

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

fn int(ordinal: usize, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| device_error(ordinal, "matrix product", format!("size {v} exceeds cuBLAS's 32-bit sizes")))
}

/// `out = op(a)·op(b)` in `precision` on the current lane's cuBLAS handle, overwriting `out`
/// (`beta = 0`). Shapes were checked by the caller (`matmul_into`), which also handles empty
/// products.
pub(crate) fn matmul_into(
    out: &mut DeviceBuffer,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    p: RowMajor,
    precision: Precision,
) -> Result<()> {
    let ordinal = one_gpu("matrix product", out, a, b)?;
    let sizes = [(a.len(), p.a), (b.len(), p.b), (out.len(), [p.m, p.n])];
    if let Some((len, shape)) = sizes.iter().find(|(len, s)| *len != s[0] * s[1]) {
        return Err(Error::Shape {
            place: "matrix product on cuda".into(),
            reason: format!("a buffer of {len} values given for a {shape:?} matrix"),
        });
    }
    let c = col_major(p);
    match precision.products() {
        None => {}
        Some(Format::Bf16) => {
            let cfg = config(c, ordinal, bf16::ONE, bf16::ZERO)?;
            return half_product::<bf16>(out, a, b, cfg, ["k_to_bf16", "k_from_bf16"]);
        }
        Some(Format::F16) => {
            let cfg = config(c, ordinal, f16::ONE, f16::ZERO)?;
            return half_product::<f16>(out, a, b, cfg, ["k_to_f16", "k_from_f16"]);
        }
    }
    let cfg = config(c, ordinal, 1.0f32, 0.0f32)?;
    let lane = current(&out.gpu)?;
    // SAFETY: `b` holds k·n (or n·k) values and `a` m·k (or k·m), as checked against their
    // stored shapes above; `col_major` gives each its row length as leading dimension, so every
    // element cuBLAS reads lies inside its buffer, and `out` holds exactly m·n values written
    // with leading dimension n. The three buffers are distinct allocations (`out` is borrowed
    // mutably while `a` and `b` are shared).
    #[allow(unsafe_code)]
    let done = unsafe { lane.blas.gemm(cfg, &b.slice, &a.slice, &mut out.slice) };
    done.map_err(|e| device_error(ordinal, "cuBLAS sgemm", format!("{e:?}")))
}

/// A batch of row-major block products as one column-major strided-batched call: the call
/// for block 0 (as [`col_major`] maps a product, with each block's leading dimension), where
/// each operand starts, and how far apart its blocks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Strided {
    pub call: ColMajor,
    pub count: usize,
    /// Offsets of block 0 of `X` (the second row-major operand), `Y` (the first) and `C`.
    pub offsets: [usize; 3],
    /// Distances between the blocks of `X`, `Y` and `C`.
    pub strides: [usize; 3],
}

/// How cuBLAS reads `b`: `(transposed, leading dimension)`. A row-major block (unit column
/// stride) is read untransposed with its row stride, a transposed view (unit row stride)
/// transposed with its column stride; `None` for a block cuBLAS cannot address (no unit
/// stride, or rows that overlap).
fn layout(b: Block) -> Option<(bool, usize)> {
    if b.col_stride == 1 && b.row_stride >= b.cols.max(1) {
        Some((false, b.row_stride))
    } else if b.row_stride == 1 && b.col_stride >= b.rows.max(1) {
        Some((true, b.col_stride))
    } else {
        None
    }
}

/// The strided-batched call for `out[o] = a[ab]·b[bb]` (shapes checked by the caller), or
/// `None` when a block has no layout cuBLAS takes.
pub(crate) fn strided(o: Batch, ab: Batch, bb: Batch) -> Option<Strided> {
    let (trans_x, ldx) = layout(bb.first)?;
    let (trans_y, ldy) = layout(ab.first)?;
    let (false, ldc) = layout(o.first)? else { return None };
    let call = ColMajor { trans_x, trans_y, m: o.first.cols, n: o.first.rows, k: ab.first.cols, ldx, ldy, ldc };
    Some(Strided {
        call,
        count: o.count,
        offsets: [bb.first.offset, ab.first.offset, o.first.offset],
        strides: [bb.stride, ab.stride, o.stride],
    })
}

/// `out[o_b] = a[a_b]·b[b_b]` for every block, in `f32`, as one cuBLAS strided-batched product
/// on the current lane's handle (`matmul::batched_product`, which checked counts, sizes and that
/// every block lies in its buffer).
pub(crate) fn batched(
    out: &mut DeviceBuffer,
    o: Batch,
    a: &DeviceBuffer,
    ab: Batch,
    b: &DeviceBuffer,
    bb: Batch,
) -> Result<()> {
    let ordinal = one_gpu("batched product", out, a, b)?;
    let s = strided(o, ab, bb).ok_or_else(|| Error::Shape {
        place: "batched product on cuda".into(),
        reason: format!("{o:?} = {ab:?} · {bb:?}: cuBLAS needs every block to have a unit stride"),
    })?;
    if s.count == 0 || s.call.m == 0 || s.call.n == 0 {
        return Ok(());
    }
    let long = |v: usize| {
        i64::try_from(v).map_err(|_| device_error(ordinal, "batched product", format!("stride {v} exceeds 2^63")))
    };
    let cfg = StridedBatchedConfig {
        gemm: config(s.call, ordinal, 1.0f32, 0.0f32)?,
        batch_size: int(ordinal, s.count)?,
        stride_a: long(s.strides[0])?,
        stride_b: long(s.strides[1])?,
        stride_c: long(s.strides[2])?,
    };
    let lane = current(&out.gpu)?;
    let [ox, oy, oc] = s.offsets;
    let (x, y) = (b.slice.slice(ox..), a.slice.slice(oy..));
    let mut c = out.slice.slice_mut(oc..);
    // SAFETY: `batched_product` checked that every element of every block — block `b` at its
    // first block's offset plus `b·stride`, then row·row_stride + col·col_stride — lies inside
    // its buffer; the views start at block 0's offsets and `strided` gives cuBLAS exactly those
    // strides and leading dimensions, so it reads and writes only those elements. The output
    // blocks are row-major and disjoint (checked), and `out` is borrowed mutably while `a` and
    // `b` are shared, so the output aliases neither input.
    #[allow(unsafe_code)]
    let done = unsafe { lane.blas.gemm_strided_batched(cfg, &x, &y, &mut c) };
    done.map_err(|e| device_error(ordinal, "cuBLAS strided-batched sgemm", format!("{e:?}")))
}

/// cuBLAS's arguments for the column-major call `c`, with `C = alpha·op(X)·op(Y) + beta·C`.
fn config<T>(c: ColMajor, ordinal: usize, alpha: T, beta: T) -> Result<GemmConfig<T>> {
    Ok(GemmConfig {
        transa: op(c.trans_x),
        transb: op(c.trans_y),
        m: int(ordinal, c.m)?,
        n: int(ordinal, c.n)?,
        k: int(ordinal, c.k)?,
        alpha,
        lda: int(ordinal, c.ldx)?,
        ldb: int(ordinal, c.ldy)?,
        beta,
        ldc: int(ordinal, c.ldc)?,
    })
}

/// A 16-bit format the conversion kernels and cuBLAS both take.
trait Half: DeviceRepr + Sized {
    fn arg(buf: &CudaSlice<Self>) -> KArg<'_>;
    fn arg_mut(buf: &mut CudaSlice<Self>) -> KArg<'_>;
}

impl Half for bf16 {
    fn arg(buf: &CudaSlice<bf16>) -> KArg<'_> {
        KArg::InBf16(buf)
    }
    fn arg_mut(buf: &mut CudaSlice<bf16>) -> KArg<'_> {
        KArg::OutBf16(buf)
    }
}

impl Half for f16 {
    fn arg(buf: &CudaSlice<f16>) -> KArg<'_> {
        KArg::InF16(buf)
    }
    fn arg_mut(buf: &mut CudaSlice<f16>) -> KArg<'_> {
        KArg::OutF16(buf)
    }
}

/// The product with 16-bit operands and result: convert, multiply, convert back.
fn half_product<T: Half>(
    out: &mut DeviceBuffer,
    a: &DeviceBuffer,
    b: &DeviceBuffer,
    cfg: GemmConfig<T>,
    [to, from]: [&'static str; 2],
) -> Result<()>
where
    cudarc::cublas::CudaBlas: Gemm<T>,
{
    let gpu = out.gpu.clone();
    let mut ha = alloc_uninit::<T>(&gpu, a.len())?;
    let mut hb = alloc_uninit::<T>(&gpu, b.len())?;
    let mut hc = alloc_uninit::<T>(&gpu, out.len())?;
    let n32 = |n: usize| {
        u32::try_from(n)
            .map_err(|_| device_error(gpu.ordinal, "format conversion", format!("{n} values exceed 2^32 − 1")))
    };
    launch(&gpu, to, a.len(), &mut [KArg::In(a), T::arg_mut(&mut ha), KArg::U32(n32(a.len())?)])?;
    launch(&gpu, to, b.len(), &mut [KArg::In(b), T::arg_mut(&mut hb), KArg::U32(n32(b.len())?)])?;
    let lane = current(&gpu)?;
    // SAFETY: as for the f32 product: `hb`, `ha` and `hc` hold exactly as many values as `b`, `a`
    // and `out`, whose lengths were checked against the shapes the configuration describes.
    #[allow(unsafe_code)]
    let done = unsafe { lane.blas.gemm(cfg, &hb, &ha, &mut hc) };
    done.map_err(|e| device_error(gpu.ordinal, "cuBLAS GemmEx", format!("{e:?}")))?;
    let n = out.len();
    launch(&gpu, from, n, &mut [T::arg(&hc), KArg::Out(out), KArg::U32(n32(n)?)])
}

/// Milliseconds of GPU time for one pass over `shapes` through cuBLAS alone (operands already on
/// the GPU and, in bf16 or f16, already in that format), the median of `reps` passes after two
/// warm-up passes, timed with CUDA events on a lane of its own.
pub fn cublas_ms(ordinal: usize, shapes: &[GemmShape], precision: Precision, reps: usize) -> Result<f64> {
    let lane = super::Lane::new(ordinal)?;
    let _scope = lane.enter();
    let gpu = super::runtime::gpu(ordinal)?;
    let problems: Vec<RowMajor> = shapes
        .iter()
        .map(|s| RowMajor {
            m: s.m,
            n: s.n,
            k: s.k,
            a: if s.trans_a { [s.k, s.m] } else { [s.m, s.k] },
            ta: if s.trans_a { Trans::Yes } else { Trans::No },
            b: if s.trans_b { [s.n, s.k] } else { [s.k, s.n] },
            tb: if s.trans_b { Trans::Yes } else { Trans::No },
        })
        .collect();
    match precision.products() {
        None => {
            let filled = |n: usize| {
                DeviceBuffer::upload(ordinal, &(0..n).map(|i| ((i % 7) as f32 - 3.0) / 8.0).collect::<Vec<_>>())
            };
            let mut bufs = Vec::new();
            for p in &problems {
                bufs.push((filled(p.m * p.k)?, filled(p.k * p.n)?, filled(p.m * p.n)?));
            }
            median_pass(&lane, reps, || {
                for (p, (a, b, c)) in problems.iter().zip(&mut bufs) {
                    matmul_into(c, a, b, *p, Precision::F32)?;
                }
                Ok(())
            })
        }
        Some(Format::Bf16) => half_passes::<bf16>(&lane, &gpu, &problems, bf16::ONE, bf16::ZERO, reps),
        Some(Format::F16) => half_passes::<f16>(&lane, &gpu, &problems, f16::ONE, f16::ZERO, reps),
    }
}

/// `cublas_ms` for a 16-bit format: zero-filled operands (contents do not change the time).
fn half_passes<T>(
    lane: &super::Lane,
    gpu: &std::sync::Arc<Gpu>,
    problems: &[RowMajor],
    one: T,
    zero: T,
    reps: usize,
) -> Result<f64>
where
    T: Half + cudarc::driver::ValidAsZeroBits + Copy,
    cudarc::cublas::CudaBlas: Gemm<T>,
{
    let zeros =
        |n: usize| lane.stream.alloc_zeros::<T>(n.max(1)).map_err(|e| device_error(gpu.ordinal, "allocating", e));
    let mut bufs = Vec::new();
    for p in problems {
        bufs.push((
            config(col_major(*p), gpu.ordinal, one, zero)?,
            zeros(p.m * p.k)?,
            zeros(p.k * p.n)?,
            zeros(p.m * p.n)?,
        ));
    }
    median_pass(lane, reps, || {
        for (cfg, a, b, c) in &mut bufs {
            // SAFETY: each buffer has exactly the length its shape in `cfg` describes.
            #[allow(unsafe_code)]
            let done = unsafe { lane.blas.gemm(*cfg, &*b, &*a, c) };
            done.map_err(|e| device_error(gpu.ordinal, "cuBLAS GemmEx", format!("{e:?}")))?;
        }
        Ok(())
    })
}

/// The median GPU time of `reps` runs of `pass` (after two warm-up runs).
fn median_pass(lane: &super::Lane, reps: usize, mut pass: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::new();
    for run in 0..reps.max(1) + 2 {
        let start = lane.mark()?;
        pass()?;
        let end = lane.mark()?;
        if run >= 2 {
            times.push(end.ms_since(&start)?);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The GPU of a product's three buffers; an error naming two of them if they differ.
fn one_gpu(place: &str, out: &DeviceBuffer, a: &DeviceBuffer, b: &DeviceBuffer) -> Result<usize> {
    let ordinal = out.ordinal();
    match [a.ordinal(), b.ordinal()].into_iter().find(|o| *o != ordinal) {
        Some(other) => Err(crate::tensor::mixed(place, out_dev(ordinal), out_dev(other))),
        None => Ok(ordinal),
    }
}

fn out_dev(ordinal: usize) -> crate::Device {
    crate::Device::Cuda(ordinal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    /// cuBLAS's `sgemm` semantics on column-major buffers, in `f64`:
    /// `C[i + j·ldc] = Σ_l op(X)[i, l] · op(Y)[l, j]`.
    fn sgemm_reference(c: ColMajor, x: &[f32], y: &[f32]) -> Vec<f64> {
        let xs = |i: usize, l: usize| if c.trans_x { x[l + i * c.ldx] } else { x[i + l * c.ldx] } as f64;
        let ys = |l: usize, j: usize| if c.trans_y { y[j + l * c.ldy] } else { y[l + j * c.ldy] } as f64;
        let mut out = vec![f64::NAN; c.ldc * c.n];
        for i in 0..c.m {
            for j in 0..c.n {
                out[i + j * c.ldc] = (0..c.k).map(|l| xs(i, l) * ys(l, j)).sum();
            }
        }
        out
    }

    fn filled(r: usize, c: usize, salt: usize) -> Tensor {
        Tensor::from_fn(r, c, |i, j| (((i * 13 + j * 7 + salt) % 19) as f32 - 9.0) / 5.0)
    }

    /// The mapped column-major call on the row-major buffers gives the row-major product, in
    /// every transposition the stages use and one they do not, on odd shapes.
    #[test]
    fn the_column_major_call_computes_the_row_major_product() {
        for (m, k, n) in [(37, 53, 29), (1, 5, 7), (8, 1, 3), (4, 6, 1)] {
            for ta in [Trans::No, Trans::Yes] {
                for tb in [Trans::No, Trans::Yes] {
                    let a = if ta == Trans::No { filled(m, k, 1) } else { filled(k, m, 1) };
                    let b = if tb == Trans::No { filled(k, n, 2) } else { filled(n, k, 2) };
                    let p = RowMajor { m, n, k, a: a.shape(), ta, b: b.shape(), tb };
                    let c = col_major(p);
                    let got = sgemm_reference(c, b.data(), a.data());
                    let mut want = Tensor::zeros(m, n);
                    crate::matmul::matmul_into(&mut want, &a, ta, &b, tb, crate::Precision::F32).unwrap();
                    assert_eq!(got.len(), m * n, "C has exactly m·n values, row after row");
                    for (g, w) in got.iter().zip(want.data()) {
                        assert!(
                            (g - *w as f64).abs() < 1e-4 * (1.0 + g.abs()),
                            "{m}x{k}x{n} {ta:?} {tb:?}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// The strided-batched call on the buffers gives, block by block, the host's batched
    /// product: attention's four shapes (`QKᵀ`, `P·V`, `Pᵀ·dO`, `dS·K`) over two sequences of a
    /// `[6, 2·2]`-head activation.
    #[test]
    fn the_strided_call_computes_each_block_product() {
        use crate::matmul::batched_product;
        let (t, d, heads) = (3, 2, 2);
        let (w, pw) = (heads * d, heads * t);
        let qkv = filled(2 * t, 3 * w, 3);
        let p = filled(2 * t, pw, 4);
        let seqs = |first: Block, stride: usize| Batch { first, count: 2, stride };
        for h in 0..heads {
            let q = seqs(Block::at(h * d, t, d, 3 * w), t * 3 * w);
            let k = seqs(Block::at(w + h * d, t, d, 3 * w), t * 3 * w);
            let pb = seqs(Block::at(h * t, t, t, pw), t * pw);
            let ob = seqs(Block::at(h * d, t, d, w), t * w);
            type Case<'a> = (Batch, &'a Tensor, Batch, &'a Tensor, Batch, [usize; 2]);
            let cases: [Case; 4] = [
                (pb, &qkv, q, &qkv, k.t(), [2 * t, pw]),
                (ob, &p, pb, &qkv, k, [2 * t, w]),
                (ob, &p, pb.t(), &qkv, q, [2 * t, w]),
                (q, &p, pb, &qkv, k, [2 * t, 3 * w]),
            ];
            for (o, a, ab, b, bb, shape) in cases {
                let mut want = Tensor::full(shape[0], shape[1], f32::NAN);
                batched_product(&mut want, o, a, ab, b, bb).unwrap();
                let s = strided(o, ab, bb).unwrap();
                for blk in 0..s.count {
                    let at = |i: usize| s.offsets[i] + blk * s.strides[i];
                    let got = sgemm_reference(s.call, &b.data()[at(0)..], &a.data()[at(1)..]);
                    for r in 0..o.first.rows {
                        for c in 0..o.first.cols {
                            let (g, wv) = (got[c + r * s.call.ldc], want.data()[at(2) + r * o.first.row_stride + c]);
                            assert!(
                                (g - wv as f64).abs() < 1e-5 * (1.0 + g.abs()),
                                "block {blk} ({r}, {c}): {g} vs {wv}"
                            );
                        }
                    }
                }
            }
        }
        let skewed =
            Batch { first: Block { offset: 0, rows: 2, cols: 2, row_stride: 3, col_stride: 2 }, count: 1, stride: 0 };
        let plain = Batch { first: Block::at(0, 2, 2, 2), count: 1, stride: 0 };
        assert_eq!(strided(plain, skewed, plain), None, "no unit stride: no cuBLAS layout");
        assert_eq!(strided(plain.t(), plain, plain), None, "a transposed output is refused");
    }

    #[test]
    fn leading_dimensions_are_row_lengths() {
        let p = RowMajor { m: 32, n: 256, k: 64, a: [64, 32], ta: Trans::Yes, b: [32, 256], tb: Trans::No };
        assert_eq!(
            col_major(p),
            ColMajor { trans_x: false, trans_y: true, m: 256, n: 32, k: 64, ldx: 256, ldy: 32, ldc: 256 }
        );
    }
}
