//! The profiler: measures every stage's `t_F`, `t_I`, `t_W`, `t_R` (warm-up, then the median of
//! several runs) and the bytes each op keeps, and the cross-rank hand-off latency, producing a
//! per-stage [`CostModel`] in milliseconds that the simulator reads; and on request
//! ([`profile_layers`]) every layer of every stage alone, the records a stage's cost is composed
//! from for any partition and recompute policy.
//!
//! Every rank's stages (and then its layers) are timed side by side, one thread per rank, as the
//! pipeline runs them.
//! Profiling runs whole training micro-steps, so it leaves gradients accumulated in the stages:
//! begin a new step before training on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pipesched_schedules::{CostModel, StageCost, StageCosts};

use pipesched_stages::{LayerCost, LossCost};

use crate::exec::{StageLayers, StageWork, Transport};
use crate::workload::Layout;
use crate::{Error, Result};

/// Every layer's costs, in model order, and the loss's.
pub type ModelLayers = (Vec<LayerCost>, LossCost);

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

/// The median of `xs`, 0 for none.
fn median(xs: Vec<f64>) -> f64 {
    crate::report::median(xs).unwrap_or(0.0)
}

fn fail(stage: usize, op: &str, e: impl std::fmt::Display) -> Error {
    Error::Stage { rank: 0, step: 0, action: format!("profiling stage {stage} {op}"), message: e.to_string() }
}

/// One op's samples per stage.
#[derive(Default, Clone)]
struct Samples {
    f: Vec<f64>,
    r: Vec<f64>,
    i: Vec<f64>,
    w: Vec<f64>,
}

/// Profiles `stages` — every model stage of `layout` (which a schedule gives too), or with
/// ranks as processes this process's rank's ([`Transport::held`]), in model order — and returns
/// their cost model: every stage's, on every process (each profiles its own stages, and the
/// results are gathered).
///
/// First one pass pushes micro-batch 0 through every stage and back, recording the bytes each
/// op keeps and each stage's input and incoming gradient (with ranks as processes, each hands
/// what it sends to the next rank through `transport`). Then every rank's stages are timed at
/// once, one thread per rank — each replaying its recorded inputs — so the times include what
/// ranks running side by side cost each other (shared caches, memory bandwidth, a shared core),
/// as they do in the pipeline; with ranks as threads, a rank done measuring runs its ops again,
/// unmeasured, until the last rank is done, so no rank's ops are timed alone (ranks as processes
/// start together, after a barrier, but a process done early does not keep busy). `prepare(stage, run)` is called before every run of a stage to
/// make it ready for micro-batch 0 (real stages begin a fresh one-micro-batch step); `run` is 0
/// for the recording pass and the unmeasured runs after a rank's measurements.
///
/// The hand-off latency is measured on the transport: between threads ([`handoff_latency_ms`]),
/// or between processes with the bandwidth too ([`Transport::measure_network`]).
pub fn profile<S>(
    layout: impl Into<Layout>,
    stages: &mut [S],
    opts: &ProfileOptions,
    prepare: impl Fn(&mut S, usize) -> Result<()> + Sync,
    transport: &Transport,
) -> Result<CostModel>
where
    S: StageWork,
    S::Payload: Clone + Sync,
{
    Ok(profile_stages(layout.into(), stages, opts, &prepare, transport, false)?.0)
}

/// [`profile`], then every layer of every stage alone ([`StageWork::layer_costs`]), on the
/// inputs and gradients the recording pass kept: every rank's layers at once, one thread per
/// rank, as its stages were timed (so the layers' times include what ranks running side by side
/// cost each other too), a rank's stages one after another (with ranks as processes, each
/// process its own stages; every process gets them all). Returns the cost model and every
/// layer's costs in model order with the loss's, or `None` for stages that are not made of
/// layers.
pub fn profile_layers<S>(
    layout: impl Into<Layout>,
    stages: &mut [S],
    opts: &ProfileOptions,
    prepare: impl Fn(&mut S, usize) -> Result<()> + Sync,
    transport: &Transport,
) -> Result<(CostModel, Option<ModelLayers>)>
where
    S: StageWork,
    S::Payload: Clone + Sync,
{
    profile_stages(layout.into(), stages, opts, &prepare, transport, true)
}

