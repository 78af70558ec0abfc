//! `Precision`: the number formats a model trains in — of its matrix products, and of what it
//! stores between ops.
//!
//! Under `bf16` or `f16` every product of a stage rounds both operands to the format, multiplies
//! with `f32` accumulation, and rounds the result to the format (cuBLAS `GemmEx` with 16-bit
//! inputs and outputs and 32-bit compute on a GPU; the same rounding around the `f32` product on
//! the CPU — exact there, since the product of two 16-bit values fits an `f32`). Everything else
//! (element-wise ops, norms, losses, the activations kept for the backward, gradients and
//! optimizer state) stays `f32`, so the byte ledger is the same in every precision.
//!
//! Under `mixed-bf16` or `mixed-f16` (mixed-precision training, Micikevicius et al., ICLR 2018)
//! the products round as under `bf16`/`f16`, and in addition everything a stage keeps between
//! ops is *stored* in the 16-bit format ([`Format`], two bytes an element): the parameters,
//! the activations `F` keeps for the backward and sends to the next stage, the input gradients
//! `I` keeps and sends back, and the accumulated parameter gradients. The optimizer keeps `f32`
//! master weights and `f32` state and writes the parameters back rounded. Kernels widen their
//! operands to `f32` and compute there (as GPUs do with 16-bit storage). Exact values — token
//! ids, class targets, the loss's own state — stay `f32`. Under `mixed-f16` the loss is scaled
//! before the backward ([`LossScale`](crate::LossScale)) so small gradients survive f16's range.
//!
//! Rounding is to nearest even, with the `half` crate's bits on the CPU and the same bits from
//! the conversion kernels on a GPU. This file is the one place that says, per precision, which
//! format products round to and which format a stage stores in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The number formats of a model's matrix products and of what its stages store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Precision {
    /// IEEE single precision throughout.
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// bfloat16 operands and results (8-bit significand), `f32` accumulation.
    #[serde(rename = "bf16")]
    Bf16,
    /// IEEE half operands and results (11-bit significand), `f32` accumulation.
    #[serde(rename = "f16")]
    F16,
    /// Mixed-precision training in bfloat16: bf16 products, bf16 storage, `f32` master weights.
    #[serde(rename = "mixed-bf16")]
    MixedBf16,
    /// Mixed-precision training in IEEE half: f16 products, f16 storage, `f32` master weights,
    /// dynamic loss scaling.
    #[serde(rename = "mixed-f16")]
    MixedF16,
}

/// A 16-bit storage format: what a mixed-precision stage keeps its tensors in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// bfloat16: `f32`'s range, 8-bit significand.
    Bf16,
    /// IEEE half: largest finite 65504, 11-bit significand.
    F16,
}

impl Format {
    /// The 16 bits of `x` rounded to nearest even.
    #[inline]
    pub fn narrow(self, x: f32) -> u16 {
        match self {
            Format::Bf16 => half::bf16::from_f32(x).to_bits(),
            Format::F16 => half::f16::from_f32(x).to_bits(),
        }
    }

    /// The value of 16 bits of this format, exactly.
    #[inline]
    pub fn widen(self, bits: u16) -> f32 {
        match self {
            Format::Bf16 => half::bf16::from_bits(bits).to_f32(),
            Format::F16 => half::f16::from_bits(bits).to_f32(),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Bf16 => "bf16",
            Format::F16 => "f16",
        })
    }
}

impl Precision {
    /// Every precision, in the order the help text lists them.
    pub const ALL: [Precision; 5] =
        [Precision::F32, Precision::Bf16, Precision::F16, Precision::MixedBf16, Precision::MixedF16];

