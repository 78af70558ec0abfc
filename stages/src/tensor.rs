//! `Tensor`: a row-major 2-D matrix `[rows, cols]`, all an MLP needs, of `f32` in host memory
//! or on a CUDA GPU, or of `f64` in host memory (for gradient checks, [`Element`]).
//!
//! Invariant: the storage holds exactly `rows * cols` values, always. A host tensor's buffer
//! comes from and returns to the per-thread [`pool`](crate::pool), so the shapes a training step
//! repeats cost no fresh allocation; a device tensor owns a buffer on its GPU, allocated on the
//! stream of the stage that made it. Every operation runs in a fixed order, element by element or
//! through one matrix-product path per device ([`matmul`](crate::matmul)), so the same inputs on
//! the same device always give the same bits. An operation on tensors of two different devices is
//! an error that names both; moving data is explicit ([`Tensor::to_device`]). Likewise an
//! operation on an `f32` and an `f64` tensor is an error naming both types, and changing the type
//! is explicit ([`Tensor::to_f64`], [`Tensor::to_f32`]); `f64` tensors never go to a GPU. A host
//! `f64` tensor runs the same host kernels as an `f32` one ([`Element`]), so a layer made of
//! tensor operations runs in `f64` unchanged once its parameters are converted.
//!
//! Two dimensions are kept on purpose, also for the layers still to come: a micro-batch is always
//! a stack of rows, one per token or example, so every layer, loss, message and byte count works
//! on `[rows, width]`. Sequence models lay a micro-batch of `b` sequences of `t` tokens out as
//! `b·t` consecutive rows (sequence-major), and attention heads as consecutive column blocks of
//! the width; an attention layer knows `t` and the head count and reads that layout, so the
//! stages, the executor and the byte rule need no third dimension.

use std::fmt;

use crate::backend::wide;
use crate::cuda::DeviceBuffer;
use crate::device::Device;
use crate::element::{Dtype, Element};
use crate::error::{Error, Result};
use crate::matmul::{matmul_into, Trans};
use crate::pool;
use crate::precision::Format;

/// A row-major `[rows, cols]` matrix of `f32` on the host or on a GPU, or of `f64` on the host.
pub struct Tensor {
    rows: usize,
    cols: usize,
    store: Store,
}

/// Where a tensor's `rows * cols` values are, row after row, and of which type. Public only for
/// [`Element`]'s hidden accessors; the module is private, so no user names it.
pub enum Store {
    /// Host memory, `f32`.
    Host(Vec<f32>),
    /// Host memory, `f64` (gradient checks).
    HostF64(Vec<f64>),
    /// Host memory, the bits of a 16-bit storage format (mixed precision): what a stage keeps
    /// between ops. Operations widen it to `f32` first ([`Tensor::widened`]).
    Stored(Vec<u16>, Format),
    /// A CUDA GPU's memory (boxed: a device buffer carries its stream and events, and host
    /// tensors should not pay for that size).
    Cuda(Box<DeviceBuffer>),
}