/// [`profile`], and with `layers` [`profile_layers`].
fn profile_stages<S>(
    layout: Layout,
    stages: &mut [S],
    opts: &ProfileOptions,
    prepare: &(impl Fn(&mut S, usize) -> Result<()> + Sync),
    transport: &Transport,
    layers: bool,
) -> Result<(CostModel, Option<ModelLayers>)>
where
    S: StageWork,
    S::Payload: Clone + Sync,
{
    let n = layout.stages();
    let held = transport.held(n, |s| layout.rank_of(s));
    if stages.len() != held.len() || opts.recompute.len() != n {
        return Err(Error::Config(format!(
            "profiling needs this process's stages {held:?} of the layout's {n} and one recompute flag per model stage: got {} stages and {} flags",
            stages.len(),
            opts.recompute.len()
        )));
    }
    if opts.reps == 0 {
        return Err(Error::Usage("profiling needs at least one measured run".into()));
    }
    let mut mine: Vec<(usize, &mut S)> = held.iter().copied().zip(stages.iter_mut()).collect();
    let recorded = record_pass(&mut mine, layout, &opts.recompute, prepare, transport)?;
    let (inputs, grads) = (&recorded.inputs, &recorded.grads);
    // With ranks as processes, every process starts timing together (in process, a no-op).
    transport.all_gather(Vec::new())?;
    let timed = side_by_side(
        layout,
        mine,
        |mine| time_rank(mine, inputs, grads, opts, prepare),
        |mine| run_rank(mine, 0, inputs, grads, opts, prepare).map(drop),
    )?;
    let mut costs = Vec::with_capacity(held.len());
    for rank in timed {
        for (s, sm) in rank {
            let f = median(sm.f);
            let (act_bytes, recompute_bytes, w_bytes) = recorded.bytes[s];
            let cost = StageCost {
                f,
                i: median(sm.i),
                w: median(sm.w),
                // A stage that does not checkpoint has no R to time; t_R defaults to t_F.
                r: Some(if opts.recompute[s] { median(sm.r) } else { f }),
                act_bytes,
                recompute_bytes,
                w_bytes,
                fwd_msg_bytes: recorded.sent[s].0,
                bwd_msg_bytes: recorded.sent[s].1,
            };
            costs.push((s, cost));
        }
    }
    let statics: std::collections::HashMap<usize, u64> =
        held.iter().zip(stages.iter()).map(|(&s, stage)| (s, stage.static_bytes())).collect();
    let mine = costs.into_iter().map(|(s, cost)| (s, (cost, statics[&s]))).collect();
    let all: Vec<(StageCost, u64)> = transport.by_stage(n, mine)?;
    let mut static_bytes = vec![0u64; layout.p];
    for (s, (_, bytes)) in all.iter().enumerate() {
        static_bytes[layout.rank_of(s)] += bytes;
    }
    // Between threads a message is handed over in memory, whatever its size: no bandwidth.
    let (latency, bandwidth) = match transport.measure_network()? {
        Some(network) => (network.latency, network.bandwidth),
        None => (handoff_latency_ms(), None),
    };
    let model = CostModel {
        costs: StageCosts::Stages(all.into_iter().map(|(c, _)| c).collect()),
        latency,
        bandwidth,
        static_bytes,
        host_link: None,
        time_unit: "ms".into(),
    };
    if !layers {
        return Ok((model, None));
    }
    // `warmup` unmeasured runs, then `reps` measured ones, of every layer of the rank's stages.
    let time_layers = |mine: &mut [(usize, &mut S)], warmup: usize, reps: usize| {
        let mut out = Vec::with_capacity(mine.len());
        for (s, stage) in mine.iter_mut() {
            let s = *s;
            prepare(stage, 0)?;
            let costs = stage
                .layer_costs(inputs[s].as_ref(), grads[s].as_ref(), warmup, reps)
                .map_err(|e| fail(s, "per-layer", e))?;
            out.push((s, costs));
        }
        Ok(out)
    };
    let mine = held.iter().copied().zip(stages.iter_mut()).collect();
    transport.all_gather(Vec::new())?;
    let timed = side_by_side(
        layout,
        mine,
        |mine| time_layers(mine, opts.warmup, opts.reps),
        |mine| time_layers(mine, 0, 1).map(drop),
    )?;
    let all: Vec<Option<StageLayers>> = transport.by_stage(n, timed.into_iter().flatten().collect())?;
    let mut list = Vec::new();
    let mut loss = None;
    for stage in all {
        let Some((layers, l)) = stage else { return Ok((model, None)) };
        list.extend(layers);
        loss = l.or(loss);
    }
    Ok((model, loss.map(|loss| (list, loss))))
}

