//! `Tensor`: a row-major 2-D `f32` matrix `[rows, cols]`, all an MLP needs, in host memory or
//! on a CUDA GPU.
//!
//! Invariant: the storage holds exactly `rows * cols` values, always. A host tensor's buffer
//! comes from and returns to the per-thread [`pool`](crate::pool), so the shapes a training step
//! repeats cost no fresh allocation; a device tensor owns a buffer on its GPU, allocated on the
//! stream of the stage that made it. Every operation runs in a fixed order, element by element or
//! through one matrix-product path per device ([`matmul`](crate::matmul)), so the same inputs on
//! the same device always give the same bits. An operation on tensors of two different devices is
//! an error that names both; moving data is explicit ([`Tensor::to_device`]).
//!
//! Two dimensions are kept on purpose, also for the layers still to come: a micro-batch is always
//! a stack of rows, one per token or example, so every layer, loss, message and byte count works
//! on `[rows, width]`. Sequence models lay a micro-batch of `b` sequences of `t` tokens out as
//! `b·t` consecutive rows (sequence-major), and attention heads as consecutive column blocks of
//! the width; an attention layer knows `t` and the head count and reads that layout, so the
//! stages, the executor and the byte rule need no third dimension.

use std::fmt;

use crate::cuda::DeviceBuffer;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::matmul::{matmul_into, Trans};
use crate::pool;

/// A row-major `[rows, cols]` matrix of `f32`, on the host or on a GPU.
pub struct Tensor {
    rows: usize,
    cols: usize,
    store: Store,
}