impl Tensor {
    /// A tensor from its values, row after row; `data.len()` must be `rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Tensor> {
        Tensor::from_values(rows, cols, data)
    }

    /// A host tensor of `f32` or `f64` from its values, row after row; `data.len()` must be
    /// `rows * cols`.
    pub fn from_values<E: Element>(rows: usize, cols: usize, data: Vec<E>) -> Result<Tensor> {
        if data.len() != rows * cols {
            return Err(Error::Shape {
                place: "Tensor::new".into(),
                reason: format!("{} values given for a [{rows}, {cols}] tensor ({} needed)", data.len(), rows * cols),
            });
        }
        Ok(Tensor { rows, cols, store: E::store(data) })
    }

    /// A `[rows, cols]` tensor of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Tensor {
        Tensor::full(rows, cols, 0.0)
    }

    /// A `[rows, cols]` tensor with every element `value`.
    pub fn full(rows: usize, cols: usize, value: f32) -> Tensor {
        Tensor::full_of(rows, cols, value)
    }

    /// A `[rows, cols]` host tensor of `E` with every element `value`.
    pub fn full_of<E: Element>(rows: usize, cols: usize, value: E) -> Tensor {
        let mut t = Tensor::scratch_of::<E>(rows, cols);
        t.host_of_mut::<E>().fill(value);
        t
    }

    /// A `[1, 1]` tensor holding `value` (how a stage returns a loss).
    pub fn scalar(value: f32) -> Tensor {
        Tensor::full(1, 1, value)
    }

    /// A tensor whose element `(r, c)` is `f(r, c)`, filled row after row.
    pub fn from_fn(rows: usize, cols: usize, f: impl FnMut(usize, usize) -> f32) -> Tensor {
        Tensor::from_fn_of(rows, cols, f)
    }

    /// A host tensor of `E` whose element `(r, c)` is `f(r, c)`, filled row after row.
    pub fn from_fn_of<E: Element>(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> E) -> Tensor {
        let mut t = Tensor::scratch_of::<E>(rows, cols);
        for (k, x) in t.host_of_mut::<E>().iter_mut().enumerate() {
            *x = f(k / cols.max(1), k % cols.max(1));
        }
        t
    }

    /// A `[rows, cols]` tensor with arbitrary contents, for outputs the caller overwrites whole.
    pub(crate) fn scratch(rows: usize, cols: usize) -> Tensor {
        Tensor::scratch_of::<f32>(rows, cols)
    }

    /// A `[rows, cols]` host tensor of `E` with arbitrary contents.
    pub(crate) fn scratch_of<E: Element>(rows: usize, cols: usize) -> Tensor {
        Tensor { rows, cols, store: E::scratch(rows * cols) }
    }

    /// A `[rows, cols]` tensor with arbitrary contents on this tensor's device, of its type (for
    /// an op's output, which the op overwrites whole).
    pub(crate) fn scratch_like(&self, rows: usize, cols: usize) -> Result<Tensor> {
        match &self.store {
            Store::Host(_) => Ok(Tensor::scratch(rows, cols)),
            Store::HostF64(_) => Ok(Tensor::scratch_of::<f64>(rows, cols)),
            Store::Stored(_, f) => Ok(Tensor { rows, cols, store: Store::Stored(vec![0; rows * cols], *f) }),
            Store::Cuda(b) => Ok(Tensor { rows, cols, store: Store::Cuda(Box::new(b.scratch(rows * cols)?)) }),
        }
    }

    /// A `[rows, cols]` tensor of zeros on this tensor's device, of its type.
    pub(crate) fn zeros_like(&self, rows: usize, cols: usize) -> Result<Tensor> {
        match &self.store {
            Store::Host(_) => Ok(Tensor::zeros(rows, cols)),
            Store::HostF64(_) => Ok(Tensor::full_of(rows, cols, 0.0f64)),
            Store::Stored(_, f) => Ok(Tensor { rows, cols, store: Store::Stored(vec![0; rows * cols], *f) }),
            Store::Cuda(b) => Ok(Tensor { rows, cols, store: Store::Cuda(Box::new(b.zeros(rows * cols)?)) }),
        }
    }

    /// A tensor from a device buffer of `rows * cols` values.
    pub(crate) fn from_device(rows: usize, cols: usize, buffer: DeviceBuffer) -> Tensor {
        debug_assert_eq!(buffer.len(), rows * cols);
        Tensor { rows, cols, store: Store::Cuda(Box::new(buffer)) }
    }

    /// A host tensor of 16-bit `bits` in `format`, row after row; `bits.len()` must be
    /// `rows * cols` (the caller's invariant: a copy of such a tensor's bits).
    pub(crate) fn from_stored_bits(rows: usize, cols: usize, bits: Vec<u16>, format: Format) -> Tensor {
        debug_assert_eq!(bits.len(), rows * cols);
        Tensor { rows, cols, store: Store::Stored(bits, format) }
    }

    /// A host tensor of 16-bit `bits` in `format`, row after row, exactly those bits (NaN
    /// payloads included): what [`stored_bits`](Tensor::stored_bits) gives back. An error
    /// unless there are `rows * cols` of them.
    pub fn from_bits(rows: usize, cols: usize, bits: Vec<u16>, format: Format) -> Result<Tensor> {
        if rows.checked_mul(cols) != Some(bits.len()) {
            return Err(Error::Shape {
                place: format!("a [{rows}, {cols}] {format} tensor from bits"),
                reason: format!("{} values given for {rows}·{cols}; give one per element", bits.len()),
            });
        }
        Ok(Tensor::from_stored_bits(rows, cols, bits, format))
    }

    /// The 16-bit values and their format of a tensor stored in 16 bits (mixed precision), row
    /// after row; `None` for any other.
    pub fn stored_bits(&self) -> Option<(&[u16], Format)> {
        match &self.store {
            Store::Stored(bits, f) => Some((bits, *f)),
            _ => None,
        }
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
            Store::Host(_) | Store::HostF64(_) | Store::Stored(..) => None,
        }
    }

    /// Where the values are.
    pub fn device(&self) -> Device {
        match &self.store {
            Store::Host(_) | Store::HostF64(_) | Store::Stored(..) => Device::Cpu,
            Store::Cuda(b) => Device::Cuda(b.ordinal()),
        }
    }

    /// The element type: `f64` only for host tensors made so ([`to_f64`](Tensor::to_f64)).
    pub fn dtype(&self) -> Dtype {
        match &self.store {
            Store::HostF64(_) => Dtype::F64,
            Store::Stored(_, f) => Dtype::Stored(*f),
            Store::Host(_) | Store::Cuda(_) => Dtype::F32,
        }
    }

    /// Whether the values are in host memory (so [`data`](Tensor::data), for `f32`, or
    /// [`host`](Tensor::host) can read them).
    pub fn is_host(&self) -> bool {
        matches!(self.store, Store::Host(_) | Store::HostF64(_) | Store::Stored(..))
    }

    /// The values of a host tensor of `E`, row after row; an error naming both types (or the
    /// device) if the tensor holds another type or is on a GPU.
    pub fn host<E: Element>(&self) -> Result<&[E]> {
        let (dtype, device) = (self.dtype(), self.device());
        E::view(&self.store).ok_or_else(|| not_of::<E>(dtype, device))
    }

    /// The values of a host tensor of `E`, mutable (see [`host`](Tensor::host)).
    pub fn host_mut<E: Element>(&mut self) -> Result<&mut [E]> {
        let (dtype, device) = (self.dtype(), self.device());
        E::view_mut(&mut self.store).ok_or_else(|| not_of::<E>(dtype, device))
    }

    /// The values of a host tensor whose type the caller has checked (the dispatcher of an
    /// operation, or a tensor it made itself).
    ///
    /// # Panics
    /// If the tensor is not a host tensor of `E`: an internal error, never a user's.
    pub(crate) fn host_of<E: Element>(&self) -> &[E] {
        match E::view(&self.store) {
            Some(v) => v,
            None => panic!("{}", not_of::<E>(self.dtype(), self.device())),
        }
    }

    /// [`host_of`](Tensor::host_of), mutable.
    pub(crate) fn host_of_mut<E: Element>(&mut self) -> &mut [E] {
        let (dtype, device) = (self.dtype(), self.device());
        match E::view_mut(&mut self.store) {
            Some(v) => v,
            None => panic!("{}", not_of::<E>(dtype, device)),
        }
    }

    /// An `f64` copy on the host (a GPU tensor is downloaded; `f32` values widen exactly).
    pub fn to_f64(&self) -> Result<Tensor> {
        let values = match &self.store {
            Store::HostF64(v) => v.clone(),
            Store::Host(v) => v.iter().map(|x| f64::from(*x)).collect(),
            Store::Stored(v, f) => v.iter().map(|x| f64::from(f.widen(*x))).collect(),
            Store::Cuda(b) => b.download()?.into_iter().map(f64::from).collect(),
        };
        Tensor::from_values(self.rows, self.cols, values)
    }

    /// An `f32` copy on the same device (`f64` values rounded to nearest).
    pub fn to_f32(&self) -> Result<Tensor> {
        match &self.store {
            Store::HostF64(v) => Tensor::new(self.rows, self.cols, v.iter().map(|x| *x as f32).collect()),
            Store::Stored(..) => self.widened(),
            Store::Host(_) | Store::Cuda(_) => self.try_clone(),
        }
    }

    /// An `f32` copy of a tensor in a 16-bit storage format (exact: every 16-bit value is an
    /// `f32`); any other tensor as it is, copied. What an operation computes on.
    pub fn widened(&self) -> Result<Tensor> {
        match &self.store {
            Store::Stored(v, f) => {
                let mut t = Tensor::scratch(self.rows, self.cols);
                t.data_mut().iter_mut().zip(v).for_each(|(x, b)| *x = f.widen(*b));
                Ok(t)
            }
            _ => self.try_clone(),
        }
    }

    /// This tensor in `f32`: itself unless it is in a 16-bit storage format (then
    /// [`widened`](Tensor::widened)).
    pub fn into_widened(self) -> Result<Tensor> {
        match self.store {
            Store::Stored(..) => self.widened(),
            _ => Ok(self),
        }
    }

    /// This host `f32` tensor stored in `format`, each value rounded to nearest even: what a
    /// mixed-precision stage keeps. A tensor already in `format` stays as it is; an error for
    /// a GPU, `f64` or another format's tensor.
    pub fn into_stored(self, format: Format) -> Result<Tensor> {
        let bits = match &self.store {
            Store::Stored(_, f) if *f == format => return Ok(self),
            Store::Host(v) => v.iter().map(|x| format.narrow(*x)).collect(),
            _ => {
                return Err(Error::Dtype {
                    place: format!("storing a tensor in {format}"),
                    reason: format!(
                        "the tensor holds {} on {}; 16-bit storage takes host f32 tensors (mixed precision runs on CPU stages)",
                        self.dtype(),
                        self.device()
                    ),
                })
            }
        };
        Ok(Tensor { rows: self.rows, cols: self.cols, store: Store::Stored(bits, format) })
    }

    /// This tensor as `dtype`: itself if it is of that type already, else a converted copy
    /// ([`to_f64`](Tensor::to_f64), [`to_f32`](Tensor::to_f32)).
    pub fn into_dtype(self, dtype: Dtype) -> Result<Tensor> {
        match (self.dtype(), dtype) {
            (a, b) if a == b => Ok(self),
            (_, Dtype::F64) => self.to_f64(),
            (_, Dtype::F32) => self.to_f32(),
            (_, Dtype::Stored(f)) => self.to_f32()?.into_stored(f),
        }
    }

    /// A copy of this tensor on `device` (a device-to-device copy between GPUs, a transfer
    /// between host and GPU).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        let (rows, cols) = (self.rows, self.cols);
        match (&self.store, device) {
            (Store::HostF64(v), Device::Cpu) => Tensor::from_values(rows, cols, v.clone()),
            (Store::HostF64(_), Device::Cuda(k)) => Err(Error::Dtype {
                place: format!("Tensor::to_device(cuda:{k})"),
                reason: "f64 tensors stay on the host (the GPU backend is f32); convert with to_f32() first".into(),
            }),
            (Store::Host(v), Device::Cpu) => Tensor::new(rows, cols, pool::copy(v)),
            (Store::Stored(v, f), Device::Cpu) => Ok(Tensor { rows, cols, store: Store::Stored(v.clone(), *f) }),
            (Store::Stored(_, f), Device::Cuda(k)) => Err(Error::Dtype {
                place: format!("Tensor::to_device(cuda:{k})"),
                reason: format!("{f} storage is host-only: mixed precision runs on CPU stages only for now"),
            }),
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
            Store::HostF64(v) => Ok(Tensor { rows: self.rows, cols: self.cols, store: Store::HostF64(v.clone()) }),
            Store::Stored(v, f) => Ok(Tensor { rows: self.rows, cols: self.cols, store: Store::Stored(v.clone(), *f) }),
            Store::Cuda(b) => Ok(Tensor::from_device(self.rows, self.cols, b.duplicate()?)),
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

    /// Bytes of the values (4 per `f32` element, 8 per `f64` one, 2 in a 16-bit storage
    /// format): what holding this tensor
    /// costs, on whichever device.
    pub fn bytes(&self) -> u64 {
        (self.len() * self.dtype().size()) as u64
    }

    /// The values, row after row, of a host `f32` tensor.
    ///
    /// # Panics
    /// If the tensor is on a GPU, whose memory the host cannot read in place: check
    /// [`is_host`](Tensor::is_host), or read a copy from [`to_host`](Tensor::to_host). Every
    /// tensor the CPU stages make is on the host. Also if it holds `f64` (only tensors made by
    /// [`to_f64`](Tensor::to_f64) and what operations make from them do): read those with
    /// [`host`](Tensor::host), which returns an error instead.
    pub fn data(&self) -> &[f32] {
        match &self.store {
            Store::Host(v) => v,
            Store::HostF64(_) => panic!("{}", not_of::<f32>(Dtype::F64, Device::Cpu)),
            Store::Stored(_, f) => panic!("{}", not_of::<f32>(Dtype::Stored(*f), Device::Cpu)),
            Store::Cuda(b) => panic!("{}", on_device("data", b.ordinal())),
        }
    }

    /// The values, row after row, mutable.
    ///
    /// # Panics
    /// If the tensor is on a GPU or holds `f64` (see [`data`](Tensor::data)).
    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.store {
            Store::Host(v) => v,
            Store::HostF64(_) => panic!("{}", not_of::<f32>(Dtype::F64, Device::Cpu)),
            Store::Stored(_, f) => panic!("{}", not_of::<f32>(Dtype::Stored(*f), Device::Cpu)),
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

    /// The `f32` values as a `Vec`, row after row, wherever the tensor is (a device tensor is
    /// copied to the host); an error if that copy fails, or if the tensor holds `f64` (read it
    /// with [`values_f64`](Tensor::values_f64)).
    pub fn values(&self) -> Result<Vec<f32>> {
        match &self.store {
            Store::Host(v) => Ok(v.clone()),
            Store::HostF64(_) => Err(not_of::<f32>(Dtype::F64, Device::Cpu)),
            Store::Stored(v, f) => Ok(v.iter().map(|b| f.widen(*b)).collect()),
            Store::Cuda(b) => b.download(),
        }
    }

    /// The values as `f64`, row after row, of either type on any device (`f32` widens exactly);
    /// an error only if a device copy fails.
    pub fn values_f64(&self) -> Result<Vec<f64>> {
        match &self.store {
            Store::HostF64(v) => Ok(v.clone()),
            Store::Host(v) => Ok(v.iter().map(|x| f64::from(*x)).collect()),
            Store::Stored(v, f) => Ok(v.iter().map(|b| f64::from(f.widen(*b))).collect()),
            Store::Cuda(b) => Ok(b.download()?.into_iter().map(f64::from).collect()),
        }
    }

    /// The values as a `Vec`, row after row (host tensors; see [`data`](Tensor::data)).
    pub fn to_vec(&self) -> Vec<f32> {
        self.data().to_vec()
    }

    /// Whether both tensors have the same shape, type and bit-identical values (`-0.0 ≠ 0.0`,
    /// and a NaN equals the same NaN): the test of the bitwise-gradient contract. Device tensors
    /// are compared through host copies (and are unequal if a copy fails).
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        if self.shape() != other.shape() || self.dtype() != other.dtype() {
            return false;
        }
        if self.dtype() == Dtype::F64 {
            let (a, b) = (self.host_of::<f64>(), other.host_of::<f64>());
            return a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        }
        if let (Store::Stored(a, _), Store::Stored(b, _)) = (&self.store, &other.store) {
            return a == b;
        }
        match (self.values(), other.values()) {
            (Ok(a), Ok(b)) => a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            _ => false,
        }
    }

    /// The largest `|a − b|` over elements (computed in `f64`, rounded to `f32`, when either
    /// tensor holds `f64`), or `None` if the shapes differ (or a device copy fails).
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f32> {
        if self.shape() != other.shape() {
            return None;
        }
        if self.dtype() != Dtype::F64 && other.dtype() != Dtype::F64 {
            let (a, b) = (self.values().ok()?, other.values().ok()?);
            return Some(a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max));
        }
        let (a, b) = (self.values_f64().ok()?, other.values_f64().ok()?);
        Some(a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) as f32)
    }

    /// The matrix product `self · other` (both on the same device).
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let mut out = self.scratch_like(self.rows, other.cols)?;
        matmul_into(&mut out, self, Trans::No, other, Trans::No, crate::Precision::F32)?;
        Ok(out)
    }

    /// `self += other`, element by element (both on the same device, of the same type).
    pub fn add_assign(&mut self, other: &Tensor) -> Result<()> {
        self.check_same(other, "Tensor::add_assign")?;
        match (&mut self.store, &other.store) {
            (Store::Host(a), Store::Host(b)) => {
                add_elementwise(a, b);
                Ok(())
            }
            (Store::HostF64(a), Store::HostF64(b)) => {
                add_elementwise(a, b);
                Ok(())
            }
            // 16-bit storage: each sum in f32, rounded back to the format.
            (Store::Stored(a, f), Store::Stored(b, _)) => {
                let f = *f;
                a.iter_mut().zip(b).for_each(|(x, y)| *x = f.narrow(f.widen(*x) + f.widen(*y)));
                Ok(())
            }
            (Store::Cuda(a), Store::Cuda(b)) => crate::cuda::ops::add_assign(a, b),
            _ => Err(mixed("Tensor::add_assign", self.device(), other.device())),
        }
    }

    /// `self[r, :] += row` for every row `r`; `row` is `[1, cols]` (a bias) of the same type.
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
        same_dtype("Tensor::add_row", &[self, row])?;
        match self.dtype() {
            Dtype::F32 => add_row_of::<f32>(self, row),
            Dtype::F64 => add_row_of::<f64>(self, row),
            Dtype::Stored(f) => return Err(stored_operand("Tensor::add_row", f)),
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
            Store::HostF64(v) => {
                v.fill(0.0);
                Ok(())
            }
            Store::Stored(v, _) => {
                v.fill(0);
                Ok(())
            }
            Store::Cuda(b) => b.fill_zero(),
        }
    }

    /// An error unless `other` has this tensor's shape, device and type.
    pub(crate) fn check_same(&self, other: &Tensor, place: &str) -> Result<()> {
        if self.shape() != other.shape() {
            return Err(Error::Shape {
                place: place.into(),
                reason: format!("{:?} and {:?} must have the same shape", self.shape(), other.shape()),
            });
        }
        same_dtype(place, &[self, other])?;
        if self.device() != other.device() {
            return Err(mixed(place, self.device(), other.device()));
        }
        Ok(())
    }

    /// Column sums, as a `[1, cols]` tensor of this tensor's type; each column summed from row 0
    /// down.
    pub(crate) fn column_sums(&self) -> Result<Tensor> {
        match &self.store {
            Store::Cuda(b) => {
                Ok(Tensor::from_device(1, self.cols, crate::cuda::ops::column_sums(b, self.rows, self.cols)?))
            }
            Store::Host(_) => Ok(column_sums_of::<f32>(self)),
            Store::HostF64(_) => Ok(column_sums_of::<f64>(self)),
            Store::Stored(_, f) => Err(stored_operand("Tensor::column_sums", *f)),
        }
    }
}

