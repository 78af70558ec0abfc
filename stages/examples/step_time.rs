//! Times one sequential training step (forward and backward of `m` micro-batches through every
//! stage, then the optimizer) of a preset model on one thread.
//!
//! `cargo run --release -p pipesched-stages --example step_time -- small 8 [stages] [policy] [reps]`
//! prints the median, minimum and maximum of `reps` steps (after one warm-up step), in ms, and
//! the split of the forward and backward into matrix products and everything else: the step's
//! product FLOPs over its time, against the same products run alone through `gemm` (median of
//! `reps` runs of one micro-batch's products, times m).

use std::time::Instant;

use pipesched_stages::{
    sequential_step, GemmShape, ModelSpec, Optimizer, OptimizerSpec, Partition, Policies, Stage, Task, Tensor,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |k: usize, default: &str| args.get(k).cloned().unwrap_or_else(|| default.to_string());
    let model = ModelSpec::load(&arg(0, "small"))?;
    let m: usize = arg(1, "8").parse()?;
    let n: usize = arg(2, "1").parse()?;
    let policies: Policies = arg(3, "none").parse()?;
    let reps: usize = arg(4, "5").parse()?;
    let specs = model.stage_specs(n, &Partition::Balanced, &policies)?;
    let mut stages = Stage::build_all(&model, &specs)?;
    let mut opts =
        stages.iter().map(|s| Optimizer::new(OptimizerSpec::adam(1e-3), s)).collect::<Result<Vec<_>, _>>()?;
    let task = Task::new(&model, 0);
    let rows = model.rows(model.batch).ok_or("batch × seq overflows")?;
    let mut times = vec![];
    let mut split = vec![];
    for step in 0..=reps as u64 {
        let t0 = Instant::now();
        let out = sequential_step(&mut stages, &task, step, m, rows)?;
        let t1 = Instant::now();
        for (o, s) in opts.iter_mut().zip(stages.iter_mut()) {
            o.step(s)?;
        }
        let t2 = Instant::now();
        if step > 0 {
            times.push((t2 - t0).as_secs_f64() * 1e3);
            split.push(((t1 - t0).as_secs_f64() * 1e3, (t2 - t1).as_secs_f64() * 1e3));
        }
        eprintln!("step {step}: loss {:.4}", out.loss);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (fb, opt) = split[times.iter().position(|t| *t == sorted[sorted.len() / 2]).unwrap_or(0)];
    println!(
        "{}: {} layers, {} parameters, m={m}, {} rows per micro-batch, {n} stage(s), {policies}: step median {:.1} ms (min {:.1}, max {:.1}; forward+backward {:.1}, optimizer {:.1})",
        model.name,
        model.num_layers(),
        model.param_count(),
        rows,
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        fb,
        opt
    );
    // One micro-batch's products, every stage, F, I and W, run alone.
    let shapes: Vec<GemmShape> = stages.iter().flat_map(|s| s.products(rows).into_iter().flatten()).collect();
    let flops_per_mb: f64 = shapes.iter().map(GemmShape::flops).sum();
    let mut operands: Vec<(Tensor, Tensor, Tensor)> = shapes
        .iter()
        .map(|g| {
            let ([ar, ac], [br, bc]) = g.operands();
            let fill =
                |r, c, salt: usize| Tensor::from_fn(r, c, move |i, j| ((i * 7 + j * 3 + salt) % 13) as f32 / 13.0);
            (fill(ar, ac, 1), fill(br, bc, 2), Tensor::zeros(g.m, g.n))
        })
        .collect();
    let mut alone = vec![];
    for _ in 0..=reps {
        let t0 = Instant::now();
        for (g, (a, b, out)) in shapes.iter().zip(operands.iter_mut()) {
            g.run(out, a, b)?;
        }
        alone.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    alone.remove(0);
    alone.sort_by(f64::total_cmp);
    let products_ms = alone[alone.len() / 2] * m as f64;
    let flops = flops_per_mb * m as f64;
    println!(
        "products: {:.2} GFLOP per step; alone through gemm {:.1} ms ({:.1} GFLOP/s); in the step {:.1} GFLOP/s of forward+backward time ({:.0} % of gemm alone); forward+backward {:.1} ms = products {:.1} ms ({:.0} %) + everything else {:.1} ms ({:.0} %)",
        flops / 1e9,
        products_ms,
        flops / products_ms / 1e6,
        flops / fb / 1e6,
        100.0 * products_ms / fb,
        fb,
        products_ms,
        100.0 * products_ms / fb,
        fb - products_ms,
        100.0 * (fb - products_ms) / fb
    );
    Ok(())
}
