//! [`LossScale`]: dynamic loss scaling for `mixed-f16` training (Micikevicius et al., 2018).
//!
//! f16's smallest normal value is 2⁻¹⁴ and its largest 65504: small gradients underflow to
//! zero unless the loss is multiplied by a large scale before the backward (so every gradient
//! is that many times larger), and divided out in `f32` before the optimizer. The scale starts
//! high; a step whose gradients hold an infinity or a NaN anywhere is skipped (the parameters
//! and the optimizer state are left as they were) and the scale halved; after
//! `growth_interval` clean steps in a row it is doubled. bf16 has `f32`'s range, so
//! `mixed-bf16` (and every other precision) runs with a fixed scale of 1 and never skips.
//!
//! Invariants: the scale is always a power of two (so scaling and unscaling are exact, and a
//! step's gradients do not depend on the scale beyond overflow and underflow); the decision to
//! skip is made once per step over every stage's gradients, so all stages skip together.

use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::stage::Stage;

/// A loss scale and the rule that changes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScale {
    scale: f32,
    /// Clean steps that double the scale; `None`: a fixed scale.
    growth_interval: Option<u32>,
    /// Clean steps since the scale last changed.
    clean: u32,
    /// Steps skipped so far.
    skipped: u64,
}

/// What happened to a step's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleVerdict {
    /// The gradients were finite: the optimizer stepped.
    Applied,
    /// A gradient overflowed: the step was skipped and the scale halved.
    Skipped,
}

impl LossScale {
    /// The scale `mixed-f16` starts from: 2¹⁶.
    pub const INITIAL: f32 = 65536.0;
    /// Clean steps before the scale doubles, by default.
    pub const GROWTH_INTERVAL: u32 = 2000;

    /// The scaling `precision` trains with: dynamic from [`INITIAL`](LossScale::INITIAL),
    /// doubling every `growth_interval` clean steps, under `mixed-f16`; a fixed 1 otherwise.
    pub fn for_precision(precision: Precision, growth_interval: u32) -> Result<LossScale> {
        if precision.scales_loss() {
            LossScale::dynamic(LossScale::INITIAL, growth_interval)
        } else {
            Ok(LossScale::fixed())
        }
    }

    /// Whether `x` can be a loss scale: a positive, finite power of two (normal, so scaling and
    /// unscaling are exact).
    pub fn is_power_of_two(x: f32) -> bool {
        x.is_finite() && x > 0.0 && x.to_bits() & 0x007f_ffff == 0 && x.to_bits() >> 23 != 0
    }

    /// `log2` of a scale, exactly (`k` for `2^k`).
    pub fn exponent(scale: f32) -> i32 {
        ((scale.to_bits() >> 23) & 0xff) as i32 - 127
    }

    /// A fixed scale of 1: no scaling, no skipped steps.
    pub fn fixed() -> LossScale {
        LossScale { scale: 1.0, growth_interval: None, clean: 0, skipped: 0 }
    }

    /// Dynamic scaling from `initial` (a positive power of two), doubling after
    /// `growth_interval` (≥ 1) clean steps.
    pub fn dynamic(initial: f32, growth_interval: u32) -> Result<LossScale> {
        if !LossScale::is_power_of_two(initial) || growth_interval == 0 {
            return Err(Error::Optimizer(format!(
                "loss scale {initial} growing every {growth_interval} steps: give a positive power of two and at least 1 step"
            )));
        }
        Ok(LossScale { scale: initial, growth_interval: Some(growth_interval), clean: 0, skipped: 0 })
    }

    /// The scale the next backward runs with.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Whether the scale changes with overflows.
    pub fn is_dynamic(&self) -> bool {
        self.growth_interval.is_some()
    }

    /// Steps skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Decides a step whose gradients `overflowed` (held an infinity or a NaN) and moves the
    /// scale: a dynamic scale skips the step and halves on overflow, and doubles after
    /// `growth_interval` clean steps in a row; a fixed one always applies.
    pub fn after_step(&mut self, overflowed: bool) -> ScaleVerdict {
        let Some(interval) = self.growth_interval else { return ScaleVerdict::Applied };
        if overflowed {
            // Halving stays a normal power of two down to 2⁻¹²⁶.
            if self.scale > f32::MIN_POSITIVE {
                self.scale /= 2.0;
            }
            self.clean = 0;
            self.skipped += 1;
            return ScaleVerdict::Skipped;
        }
        self.clean += 1;
        if self.clean >= interval {
            self.clean = 0;
            if (self.scale * 2.0).is_finite() {
                self.scale *= 2.0;
            }
        }
        ScaleVerdict::Applied
    }
}

impl Stage {
    /// Whether any accumulated gradient holds an infinity or a NaN (read from the stage's
    /// device): what skips a step under dynamic loss scaling.
    pub fn grads_overflowed(&self) -> Result<bool> {
        for g in self.grads() {
            if g.values()?.iter().any(|x| !x.is_finite()) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_and_doubles_after_the_interval() {
        let mut s = LossScale::dynamic(8.0, 3).unwrap();
        assert_eq!(s.after_step(true), ScaleVerdict::Skipped);
        assert_eq!((s.scale(), s.skipped()), (4.0, 1));
        for _ in 0..2 {
            assert_eq!(s.after_step(false), ScaleVerdict::Applied);
            assert_eq!(s.scale(), 4.0);
        }
        assert_eq!(s.after_step(false), ScaleVerdict::Applied);
        assert_eq!(s.scale(), 8.0, "doubled after 3 clean steps");
        // An overflow restarts the count.
        s.after_step(false);
        s.after_step(true);
        s.after_step(false);
        s.after_step(false);
        assert_eq!(s.scale(), 4.0);
        let mut fixed = LossScale::for_precision(Precision::MixedBf16, 3).unwrap();
        assert_eq!(fixed.after_step(true), ScaleVerdict::Applied);
        assert_eq!((fixed.scale(), fixed.is_dynamic()), (1.0, false));
        assert_eq!(LossScale::for_precision(Precision::MixedF16, 2000).unwrap().scale(), 65536.0);
        assert!(LossScale::dynamic(3.0, 10).is_err() && LossScale::dynamic(4.0, 0).is_err());
    }
}