wide::twin! {
    /// `a += b`, element by element.
    fn add_elementwise(a: &mut [E], b: &[E]) = add_elementwise_in
}

#[inline(always)]
fn add_elementwise_in<E: Element>(a: &mut [E], b: &[E]) {
    for (a, b) in a.iter_mut().zip(b) {
        *a += *b;
    }
}

wide::twin! {
    /// `t[r, :] += row` for every row, on host tensors of `E` (checked by the caller).
    fn add_row_of(t: &mut Tensor, row: &Tensor) = add_row_of_in
}

#[inline(always)]
fn add_row_of_in<E: Element>(t: &mut Tensor, row: &Tensor) {
    let b = row.host_of::<E>();
    for r in t.host_of_mut::<E>().chunks_exact_mut(b.len().max(1)) {
        for (v, bias) in r.iter_mut().zip(b) {
            *v += *bias;
        }
    }
}

wide::twin! {
    /// Column sums of a host tensor of `E`, each column from row 0 down.
    fn column_sums_of(t: &Tensor) -> Tensor = column_sums_of_in
}

#[inline(always)]
fn column_sums_of_in<E: Element>(t: &Tensor) -> Tensor {
    let cols = t.cols;
    let mut out = Tensor::full_of(1, cols, E::ZERO);
    let sums = out.host_of_mut::<E>();
    for row in t.host_of::<E>().chunks_exact(cols.max(1)) {
        for (o, x) in sums.iter_mut().zip(row) {
            *o += *x;
        }
    }
    out
}

