//! The profiler: measures every stage's `t_F`, `t_I`, `t_W`, `t_R` (warm-up, then the median of
//! several runs) and the bytes each op keeps, and the cross-rank hand-off latency, producing a
//! per-stage [`CostModel`] in milliseconds that the simulator reads.
//!
//! Stages are driven one at a time on the calling thread, one micro-batch at a time, so every
//! time is the op alone: no other stage competes for the core. Profiling runs whole training
//! micro-steps, so it leaves gradients accumulated in the stages: reset them before training.

use std::time::{Duration, Instant};

use pipesched_schedules::{CostModel, Schedule, StageCost, StageCosts};

use crate::exec::StageWork;
use crate::{Error, Result};

/// How much to measure.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    /// Unmeasured runs first.
    pub warmup: usize,
    /// Measured runs; the median is kept.
    pub reps: usize,
    /// Which stages run `R` (recompute) before their backward.
    pub recompute: Vec<bool>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn fail(stage: usize, op: &str, e: impl std::fmt::Display) -> Error {
    Error::Stage { rank: 0, step: 0, action: format!("profiling stage {stage} {op}"), message: e.to_string() }
}

/// Times `f` in milliseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64() * 1e3)
}

/// One op's samples per stage.
#[derive(Default, Clone)]
struct Samples {
    f: Vec<f64>,
    r: Vec<f64>,
    i: Vec<f64>,
    w: Vec<f64>,
}

/// Profiles `stages` (one per model stage of `schedule`) and returns their cost model.
pub fn profile<S: StageWork>(schedule: &Schedule, stages: &mut [S], opts: &ProfileOptions) -> Result<CostModel> {
    let n = stages.len();
    if n != schedule.stages() || opts.recompute.len() != n {
        return Err(Error::Usage(format!(
            "profiling needs one stage and one recompute flag per model stage: the schedule has {}, got {} stages and {} flags",
            schedule.stages(),
            n,
            opts.recompute.len()
        )));
    }
    if opts.reps == 0 {
        return Err(Error::Usage("profiling needs at least one measured run".into()));
    }
    let mut samples = vec![Samples::default(); n];
    let mut bytes = vec![(0u64, 0u64, 0u64); n];
    for run in 0..opts.warmup + opts.reps {
        let keep = run >= opts.warmup;
        let mb = run % schedule.m;
        // Forward through every stage, recording what each keeps.
        let mut x = None;
        for (s, stage) in stages.iter_mut().enumerate() {
            let before = stage.held_bytes();
            let (out, t) = timed(|| stage.forward(mb, x.take()));
            x = out.map_err(|e| fail(s, "forward", e))?;
            let after_f = stage.held_bytes();
            let mut t_r = 0.0;
            if opts.recompute[s] {
                let (res, t) = timed(|| stage.recompute(mb));
                res.map_err(|e| fail(s, "recompute", e))?;
                t_r = t;
            }
            let after_r = stage.held_bytes();
            if keep {
                samples[s].f.push(t);
                samples[s].r.push(t_r);
                bytes[s].0 = after_f - before;
                bytes[s].1 = after_r - after_f;
            }
        }
        // Backward, input gradients down the stages, then each stage's weight gradient.
        let mut g = None;
        for s in (0..n).rev() {
            let stage = &mut stages[s];
            let (out, t) = timed(|| stage.backward_input(mb, g.take()));
            g = out.map_err(|e| fail(s, "input-gradient backward", e))?;
            let after_i = stage.held_bytes();
            let (res, t_w) = timed(|| stage.backward_weight(mb));
            res.map_err(|e| fail(s, "weight-gradient backward", e))?;
            if keep {
                samples[s].i.push(t);
                samples[s].w.push(t_w);
                bytes[s].2 = after_i - stage.held_bytes();
            }
        }
    }
    let costs = samples
        .into_iter()
        .zip(&bytes)
        .zip(&opts.recompute)
        .map(|((sm, &(act, re, w)), &rc)| {
            let f = median(sm.f);
            StageCost {
                f,
                i: median(sm.i),
                w: median(sm.w),
                // A stage that does not checkpoint has no R to time; t_R defaults to t_F.
                r: Some(if rc { median(sm.r) } else { f }),
                act_bytes: act,
                recompute_bytes: re,
                w_bytes: w,
            }
        })
        .collect();
    let mut statics = vec![0u64; schedule.p];
    for (s, stage) in stages.iter().enumerate() {
        statics[schedule.rank_of(s)] += stage.static_bytes();
    }
    Ok(CostModel {
        costs: StageCosts::Stages(costs),
        latency: handoff_latency_ms(),
        static_bytes: statics,
        time_unit: "ms".into(),
    })
}

/// The one-way latency of handing a message to a parked thread over a bounded crossbeam
/// channel: half the median round trip of 200 ping-pongs, in milliseconds.
pub fn handoff_latency_ms() -> f64 {
    let (to_tx, to_rx) = crossbeam_channel::bounded::<u64>(1);
    let (back_tx, back_rx) = crossbeam_channel::bounded::<u64>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(x) = to_rx.recv() {
            if back_tx.send(x).is_err() {
                break;
            }
        }
    });
    let mut rtts = Vec::with_capacity(200);
    for k in 0..220u64 {
        // A short pause so the echo thread parks, as a waiting worker does.
        std::thread::sleep(Duration::from_micros(200));
        let t = Instant::now();
        if to_tx.send(k).is_err() || back_rx.recv().is_err() {
            break;
        }
        if k >= 20 {
            rtts.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    drop(to_tx);
    let _ = echo.join();
    median(rtts) / 2.0
}