/// Where a tensor's `rows * cols` values are, row after row.
pub(crate) enum Store {
    /// Host memory.
    Host(Vec<f32>),
    /// A CUDA GPU's memory (boxed: a device buffer carries its stream and events, and host
    /// tensors should not pay for that size).
    Cuda(Box<DeviceBuffer>),
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
        Ok(Tensor { rows, cols, store: Store::Host(data) })
    }

    /// A `[rows, cols]` tensor of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Tensor {
        Tensor::full(rows, cols, 0.0)
    }

    /// A `[rows, cols]` tensor with every element `value`.
    pub fn full(rows: usize, cols: usize, value: f32) -> Tensor {
        let mut t = Tensor::scratch(rows, cols);
        t.host_mut().fill(value);
        t
    }

    /// A `[1, 1]` tensor holding `value` (how a stage returns a loss).
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(1, 1, value)
    }

    /// A tensor whose element `(r, c)` is `f(r, c)`, filled row after row.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f32) -> Tensor {
        let mut t = Tensor::scratch(rows, cols);
        for (k, x) in t.host_mut().iter_mut().enumerate() {
            *x = f(k / cols.max(1), k % cols.max(1));
        }
        t
    }

    /// A `[rows, cols]` tensor with arbitrary contents, for outputs the caller overwrites whole.
    pub(crate) fn scratch(rows: usize, cols: usize) -> Tensor {
        Tensor { rows, cols, store: Store::Host(pool::take(rows * cols)) }
    }

    /// A `[rows, cols]` tensor with arbitrary contents on this tensor's device (for an op's
    /// output, which the op overwrites whole).
    pub(crate) fn scratch_like(&self, rows: usize, cols: usize) -> Result<Tensor> {
        match &self.store {
            Store::Host(_) => Ok(Tensor::scratch(rows, cols)),
            Store::Cuda(b) => Ok(Tensor { rows, cols, store: Store::Cuda(Box::new(b.scratch(rows * cols)?)) }),
        }
    }

    /// A `[rows, cols]` tensor of zeros on this tensor's device.
    pub(crate) fn zeros_like(&self, rows: usize, cols: usize) -> Result<Tensor> {
        match &self.store {
            Store::Host(_) => Ok(Tensor::zeros(rows, cols)),
            Store::Cuda(b) => Ok(Tensor { rows, cols, store: Store::Cuda(Box::new(b.zeros(rows * cols)?)) }),
        }
    }

    /// A tensor from a device buffer of `rows * cols` values.
    pub(crate) fn from_device(rows: usize, cols: usize, buffer: DeviceBuffer) -> Tensor {
        debug_assert_eq!(buffer.len(), rows * cols);
        Tensor { rows, cols, store: Store::Cuda(Box::new(buffer)) }
    }

    /// The storage.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The storage, mutable.
    pub(crate) fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The device buffer, if the tensor is on a GPU.
    pub(crate) fn device_buffer(&self) -> Option<&DeviceBuffer> {
        match &self.store {
            Store::Cuda(b) => Some(b),
            Store::Host(_) => None,
        }
    }

    /// Where the values are.
    pub fn device(&self) -> Device {
        match &self.store {
            Store::Host(_) => Device::Cpu,
            Store::Cuda(b) => Device::Cuda(b.ordinal()),
        }
    }

    /// Whether the values are in host memory (so [`data`](Tensor::data) can read them).
    pub fn is_host(&self) -> bool {
        matches!(self.store, Store::Host(_))
    }

    /// A copy of this tensor on `device` (a device-to-device copy between GPUs, a transfer
    /// between host and GPU).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let (rows, cols) = (self.rows, self.cols);
        match (&self.store, device) {
            (Store::Host(v), Device::Cpu) => Tensor::new(rows, cols, pool::copy(v)),
            (Store::Host(v), Device::Cuda(k)) => Ok(Tensor::from_device(rows, cols, DeviceBuffer::upload(k, v)?)),
            (Store::Cuda(b), Device::Cpu) => Tensor::new(rows, cols, b.download()?),
            (Store::Cuda(b), Device::Cuda(k)) => Ok(Tensor::from_device(rows, cols, b.copy_to(k)?)),
        }
    }

    /// This tensor on `device`: itself if it is already there (no copy: a stage on the same GPU
    /// takes the buffer as it is), else a copy.
    pub fn into_device(self, device: Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self);
        }
        self.to_device(device)
    }

    /// A host copy (the tensor itself, copied, if it is on the host already).
    pub fn to_host(&self) -> Result<Tensor> {
        self.to_device(Device::Cpu)
    }

    /// A copy on the same device; an error only if the device cannot allocate it.
    pub fn try_clone(&self) -> Result<Tensor> {
        match &self.store {
            Store::Host(v) => Ok(Tensor { rows: self.rows, cols: self.cols, store: Store::Host(pool::copy(v)) }),
            Store::Cuda(b) => Ok(Tensor::from_device(self.rows, self.cols, b.duplicate()?)),
        }
    }

    fn host_mut(&mut self) -> &mut Vec<f32> {
        match &mut self.store {
            Store::Host(v) => v,
            Store::Cuda(_) => unreachable!("host_mut is only called on tensors made by Tensor::scratch"),
        }
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
        self.rows * self.cols
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the values (4 per element): what holding this tensor costs, on whichever device.
    pub fn bytes(&self) -> u64 {
        (self.len() * std::mem::size_of::<f32>()) as u64
    }

    /// The values, row after row.
    ///
    /// # Panics
    /// If the tensor is on a GPU, whose memory the host cannot read in place: check
    /// [`is_host`](Tensor::is_host), or read a copy from [`to_host`](Tensor::to_host). Every
    /// tensor the CPU stages make is on the host.
    pub fn data(&self) -> &[f32] {
        match &self.store {
            Store::Host(v) => v,
            Store::Cuda(b) => panic!("{}", on_device("data", b.ordinal())),
        }
    }

    /// The values, row after row, mutable.
    ///
    /// # Panics
    /// If the tensor is on a GPU (see [`data`](Tensor::data)).
    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.store {
            Store::Host(v) => v,
            Store::Cuda(b) => panic!("{}", on_device("data_mut", b.ordinal())),
        }
    }

    /// Row `r` (host tensors; see [`data`](Tensor::data)).
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data()[r * self.cols..(r + 1) * self.cols]
    }

    /// Element `(r, c)`; `None` outside the shape (host tensors; see [`data`](Tensor::data)).
    pub fn get(&self, r: usize, c: usize) -> Option<f32> {
        (r < self.rows && c < self.cols).then(|| self.data()[r * self.cols + c])
    }

    /// The values as a `Vec`, row after row, wherever the tensor is (a device tensor is copied
    /// to the host); an error only if that copy fails.
    pub fn values(&self) -> Result<Vec<f32>> {
        match &self.store {
            Store::Host(v) => Ok(v.clone()),
            Store::Cuda(b) => b.download(),
        }
    }

    /// The values as a `Vec`, row after row (host tensors; see [`data`](Tensor::data)).
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().to_vec()
    }

    /// Whether both tensors have the same shape and bit-identical values (`-0.0 ≠ 0.0`, and a NaN
    /// equals the same NaN): the test of the bitwise-gradient contract. Device tensors are
    /// compared through host copies (and are unequal if a copy fails).
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        match (self.values(), other.values()) {
            (Ok(a), Ok(b)) if self.shape() == other.shape() => {
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            _ => false,
        }
    }

    /// The largest `|a − b|` over elements, or `None` if the shapes differ (or a device copy
    /// fails).
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f32> {
        let (a, b) = (self.values().ok()?, other.values().ok()?);
        (self.shape() == other.shape()).then(|| a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max))
    }

    /// The matrix product `self · other` (both on the same device).
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let mut out = self.scratch_like(self.rows, other.cols)?;
        matmul_into(&mut out, self, Trans::No, other, Trans::No, crate::Precision::F32)?;
        Ok(out)
    }

    /// `self += other`, element by element (both on the same device).
    pub fn add_assign(&mut self, other: &Tensor) -> Result<()> {
        self.check_same(other, "Tensor::add_assign")?;
        match (&mut self.store, &other.store) {
            (Store::Host(a), Store::Host(b)) => {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
                Ok(())
            }
            (Store::Cuda(a), Store::Cuda(b)) => crate::cuda::ops::add_assign(a, b),
            _ => Err(mixed("Tensor::add_assign", self.device(), other.device())),
        }
    }

    /// `self[r, :] += row` for every row `r`; `row` is `[1, cols]` (a bias).
    pub(crate) fn add_row(&mut self, row: &Tensor) -> Result<()> {
        if let Store::Cuda(_) = self.store {
            return crate::cuda::ops::add_bias(self, row);
        }
        if row.shape() != [1, self.cols] || !row.is_host() {
            return Err(Error::Shape {
                place: "Tensor::add_row".into(),
                reason: format!("row {:?} on {} for {:?} on the host", row.shape(), row.device(), self.shape()),
            });
        }
        let b = row.data();
        for r in self.host_mut().chunks_exact_mut(b.len()) {
            for (v, bias) in r.iter_mut().zip(b) {
                *v += bias;
            }
        }
        Ok(())
    }

    /// Sets every element to zero.
    pub fn fill_zero(&mut self) -> Result<()> {
        match &mut self.store {
            Store::Host(v) => {
                v.fill(0.0);
                Ok(())
            }
            Store::Cuda(b) => b.fill_zero(),
        }
    }

    /// An error unless `other` has this tensor's shape and device.
    pub(crate) fn check_same(&self, other: &Tensor, place: &str) -> Result<()> {
        if self.shape() != other.shape() {
            return Err(Error::Shape {
                place: place.into(),
                reason: format!("{:?} and {:?} must have the same shape", self.shape(), other.shape()),
            });
        }
        if self.device() != other.device() {
            return Err(mixed(place, self.device(), other.device()));
        }
        Ok(())
    }

    /// Column sums, as a `[1, cols]` tensor; each column summed from row 0 down.
    pub(crate) fn column_sums(&self) -> Result<Tensor> {
        if let Store::Cuda(b) = &self.store {
            return Ok(Tensor::from_device(1, self.cols, crate::cuda::ops::column_sums(b, self.rows, self.cols)?));
        }
        let mut out = Tensor::zeros(1, self.cols);
        for r in 0..self.rows {
            for (o, x) in out.host_mut().iter_mut().zip(self.row(r)) {
                *o += x;
            }
        }
        Ok(out)
    }
}