/// An error unless every tensor has the element type of the first: an operation never mixes
/// `f32` and `f64`.
pub(crate) fn same_dtype(place: &str, tensors: &[&Tensor]) -> Result<()> {
    let Some(first) = tensors.first() else { return Ok(()) };
    match tensors.iter().find(|t| t.dtype() != first.dtype()) {
        Some(t) => Err(Error::Dtype {
            place: place.into(),
            reason: format!(
                "given {} and {} tensors; an operation takes one type: convert with to_f64() or to_f32()",
                first.dtype(),
                t.dtype()
            ),
        }),
        None => Ok(()),
    }
}

/// The error for reading a tensor as `E` when it holds `dtype` on `device`.
fn not_of<E: Element>(dtype: Dtype, device: Device) -> Error {
    let reason = if device != Device::Cpu {
        format!("the tensor is on {device}; read a host copy (to_host()) or values()")
    } else {
        format!("the tensor holds {dtype}; read it as {dtype}, or convert it with to_{}()", E::DTYPE)
    };
    Error::Dtype { place: format!("reading a tensor as {}", E::DTYPE), reason }
}

/// The error for an operation given a tensor in 16-bit storage, which operations never read:
/// widen it first.
pub(crate) fn stored_operand(place: &str, format: Format) -> Error {
    Error::Dtype {
        place: place.into(),
        reason: format!("given a tensor stored in {format}; operations compute in f32: widen it with widened()"),
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
    /// An `f32` host buffer goes back to the pool; `f64` ones (gradient checks only) to the
    /// allocator.
    fn drop(&mut self) {
        if let Store::Host(v) = &mut self.store {
            pool::give(std::mem::take(v));
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, len) = match &self.store {
            Store::Host(data) => (format!("{:?}", &data[..data.len().min(6)]), data.len()),
            Store::HostF64(data) => (format!("f64{:?}", &data[..data.len().min(6)]), data.len()),
            Store::Stored(data, f) => {
                let shown: Vec<f32> = data.iter().take(6).map(|b| f.widen(*b)).collect();
                (format!("{f}{shown:?}"), data.len())
            }
            Store::Cuda(_) => return write!(f, "Tensor[{}, {}] on {}", self.rows, self.cols, self.device()),
        };
        write!(f, "Tensor[{}, {}]{shown}", self.rows, self.cols)?;
        if len > 6 {
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

    #[test]
    fn f64_tensors_convert_exactly_and_never_mix_with_f32() {
        let a = Tensor::from_fn(2, 3, |r, c| 0.1 * (r * 3 + c) as f32 - 0.2);
        let wide = a.to_f64().unwrap();
        assert_eq!((wide.dtype(), wide.bytes(), a.bytes()), (Dtype::F64, 48, 24));
        assert!(wide.to_f32().unwrap().bit_eq(&a), "f32 → f64 → f32 is exact");
        assert!(!wide.bit_eq(&a), "types differ");
        assert_eq!(wide.host::<f64>().unwrap()[4], f64::from(a.data()[4]));
        let e = a.host::<f64>().unwrap_err().to_string();
        assert!(e.contains("holds f32") && e.contains("to_f64()"), "{e}");
        assert!(wide.values().unwrap_err().to_string().contains("holds f64"));
        let mut w = wide.clone();
        let e = w.add_assign(&a).unwrap_err().to_string();
        assert!(e.contains("f64 and f32") && e.contains("to_f64() or to_f32()"), "{e}");
        w.add_assign(&wide).unwrap();
        assert_eq!(w.host::<f64>().unwrap()[5], 2.0 * f64::from(a.data()[5]));
        assert_eq!(wide.column_sums().unwrap().dtype(), Dtype::F64);
        let e = wide.to_device(Device::Cuda(0)).unwrap_err().to_string();
        assert!(e.contains("f64 tensors stay on the host"), "{e}");
        assert!(a.clone().into_dtype(Dtype::F64).unwrap().bit_eq(&wide));
    }
}
