//! `Precision`: the number format of matrix-product operands and results.
//!
//! Under `bf16` or `f16` every product of a stage rounds both operands to the format, multiplies
//! with `f32` accumulation, and rounds the result to the format (cuBLAS `GemmEx` with 16-bit
//! inputs and outputs and 32-bit compute on a GPU; the same rounding around the `f32` product on
//! the CPU — exact there, since the product of two 16-bit values fits an `f32`). Everything else
//! (element-wise ops, norms, losses, the activations kept for the backward, gradients and
//! optimizer state) stays `f32`, so the byte ledger is the same in every precision.
//! Rounding is to nearest even, with the `half` crate's bits on the CPU and the same bits from
//! the conversion kernels on a GPU.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The format of matrix-product operands and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// IEEE single precision throughout.
    #[default]
    F32,
    /// bfloat16 operands and results (8-bit significand), `f32` accumulation.
    Bf16,
    /// IEEE half operands and results (11-bit significand), `f32` accumulation.
    F16,
}

impl Precision {
    /// `x` rounded to this format and widened back to `f32`.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Bf16 => half::bf16::from_f32(x).to_f32(),
            Precision::F16 => half::f16::from_f32(x).to_f32(),
        }
    }

    /// Every value of `v` rounded in place.
    pub(crate) fn round_all(self, v: &mut [f32]) {
        if self != Precision::F32 {
            v.iter_mut().for_each(|x| *x = self.round(*x));
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Precision> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            _ => Err(Error::Spec(format!("precision `{s}`: write f32, bf16 or f16"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_and_parses() {
        assert_eq!(Precision::Bf16.round(1.0 + 1.0 / 256.0), 1.0, "a tie goes to the even neighbour");
        assert_eq!(Precision::Bf16.round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(Precision::F16.round(1.0 + 1.0 / 4096.0), 1.0);
        assert_eq!(Precision::F16.round(70000.0), f32::INFINITY, "f16 overflows past 65504");
        assert_eq!(Precision::F32.round(0.1), 0.1);
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert!("f8".parse::<Precision>().unwrap_err().to_string().contains("f32, bf16 or f16"));
    }
}