    /// The format matrix-product operands and results round to (`None`: `f32`).
    pub fn products(self) -> Option<Format> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 | Precision::MixedBf16 => Some(Format::Bf16),
            Precision::F16 | Precision::MixedF16 => Some(Format::F16),
        }
    }

    /// The format stages store parameters, activations and gradients in (`None`: `f32`).
    pub fn storage(self) -> Option<Format> {
        match self {
            Precision::MixedBf16 => Some(Format::Bf16),
            Precision::MixedF16 => Some(Format::F16),
            Precision::F32 | Precision::Bf16 | Precision::F16 => None,
        }
    }

    /// Whether this is mixed-precision training (16-bit storage, `f32` master weights).
    pub fn is_mixed(self) -> bool {
        self.storage().is_some()
    }

    /// Bytes of one stored parameter, activation or gradient element: 2 under mixed precision,
    /// else 4.
    pub fn stored_bytes(self) -> u64 {
        if self.is_mixed() {
            2
        } else {
            4
        }
    }

    /// Units of [`stored_bytes`](Precision::stored_bytes) an exact `f32` value (a token id, a
    /// target, the loss's state) takes: 1, or 2 under mixed precision. What the byte rule
    /// counts such values in.
    pub fn units_per_f32(self) -> usize {
        (4 / self.stored_bytes()) as usize
    }

    /// The mixed precision that stores in `format`, or `f32` for `None`: what a stage whose
    /// layers store in `format` trains in, as far as its bytes go.
    pub fn of_storage(format: Option<Format>) -> Precision {
        match format {
            None => Precision::F32,
            Some(Format::Bf16) => Precision::MixedBf16,
            Some(Format::F16) => Precision::MixedF16,
        }
    }

    /// Whether the loss is scaled dynamically before the backward (`mixed-f16` only: bf16 has
    /// `f32`'s range and needs no scaling).
    pub fn scales_loss(self) -> bool {
        self == Precision::MixedF16
    }

    /// `x` rounded to the products' format and widened back to `f32`.
    pub fn round(self, x: f32) -> f32 {
        match self.products() {
            None => x,
            Some(f) => f.widen(f.narrow(x)),
        }
    }

    /// Every value of `v` rounded in place.
    pub(crate) fn round_all(self, v: &mut [f32]) {
        if self.products().is_some() {
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
            Precision::MixedBf16 => "mixed-bf16",
            Precision::MixedF16 => "mixed-f16",
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
            "mixed-bf16" => Ok(Precision::MixedBf16),
            "mixed-f16" | "mixed-fp16" => Ok(Precision::MixedF16),
            _ => Err(Error::Spec(format!("precision `{s}`: write f32, bf16, f16, mixed-bf16 or mixed-f16"))),
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
        assert_eq!(Precision::MixedF16.round(70000.0), f32::INFINITY);
        assert_eq!(Precision::F32.round(0.1), 0.1);
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), p);
        }
        assert!("f8".parse::<Precision>().unwrap_err().to_string().contains("mixed-bf16 or mixed-f16"));
    }

    #[test]
    fn storage_formats_and_their_bytes() {
        assert_eq!(Precision::MixedBf16.storage(), Some(Format::Bf16));
        assert_eq!(Precision::MixedF16.products(), Some(Format::F16));
        assert_eq!(Precision::Bf16.storage(), None, "bf16 rounds products only");
        let bytes: Vec<u64> = Precision::ALL.iter().map(|p| p.stored_bytes()).collect();
        assert_eq!(bytes, [4, 4, 4, 2, 2]);
        assert!(Precision::MixedF16.scales_loss() && !Precision::MixedBf16.scales_loss());
        for f in [Format::Bf16, Format::F16] {
            assert_eq!(f.widen(f.narrow(1.5)), 1.5);
            assert_eq!(f.widen(f.narrow(-0.0)).to_bits(), (-0.0f32).to_bits());
        }
        assert_eq!(Format::F16.widen(Format::F16.narrow(1e5)), f32::INFINITY);
        assert_eq!(Format::Bf16.widen(Format::Bf16.narrow(1e5)), 99840.0);
    }
}