/// `work` on every rank's stages of `mine` at once, one thread per rank, as the pipeline runs
/// them (this process's ranks: every rank with ranks as threads); each rank's results. The
/// ranks start together, and a rank whose `work` is done runs `filler` (the same ops again,
/// unmeasured) while another rank is still at its `work`, so that every measured op ran with
/// every rank busy: on a machine whose cores share caches, memory bandwidth or a physical core,
/// an op alone runs up to 40 % faster than beside another (gpt-small's layers on a 2-core
/// machine), and a rank that finished early would leave the other's last ops to run
/// alone, faster than in the pipeline.
fn side_by_side<'a, S, T>(
    layout: Layout,
    mine: Vec<(usize, &'a mut S)>,
    work: impl Fn(&mut [(usize, &'a mut S)]) -> Result<Vec<T>> + Sync,
    filler: impl Fn(&mut [(usize, &'a mut S)]) -> Result<()> + Sync,
) -> Result<Vec<Vec<T>>>
where
    S: StageWork,
    T: Send,
{
    let mut per_rank: Vec<Vec<(usize, &mut S)>> = (0..layout.p).map(|_| Vec::new()).collect();
    for (s, stage) in mine {
        per_rank[layout.rank_of(s)].push((s, stage));
    }
    per_rank.retain(|r| !r.is_empty());
    let (measuring, waiting) = (AtomicUsize::new(per_rank.len()), AtomicUsize::new(per_rank.len()));
    let (work, filler, measuring, waiting) = (&work, &filler, &measuring, &waiting);
    // Every thread is joined (its panic caught) before the first error is returned.
    let ranks: Vec<Result<Vec<T>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_rank
            .into_iter()
            .map(|mut mine| {
                let rank = layout.rank_of(mine[0].0);
                let handle = std::thread::Builder::new().name(format!("pipesched-profile-{rank}")).spawn_scoped(
                    scope,
                    move || {
                        // Counted down however `work` ends, a panic included, so no rank fills forever.
                        let done = CountDown(measuring);
                        // Every rank starts measuring once all have started.
                        waiting.fetch_sub(1, Ordering::AcqRel);
                        while waiting.load(Ordering::Acquire) > 0 {
                            std::thread::yield_now();
                        }
                        let out = work(&mut mine)?;
                        drop(done);
                        while measuring.load(Ordering::Acquire) > 0 {
                            filler(&mut mine)?;
                        }
                        Ok(out)
                    },
                );
                if handle.is_err() {
                    // A thread that never started measures nothing: the others neither wait for
                    // it nor fill for it.
                    waiting.fetch_sub(1, Ordering::AcqRel);
                    measuring.fetch_sub(1, Ordering::AcqRel);
                }
                (rank, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(rank, h)| match h {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(Error::WorkerPanic { rank, message: "a stage panicked while it was profiled".into() })
                }),
                Err(source) => Err(Error::Io {
                    action: "cannot start a profiling thread",
                    path: format!("rank {rank}").into(),
                    source,
                }),
            })
            .collect()
    });
    ranks.into_iter().collect()
}

/// Counts one rank out of the ones still measuring when dropped.
struct CountDown<'a>(&'a AtomicUsize);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the recording pass saw, per model stage (only this process's stages are filled in).
struct Recorded<P> {
    /// Each stage's input for micro-batch 0.
    inputs: Vec<Option<P>>,
    /// Each stage's incoming gradient for micro-batch 0.
    grads: Vec<Option<P>>,
    /// Bytes kept by `F`, re-created by `R`, kept from `I` until `W`.
    bytes: Vec<(u64, u64, u64)>,
    /// Bytes of the activation each stage sends forward and the gradient it sends back.
    sent: Vec<(u64, u64)>,
}

/// The recording pass: micro-batch 0 forward through every stage (with `R` where flagged) and
/// back, keeping a copy of what each of `mine` (this process's stages, in model order)
/// received. Where the next stage is another rank's, what goes to it is shared through
/// `transport` (in process, it is passed on as it is).
fn record_pass<S>(
    mine: &mut [(usize, &mut S)],
    layout: Layout,
    recompute: &[bool],
    prepare: &impl Fn(&mut S, usize) -> Result<()>,
    transport: &Transport,
) -> Result<Recorded<S::Payload>>
where
    S: StageWork,
    S::Payload: Clone,
{
    let n = layout.stages();
    let mut rec =
        Recorded { inputs: vec![None; n], grads: vec![None; n], bytes: vec![(0, 0, 0); n], sent: vec![(0, 0); n] };
    let mut at: Vec<Option<usize>> = vec![None; n];
    for (k, (s, _)) in mine.iter().enumerate() {
        at[*s] = Some(k);
    }
    let crosses = |a: usize, b: usize| layout.rank_of(a) != layout.rank_of(b);
    let mut x: Option<S::Payload> = None;
    for s in 0..n {
        if let Some(k) = at[s] {
            let stage = &mut *mine[k].1;
            prepare(stage, 0)?;
            rec.inputs[s] = x.clone();
            let before = stage.held_bytes();
            x = stage.forward(0, x.take()).map_err(|e| fail(s, "forward", e))?;
            let after_f = stage.held_bytes();
            if recompute[s] {
                stage.recompute(0).map_err(|e| fail(s, "recompute", e))?;
            }
            rec.bytes[s].0 = after_f - before;
            rec.bytes[s].1 = stage.held_bytes() - after_f;
            // (What the last stage's forward gives is no message.)
            rec.sent[s].0 = if s + 1 < n { x.as_ref().map_or(0, S::payload_bytes) } else { 0 };
        }
        if s + 1 < n && crosses(s, s + 1) {
            x = transport.share(layout.rank_of(s), x)?;
        }
    }
    let mut g: Option<S::Payload> = None;
    for s in (0..n).rev() {
        if let Some(k) = at[s] {
            let stage = &mut *mine[k].1;
            rec.grads[s] = g.clone();
            g = stage.backward_input(0, g.take()).map_err(|e| fail(s, "input-gradient backward", e))?;
            rec.bytes[s].2 = stage.held_bytes();
            stage.backward_weight(0).map_err(|e| fail(s, "weight-gradient backward", e))?;
            rec.sent[s].1 = if s > 0 { g.as_ref().map_or(0, S::payload_bytes) } else { 0 };
        }
        if s > 0 && crosses(s, s - 1) {
            g = transport.share(layout.rank_of(s), g)?;
        }
    }
    Ok(rec)
}

/// Times one rank's stages, replaying the recorded inputs: `warmup` runs, then `reps` kept.
fn time_rank<S>(
    mine: &mut [(usize, &mut S)],
    inputs: &[Option<S::Payload>],
    grads: &[Option<S::Payload>],
    opts: &ProfileOptions,
    prepare: &(impl Fn(&mut S, usize) -> Result<()> + Sync),
) -> Result<Vec<(usize, Samples)>>
where
    S: StageWork,
    S::Payload: Clone,
{
    let mut samples: Vec<(usize, Samples)> = mine.iter().map(|(s, _)| (*s, Samples::default())).collect();
    for run in 1..=opts.warmup + opts.reps {
        let times = run_rank(mine, run, inputs, grads, opts, prepare)?;
        if run > opts.warmup {
            for ((_, sm), [t_f, t_r, t_i, t_w]) in samples.iter_mut().zip(times) {
                sm.f.push(t_f);
                sm.r.push(t_r);
                sm.i.push(t_i);
                sm.w.push(t_w);
            }
        }
    }
    Ok(samples)
}

/// Run `run` of every op of one rank's stages ([`time_ops`]), stage after stage.
fn run_rank<S>(
    mine: &mut [(usize, &mut S)],
    run: usize,
    inputs: &[Option<S::Payload>],
    grads: &[Option<S::Payload>],
    opts: &ProfileOptions,
    prepare: &(impl Fn(&mut S, usize) -> Result<()> + Sync),
) -> Result<Vec<[f64; 4]>>
where
    S: StageWork,
    S::Payload: Clone,
{
    let mut times = Vec::with_capacity(mine.len());
    for (s, stage) in mine.iter_mut() {
        prepare(stage, run)?;
        times.push(time_ops(*s, &mut **stage, inputs, grads, opts.recompute[*s])?);
    }
    Ok(times)
}

/// Runs `F`, `R` (if `recompute`), `I` and `W` of micro-batch 0 on stage `s` and returns their
/// times in milliseconds (`R` is 0 when skipped): from the stage's device clock if it has one
/// (its ops are queued, not done, when they return), else from the host clock.
fn time_ops<S>(
    s: usize,
    stage: &mut S,
    inputs: &[Option<S::Payload>],
    grads: &[Option<S::Payload>],
    recompute: bool,
) -> Result<[f64; 4]>
where
    S: StageWork,
    S::Payload: Clone,
{
    let clocked = match stage.clock() {
        Some(c) => {
            c.start().map_err(|e| fail(s, "clock", e))?;
            true
        }
        None => false,
    };
    let mut marks = vec![];
    let mut host = vec![];
    let mut mark = |stage: &mut S| -> Result<()> {
        host.push(Instant::now());
        if let Some(c) = stage.clock() {
            marks.push(c.mark().map_err(|e| fail(s, "clock", e))?);
        }
        Ok(())
    };
    // Inputs are copied before the clock's marks, so no op's time includes that copy (a move
    // to another GPU inside `forward` is still part of F, as it is in the pipeline).
    let (input, grad) = (inputs[s].clone(), grads[s].clone());
    mark(stage)?;
    stage.forward(0, input).map_err(|e| fail(s, "forward", e))?;
    mark(stage)?;
    if recompute {
        stage.recompute(0).map_err(|e| fail(s, "recompute", e))?;
    }
    mark(stage)?;
    stage.backward_input(0, grad).map_err(|e| fail(s, "input-gradient backward", e))?;
    mark(stage)?;
    stage.backward_weight(0).map_err(|e| fail(s, "weight-gradient backward", e))?;
    mark(stage)?;
    let at: Vec<f64> = match (clocked, stage.clock()) {
        (true, Some(c)) => c.read().map_err(|e| fail(s, "clock", e))?,
        _ => host.iter().map(|t| t.duration_since(host[0]).as_secs_f64() * 1e3).collect(),
    };
    let r = if recompute { at[2] - at[1] } else { 0.0 };
    Ok([at[1] - at[0], r, at[3] - at[2], at[4] - at[3]])
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
