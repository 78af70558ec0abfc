//! Matrix products on the GPU: the TFLOP/s the stages reach in their `F`, `I` and `W` ops (the
//! products' floating-point operations over the op's profiled GPU time, which also covers the
//! element-wise kernels and launch gaps) next to cuBLAS alone on the same shapes in the same
//! precision.

use pipesched::workload::{profile_model, Workload};
use pipesched::Result;
use pipesched_schedules::{Kind, StageCosts};
use pipesched_stages::{cuda, Device, Precision};
use serde::Serialize;

use crate::config::Args;

/// One stage op's products.
#[derive(Debug, Clone, Serialize)]
pub struct ProductRow {
    /// Model stage.
    pub stage: usize,
    /// Its device.
    pub device: String,
    /// `F`, `I` or `W`.
    pub op: &'static str,
    /// Floating-point operations of the op's products, per micro-batch.
    pub flops: f64,
    /// TFLOP/s over the op's profiled time.
    pub stage_tflops: f64,
    /// TFLOP/s of cuBLAS alone on the same shapes.
    pub cublas_tflops: f64,
}

/// The rows for the benchmark's model split as 1F1B over `args.p` ranks, or `None` when every
/// rank is on the CPU.
pub fn products(args: &Args) -> Result<Option<Vec<ProductRow>>> {
    let spec = args.workload("none");
    if args.synthetic.is_some() || spec.devices(args.p)?.iter().all(|d| *d == Device::Cpu) {
        return Ok(None);
    }
    let base = Kind::OneFOneB.generate(args.p, 1, args.m)?;
    let Workload::Real { mut model, schedule } = spec.build(&base)? else { return Ok(None) };
    let costs = profile_model(&schedule, &mut model, 7)?;
    let StageCosts::Stages(per_stage) = &costs.costs else { return Ok(None) };
    let precision = model.spec.precision;
    let mut rows = Vec::new();
    for (k, (rs, cost)) in model.stages.iter().zip(per_stage).enumerate() {
        let Device::Cuda(ordinal) = rs.stage().device() else { continue };
        let ops = rs.stage().products(model.batch);
        for ((name, shapes), ms) in ["F", "I", "W"].into_iter().zip(ops).zip([cost.f, cost.i, cost.w]) {
            let flops: f64 = shapes.iter().map(|s| s.flops()).sum();
            let alone =
                cuda::cublas_ms(ordinal, &shapes, precision, 20).map_err(|e| pipesched::Error::Usage(e.to_string()))?;
            rows.push(ProductRow {
                stage: k,
                device: rs.stage().device().to_string(),
                op: name,
                flops,
                stage_tflops: tflops(flops, ms),
                cublas_tflops: tflops(flops, alone),
            });
        }
    }
    Ok(Some(rows))
}

fn tflops(flops: f64, ms: f64) -> f64 {
    if ms > 0.0 {
        flops / (ms * 1e-3) / 1e12
    } else {
        0.0
    }
}

/// The rows as a Markdown table.
pub fn table(rows: &[ProductRow], precision: Precision) -> String {
    let mut out = format!(
        "\nmatrix products on the GPU ({precision}): the stages' ops vs cuBLAS alone on the same shapes\n\n\
         | stage | device | op | GFLOP | stage TFLOP/s | cuBLAS TFLOP/s | stage / cuBLAS |\n|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let share = if r.cublas_tflops > 0.0 { r.stage_tflops / r.cublas_tflops } else { 0.0 };
        out.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.2} | {:.2} | {:.0} % |\n",
            r.stage,
            r.device,
            r.op,
            r.flops / 1e9,
            r.stage_tflops,
            r.cublas_tflops,
            100.0 * share
        ));
    }
    out
}