/// The error for an operation given tensors on two devices.
pub(crate) fn mixed(place: &str, a: Device, b: Device) -> Error {
    Error::Device {
        device: format!("{a} and {b}"),
        reason: format!("{place} needs both tensors on one device; move one with Tensor::to_device"),
    }
}

fn on_device(what: &str, ordinal: usize) -> String {
    format!("Tensor::{what} reads host memory, but this tensor is on cuda:{ordinal}; use to_host() or values()")
}

impl Clone for Tensor {
    /// A copy on the same device.
    ///
    /// # Panics
    /// If a GPU cannot allocate the copy; [`try_clone`](Tensor::try_clone) returns that as an
    /// error instead.
    fn clone(&self) -> Tensor {
        match self.try_clone() {
            Ok(t) => t,
            Err(e) => panic!("Tensor::clone: {e}"),
        }
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        if let Store::Host(v) = &mut self.store {
            pool::give(std::mem::take(v));
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Store::Host(data) = &self.store else {
            return write!(f, "Tensor[{}, {}] on {}", self.rows, self.cols, self.device());
        };
        let shown = data.len().min(6);
        write!(f, "Tensor[{}, {}]{:?}", self.rows, self.cols, &data[..shown])?;
        if shown < data.len() {
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
        assert_eq!(a.column_sums().unwrap().data(), &[3.0, 6.0]);
        a.add_assign(&Tensor::full(3, 2, 1.0)).unwrap();
        assert_eq!(a.data(), &[1.0, 2.0, 2.0, 3.0, 3.0, 4.0]);
        assert!(a.add_assign(&Tensor::zeros(2, 2)).is_err());
    }
}
