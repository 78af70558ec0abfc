//! `--loss-scale` and `--loss-scale-growth`: how `run` scales the loss of a model trained in
//! `mixed-f16` (dynamic loss scaling, `stages/src/loss_scale.rs`), and the warning for training
//! in f16 without it.
//!
//! Invariant: the flags are refused for a precision that does not scale its loss, so what they
//! say is what the run does.

use clap::Args;
use pipesched_stages::{LossScale, Precision};

use crate::{Error, Result};

/// The loss scaling of a `mixed-f16` run.
#[derive(Debug, Clone, Args)]
pub struct LossScaleArgs {
    /// mixed-f16's dynamic loss scaling: the scale it starts from, a power of two (default
    /// 65536), or `none` to train unscaled (small gradients then flush to zero in f16 and large
    /// ones become infinite, with no step skipped: a warning says so).
    #[arg(long, value_name = "SCALE|none", value_parser = loss_scale_start)]
    pub loss_scale: Option<LossScaleStart>,
    /// Clean steps in a row after which dynamic loss scaling doubles the scale (default 2000).
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u32).range(1..))]
    pub loss_scale_growth: Option<u32>,
}

/// `--loss-scale`: the scale dynamic scaling starts from, or `None` for no scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaleStart(pub Option<f32>);

/// `--loss-scale`: `none`, or a positive power of two.
fn loss_scale_start(text: &str) -> std::result::Result<LossScaleStart, String> {
    if text == "none" {
        return Ok(LossScaleStart(None));
    }
    match text.parse::<f32>() {
        Ok(x) if LossScale::is_power_of_two(x) => Ok(LossScaleStart(Some(x))),
        _ => Err(format!("`{text}` is not a positive power of two (e.g. 65536) or `none`")),
    }
}

impl LossScaleArgs {
    /// The loss scaling these flags ask for a model trained in `precision` (`None`: the
    /// precision's own; synthetic stages have `None` precision); an error for a precision that
    /// does not scale its loss.
    pub fn scale(&self, precision: Option<Precision>) -> Result<Option<LossScale>> {
        if self.loss_scale.is_none() && self.loss_scale_growth.is_none() {
            return Ok(None);
        }
        match precision {
            Some(p) if p.scales_loss() => {}
            other => {
                let what = other.map_or("synthetic stages".to_string(), |p| format!("this run trains in {p}"));
                return Err(Error::Usage(format!(
                    "--loss-scale and --loss-scale-growth set mixed-f16's loss scaling, and {what}, which needs none; drop them, or train with --precision mixed-f16"
                )));
            }
        }
        let growth = self.loss_scale_growth.unwrap_or(LossScale::GROWTH_INTERVAL);
        Ok(Some(match self.loss_scale {
            Some(LossScaleStart(None)) => LossScale::fixed(),
            Some(LossScaleStart(Some(start))) => LossScale::dynamic(start, growth)?,
            None => LossScale::dynamic(LossScale::INITIAL, growth)?,
        }))
    }

    /// What a run in `precision` with these flags risks, to print before it starts: training in
    /// f16 without loss scaling.
    pub fn warnings(&self, precision: Option<Precision>) -> Vec<String> {
        let mut out = Vec::new();
        if precision == Some(Precision::F16) {
            out.push(
                "--precision f16 rounds every product's operands and result to f16 without loss scaling: results beyond ±65504 overflow to infinity and small gradients flush to zero, and nothing skips such a step; --precision mixed-f16 scales the loss dynamically, and bf16 has f32's range".to_string(),
            );
        }
        if precision == Some(Precision::MixedF16) && self.loss_scale == Some(LossScaleStart(None)) {
            out.push(
                "--loss-scale none: mixed-f16 stores gradients in f16 unscaled, so gradients below 2^-24 flush to zero and any above 65504 become infinite, and no step is skipped for it; leave --loss-scale out to scale dynamically".to_string(),
            );
        }
        out
    }
}
