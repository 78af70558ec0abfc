//! Times one sequential training step (forward and backward of `m` micro-batches through every
//! stage, then the optimizer) of a preset model on one thread.
//!
//! `cargo run --release -p pipesched-stages --example step_time -- small 8 [stages] [policy] [reps]`
//! prints the median, minimum and maximum of `reps` steps (after one warm-up step), in ms, and
//! the split of the forward and backward into matrix products and everything else: the step's
//! product FLOPs over its time, and the same products run alone through `gemm` right after each
//! step (on a shared machine, a step and its products alone see the same load). The products
//! are those of `F`, `I` and `W`: under a policy that recomputes, `R`'s products fall into
//! "everything else", so the split means most under `none`.
//!
//! Each phase is timed twice: by the wall clock, and by the CPU time this thread ran
//! (`/proc/thread-self/schedstat`, Linux), which on a shared machine leaves out the time other
//! processes took the core. Both splits are printed — the second only when every phase ran for
//! at least 200 ms, since that counter moves at scheduler ticks.

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
    let reps: usize = arg(4, "5").parse::<usize>()?.max(1);
    let specs = model.stage_specs(n, &Partition::Balanced, &policies)?;
    let mut stages = Stage::build_all(&model, &specs)?;
    let mut opts =
        stages.iter().map(|s| Optimizer::new(OptimizerSpec::adam(1e-3), s)).collect::<Result<Vec<_>, _>>()?;
    let task = Task::new(&model, 0);
    let rows = model.rows(model.batch).ok_or("batch × seq overflows")?;
    // One micro-batch's products, every stage, F, I and W, to run alone after each step.
    let shapes: Vec<GemmShape> = stages.iter().flat_map(|s| s.products(rows).into_iter().flatten()).collect();
    let flops = shapes.iter().map(GemmShape::flops).sum::<f64>() * m as f64;
    let mut operands: Vec<(Tensor, Tensor, Tensor)> = shapes
        .iter()
        .map(|g| {
            let ([ar, ac], [br, bc]) = g.operands();
            let fill =
                |r, c, salt: usize| Tensor::from_fn(r, c, move |i, j| ((i * 7 + j * 3 + salt) % 13) as f32 / 13.0);
            (fill(ar, ac, 1), fill(br, bc, 2), Tensor::zeros(g.m, g.n))
        })
        .collect();
    // Per measured step: (step, forward+backward, optimizer, the step's products alone), in ms.
    let mut runs: Vec<[f64; 4]> = vec![];
    // The same on this thread's CPU time, where the system reports it.
    let mut cpu_runs: Vec<[f64; 4]> = vec![];
    for step in 0..=reps as u64 {
        let (t0, c0) = (Instant::now(), thread_cpu_ms());
        let out = sequential_step(&mut stages, &task, step, m, rows)?;
        let (t1, c1) = (Instant::now(), thread_cpu_ms());
        for (o, s) in opts.iter_mut().zip(stages.iter_mut()) {
            o.step(s)?;
        }
        let (t2, c2) = (Instant::now(), thread_cpu_ms());
        for _ in 0..m {
            for (g, (a, b, out)) in shapes.iter().zip(operands.iter_mut()) {
                g.run(out, a, b)?;
            }
        }
        let (t3, c3) = (Instant::now(), thread_cpu_ms());
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        if step > 0 {
            runs.push([ms(t0, t2), ms(t0, t1), ms(t1, t2), ms(t2, t3)]);
            if let (Some(c0), Some(c1), Some(c2), Some(c3)) = (c0, c1, c2, c3) {
                cpu_runs.push([c2 - c0, c1 - c0, c2 - c1, c3 - c2]);
            }
        }
        eprintln!("step {step}: loss {:.4}", out.loss);
    }
    let (step_ms, min, max) = median(&runs, &|r| r[0]);
    let (fb, _, _) = median(&runs, &|r| r[1]);
    let (opt, _, _) = median(&runs, &|r| r[2]);
    println!(
        "{}: {} layers, {} parameters, m={m}, {} rows per micro-batch, {n} stage(s), {policies}: step median {:.1} ms (min {:.1}, max {:.1}; forward+backward {:.1}, optimizer {:.1})",
        model.name,
        model.num_layers(),
        model.param_count(),
        rows,
        step_ms,
        min,
        max,
        fb,
        opt
    );
    println!("products: {:.2} GFLOP per step", flops / 1e9);
    print_split("on the wall clock", &runs, flops);
    // The CPU-time counter advances at scheduler ticks (a few ms): only long phases read true.
    if cpu_runs.len() == runs.len() && cpu_runs.iter().all(|r| r[1].min(r[3]) >= MIN_CPU_PHASE_MS) {
        print_split("on this thread's CPU time", &cpu_runs, flops);
    }
    Ok(())
}

/// The shortest phase whose CPU time is printed, in ms.
const MIN_CPU_PHASE_MS: f64 = 200.0;

/// The median, least and most of `f` over `runs` (at least one).
fn median(runs: &[[f64; 4]], f: &dyn Fn(&[f64; 4]) -> f64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The medians over `runs` (per step: step, forward+backward, optimizer, products alone, in ms)
/// of the forward and backward's time, its products run alone, and their share of it.
fn print_split(clock: &str, runs: &[[f64; 4]], flops: f64) {
    let (fb, _, _) = median(runs, &|r| r[1]);
    let (alone, _, _) = median(runs, &|r| r[3]);
    // The share of each step's forward and backward its products take, run alone right after it.
    let (share, lo, hi) = median(runs, &|r| r[3] / r[1]);
    println!(
        "{clock}: forward+backward {fb:.1} ms ({:.1} GFLOP/s of products); products alone through gemm right after each step {alone:.1} ms ({:.1} GFLOP/s): {:.0} % of the forward+backward (median over steps; {:.0}–{:.0} %), everything else {:.0} %",
        flops / fb / 1e6,
        flops / alone / 1e6,
        100.0 * share,
        100.0 * lo,
        100.0 * hi,
        100.0 * (1.0 - share)
    );
}

/// The CPU time this thread has run, in ms: the first field of `/proc/thread-self/schedstat`
/// (nanoseconds); `None` where the system does not report it.
fn thread_cpu_ms() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e6)
}
