//! `Tensor`: a row-major 2-D `f32` matrix `[rows, cols]`, all an MLP needs.
//!
//! Invariant: `data.len() == rows * cols`, always. A tensor's buffer comes from and returns to
//! the per-thread [`pool`](crate::pool), so the shapes a training step repeats cost no fresh
//! allocation. Every operation here runs in a fixed order, element by element or through the
//! single-threaded `gemm` wrapper in [`matmul`](crate::matmul), so the same inputs always give
//! the same bits.

use std::fmt;

use crate::error::{Error, Result};
use crate::matmul::{matmul_into, Trans};
use crate::pool;

/// A row-major `[rows, cols]` matrix of `f32`.
pub struct Tensor {
    rows: usize,
    cols: usize,
    /// `rows * cols` values, row after row.
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor from its values, row after row; `data.len()` must be `rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Tensor> {
        if data.len() != rows * cols {
            return Err(Error::Shape {
                place: "Tensor::new".into(),
                reason: format!("{} values given for a [{rows}, {cols}] tensor ({} needed)", data.len(), rows * cols),
            });
        }
        Ok(Tensor { rows, cols, data })
    }

    /// A `[rows, cols]` tensor of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Tensor {
        Tensor::full(rows, cols, 0.0)
    }

    /// A `[rows, cols]` tensor with every element `value`.
    pub fn full(rows: usize, cols: usize, value: f32) -> Tensor {
        let mut t = Tensor::scratch(rows, cols);
        t.data.fill(value);
        t
    }

    /// A `[1, 1]` tensor holding `value` (how a stage returns a loss).
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(1, 1, value)
    }

    /// A tensor whose element `(r, c)` is `f(r, c)`, filled row after row.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f32) -> Tensor {
        let mut t = Tensor::scratch(rows, cols);
        for (k, x) in t.data.iter_mut().enumerate() {
            *x = f(k / cols.max(1), k % cols.max(1));
        }
        t
    }

    /// A `[rows, cols]` tensor with arbitrary contents, for outputs the caller overwrites whole.
    pub(crate) fn scratch(rows: usize, cols: usize) -> Tensor {
        Tensor { rows, cols, data: pool::take(rows * cols) }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes of the values (4 per element): what holding this tensor costs.
    pub fn bytes(&self) -> u64 {
        (self.data.len() * std::mem::size_of::<f32>()) as u64
    }

    /// The values, row after row.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, row after row, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Element `(r, c)`; `None` outside the shape.
    pub fn get(&self, r: usize, c: usize) -> Option<f32> {
        (r < self.rows && c < self.cols).then(|| self.data[r * self.cols + c])
    }

    /// The values as a `Vec`, row after row.
    pub fn to_vec(&self) -> Vec<f32> {
        self.data.clone()
    }

    /// Whether both tensors have the same shape and bit-identical values (`-0.0 ≠ 0.0`, and a NaN
    /// equals the same NaN): the test of the bitwise-gradient contract.
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        self.shape() == other.shape() && self.data.iter().zip(&other.data).all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// The largest `|a − b|` over elements, or `None` if the shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f32> {
        (self.shape() == other.shape())
            .then(|| self.data.iter().zip(&other.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
    }

    /// The matrix product `self · other`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let mut out = Tensor::zeros(self.rows, other.cols);
        matmul_into(&mut out, self, Trans::No, other, Trans::No)?;
        Ok(out)
    }

    /// `self += other`, element by element.
    pub fn add_assign(&mut self, other: &Tensor) -> Result<()> {
        self.check_same(other, "Tensor::add_assign")?;
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a += b;
        }
        Ok(())
    }

    /// An error unless `other` has this tensor's shape.
    pub(crate) fn check_same(&self, other: &Tensor, place: &str) -> Result<()> {
        if self.shape() == other.shape() {
            return Ok(());
        }
        Err(Error::Shape {
            place: place.into(),
            reason: format!("{:?} and {:?} must have the same shape", self.shape(), other.shape()),
        })
    }

    /// Column sums, as a `[1, cols]` tensor; each column summed from row 0 down.
    pub(crate) fn column_sums(&self) -> Tensor {
        let mut out = Tensor::zeros(1, self.cols);
        for r in 0..self.rows {
            for (o, x) in out.data.iter_mut().zip(self.row(r)) {
                *o += x;
            }
        }
        out
    }
}

impl Clone for Tensor {
    fn clone(&self) -> Tensor {
        let mut t = Tensor::scratch(self.rows, self.cols);
        t.data.copy_from_slice(&self.data);
        t
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.data));
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.data.len().min(6);
        write!(f, "Tensor[{}, {}]{:?}", self.rows, self.cols, &self.data[..shown])?;
        if shown < self.data.len() {
            write!(f, "…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_checks_length() {
        assert!(Tensor::new(2, 3, vec![0.0; 6]).is_ok());
        let e = Tensor::new(2, 3, vec![0.0; 5]).unwrap_err().to_string();
        assert!(e.contains("5 values") && e.contains("[2, 3]"), "{e}");
        let t = Tensor::from_fn(2, 3, |r, c| (r * 10 + c) as f32);
        assert_eq!(t.row(1), &[10.0, 11.0, 12.0]);
        assert_eq!(t.get(1, 2), Some(12.0));
        assert_eq!(t.get(2, 0), None);
        assert_eq!(t.bytes(), 24);
    }

    #[test]
    fn bit_eq_is_bitwise() {
        let a = Tensor::new(1, 2, vec![0.0, 1.0]).unwrap();
        let b = Tensor::new(1, 2, vec![-0.0, 1.0]).unwrap();
        assert!(a.bit_eq(&a.clone()));
        assert!(!a.bit_eq(&b), "-0.0 and 0.0 differ in bits");
        assert_eq!(a.max_abs_diff(&b), Some(0.0));
    }

    #[test]
    fn column_sums_and_add() {
        let mut a = Tensor::from_fn(3, 2, |r, c| (r + c) as f32);
        assert_eq!(a.column_sums().data(), &[3.0, 6.0]);
        a.add_assign(&Tensor::full(3, 2, 1.0)).unwrap();
        assert_eq!(a.data(), &[1.0, 2.0, 2.0, 3.0, 3.0, 4.0]);
        assert!(a.add_assign(&Tensor::zeros(2, 2)).is_err());
    }
}
