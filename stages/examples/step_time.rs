//! Times one sequential training step (forward and backward of `m` micro-batches through every
//! stage, then the optimizer) of a preset model on one thread.
//!
//! `cargo run --release -p pipesched-stages --example step_time -- small 8 [stages] [policy] [reps]`
//! prints the median, minimum and maximum of `reps` steps (after one warm-up step), in ms.

use std::time::Instant;

use pipesched_stages::{sequential_step, ModelSpec, Optimizer, OptimizerSpec, Partition, Policies, Stage, Task};

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
    Ok(())
}
