//! Matrix products on the GPU: the TFLOP/s the stages reach in their `F`, `I` and `W` ops (the
//! products' floating-point operations over the op's profiled GPU time, which also covers the
//! element-wise kernels and launch gaps) next to cuBLAS alone on the same shapes in the same
//! precision.

use pipesched::exec::Transport;
use pipesched::workload::{Demand, Layout};
use pipesched::Result;
use pipesched_schedules::StageCosts;
use pipesched_stages::{cuda, Device, Policies, Precision};
use serde::Serialize;

use crate::config::Args;

/// One stage op's products.
#[derive(Debug, Clone, Serialize)]
pub struct ProductRow {
    /// Model stage.
    pub stage: usize,
    /// Its device.
    pub device: String,
    /// The products' operand format.
    pub precision: Precision,
    /// `F`, `I` or `W`.
    pub op: &'static str,
    /// Floating-point operations of the op's products, per micro-batch.
    pub flops: f64,
    /// TFLOP/s over the op's profiled time.
    pub stage_tflops: f64,
    /// TFLOP/s of cuBLAS alone on the same shapes.
    pub cublas_tflops: f64,
}

/// The rows for the benchmark's model over `-p` ranks, one chunk each, no recompute; `None` when
/// every rank is on the CPU or the stages are synthetic.
pub fn products(args: &Args) -> Result<Option<Vec<ProductRow>>> {
    if args.model.model.is_synthetic() || args.model.devices.all_cpu() {
        return Ok(None);
    }
    let layout = Layout::looped(args.shape.layout.p, 1);
    let demand = Demand::profiling(layout.stages());
    let mut workload =
        args.model.spec()?.build(&layout, &Policies::all(Default::default()), &demand, &Transport::InProcess)?;
    let costs = workload.profile(7)?;
    let StageCosts::Stages(per_stage) = &costs.costs else { return Ok(None) };
    let mut rows = Vec::new();
    for (products, cost) in workload.products().into_iter().zip(per_stage) {
        let Device::Cuda(ordinal) = products.device else { continue };
        for ((name, shapes), ms) in ["F", "I", "W"].into_iter().zip(products.ops).zip([cost.f, cost.i, cost.w]) {
            let flops: f64 = shapes.iter().map(|s| s.flops()).sum();
            let alone = cuda::cublas_ms(ordinal, &shapes, products.precision, 20)?;
            rows.push(ProductRow {
                stage: products.stage,
                device: products.device.to_string(),
                precision: products.precision,
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
pub fn table(rows: &[ProductRow]) -> String {
    let precision = rows.first().map_or(Precision::F32, |r| r.precision);
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
