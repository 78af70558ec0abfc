//! The number types a host tensor holds: `f32`, in which models train on every device, and `f64`,
//! in which [`gradcheck`](crate::gradcheck) runs a layer to check its gradients against finite
//! differences with rounding far below the error it looks for.
//!
//! Invariants: the host kernels (`backend/host.rs`, `backend/gelu.rs`, the products in
//! `matmul.rs`, `Tensor`'s elementwise methods) are written once, generic over [`Element`], so
//! the `f64` instantiation runs exactly the formulas the `f32` one runs. The `f32` instantiation
//! is the code as it would be written for `f32` alone — the same operations in the same order,
//! [`exp_approx`] for `e^x` — and gives the same bits. Where `f32` approximates a function
//! (`e^x`) or rounds a constant (`√(2/π)`), `f64` uses the exact function and the constant to
//! `f64` precision, so a finite difference in `f64` checks the analytic formula, not the
//! approximation. Tensors on a GPU are always `f32`; an operation given tensors of both types is
//! an error ([`Error::Dtype`](crate::Error::Dtype)), never a conversion.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::backend::exp_approx;
use crate::tensor::Store;

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE single precision: every tensor a model trains with, on any device.
    F32,
    /// IEEE double precision: host tensors only, for gradient checks.
    F64,
    /// A 16-bit storage format (mixed precision): host tensors kept between ops, widened to
    /// `f32` for compute ([`Tensor::widened`](crate::Tensor::widened)); no kernel reads it.
    Stored(crate::precision::Format),
}

impl Dtype {
    /// Bytes per element: 4, 8, or 2 for a 16-bit storage format.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Stored(_) => 2,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
            Dtype::Stored(crate::precision::Format::Bf16) => "stored bf16",
            Dtype::Stored(crate::precision::Format::F16) => "stored f16",
        })
    }
}

mod sealed {
    /// Only `f32` and `f64` are elements: the tensor storage has a variant for each.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A number type of host tensors, `f32` or `f64`: what the host kernels are generic over, and
/// what a layer of one's own can be generic over to run in both (see `examples/own_layer.rs`).
pub trait Element:
    sealed::Sealed
    + Copy
    + Default
    + PartialOrd
    + fmt::Debug
    + fmt::Display
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    /// This type as a [`Dtype`].
    const DTYPE: Dtype;
    /// `0`.
    const ZERO: Self;
    /// `1`.
    const ONE: Self;
    /// `−∞`.
    const NEG_INFINITY: Self;
    /// `−0`, the identity of addition (`−0 + x = x` for every `x`, `+0` included).
    const NEG_ZERO: Self;
    /// `x`, exactly (every `f32` is an `f64`).
    fn from_f32(x: f32) -> Self;
    /// A constant given to each type's precision: `single` in `f32`, `double` in `f64`.
    fn constant(single: f32, double: f64) -> Self;
    /// `n` rounded to this type (`n as f32`, `n as f64`).
    fn from_usize(n: usize) -> Self;
    /// `x` rounded to this type.
    fn from_f64(x: f64) -> Self;
    /// The value as an `f64`, exactly.
    fn to_f64(self) -> f64;
    /// `e^x`: [`exp_approx`] in `f32` (relative error ≈ 1e-7, what training uses), libm's `exp`
    /// in `f64`.
    fn exp(self) -> Self;
    /// The natural logarithm.
    fn ln(self) -> Self;
    /// The square root.
    fn sqrt(self) -> Self;
    /// The larger of two values (the other if one is NaN).
    fn max(self, other: Self) -> Self;
    /// The absolute value.
    fn abs(self) -> Self;
    /// Whether the value is a whole number (no fraction).
    fn is_whole(self) -> bool;
    /// The values of a host tensor of this type; `None` for another type or a GPU tensor.
    #[doc(hidden)]
    fn view(store: &Store) -> Option<&[Self]>;
    /// The values, mutable; `None` for another type or a GPU tensor.
    #[doc(hidden)]
    fn view_mut(store: &mut Store) -> Option<&mut [Self]>;
    /// A host store of `len` values with arbitrary contents.
    #[doc(hidden)]
    fn scratch(len: usize) -> Store;
    /// A host store of these values.
    #[doc(hidden)]
    fn store(values: Vec<Self>) -> Store;
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
    const NEG_ZERO: f32 = -0.0;
    #[inline(always)]
    fn from_f32(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn constant(single: f32, _double: f64) -> f32 {
        single
    }
    #[inline(always)]
    fn from_usize(n: usize) -> f32 {
        n as f32
    }
    #[inline(always)]
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn exp(self) -> f32 {
        exp_approx(self)
    }
    #[inline(always)]
    fn ln(self) -> f32 {
        f32::ln(self)
    }
    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn max(self, other: f32) -> f32 {
        f32::max(self, other)
    }
    #[inline(always)]
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    #[inline(always)]
    fn is_whole(self) -> bool {
        self.fract() == 0.0
    }
    fn view(store: &Store) -> Option<&[f32]> {
        match store {
            Store::Host(v) => Some(v),
            _ => None,
        }
    }
    fn view_mut(store: &mut Store) -> Option<&mut [f32]> {
        match store {
            Store::Host(v) => Some(v),
            _ => None,
        }
    }
    fn scratch(len: usize) -> Store {
        Store::Host(crate::pool::take(len))
    }
    fn store(values: Vec<f32>) -> Store {
        Store::Host(values)
    }
}

impl Element for f64 {
    const DTYPE: Dtype = Dtype::F64;
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
    const NEG_ZERO: f64 = -0.0;
    #[inline(always)]
    fn from_f32(x: f32) -> f64 {
        f64::from(x)
    }
    #[inline(always)]
    fn constant(_single: f32, double: f64) -> f64 {
        double
    }
    #[inline(always)]
    fn from_usize(n: usize) -> f64 {
        n as f64
    }
    #[inline(always)]
    fn from_f64(x: f64) -> f64 {
        x
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    #[inline(always)]
    fn ln(self) -> f64 {
        f64::ln(self)
    }
    #[inline(always)]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn max(self, other: f64) -> f64 {
        f64::max(self, other)
    }
    #[inline(always)]
    fn abs(self) -> f64 {
        f64::abs(self)
    }
    #[inline(always)]
    fn is_whole(self) -> bool {
        self.fract() == 0.0
    }
    fn view(store: &Store) -> Option<&[f64]> {
        match store {
            Store::HostF64(v) => Some(v),
            _ => None,
        }
    }
    fn view_mut(store: &mut Store) -> Option<&mut [f64]> {
        match store {
            Store::HostF64(v) => Some(v),
            _ => None,
        }
    }
    fn scratch(len: usize) -> Store {
        Store::HostF64(vec![0.0; len])
    }
    fn store(values: Vec<f64>) -> Store {
        Store::HostF64(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_is_the_training_arithmetic_and_f64_the_exact_one() {
        assert_eq!(<f32 as Element>::exp(1.5).to_bits(), exp_approx(1.5).to_bits());
        assert_eq!(<f64 as Element>::exp(1.5), 1.5f64.exp());
        assert_eq!(<f32 as Element>::constant(0.25, 0.3), 0.25);
        assert_eq!(<f64 as Element>::constant(0.25, 0.3), 0.3);
        assert_eq!(<f64 as Element>::from_f32(0.1), f64::from(0.1f32));
        assert_eq!((Dtype::F32.size(), Dtype::F64.size()), (4, 8));
        assert_eq!(Dtype::F64.to_string(), "f64");
        assert!(2.0f64.is_whole() && !2.5f32.is_whole());
    }
}
