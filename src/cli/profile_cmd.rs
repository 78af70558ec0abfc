//! `pipesched profile`: measure every stage of a model placed on p ranks (v chunks each) under
//! its recompute policies, and every layer of a real model alone, and write the cost file —
//! times, bytes, the layout and policies they were measured under, and the per-layer costs any
//! partition and policy can be composed from — into `--out` as `costs.json`, for `pipesched
//! simulate --costs-file`.

use clap::Args;

use pipesched::args::{LayoutArgs, ModelArgs, OutArgs, RecomputeArgs, TransportArgs};
use pipesched::cost_file::CostFile;
use pipesched::exec::Transport;
use pipesched::output::write_atomic;
use pipesched::workload::{Demand, ModelSource};
use pipesched::{units, Result};
use pipesched_schedules::{CostModel, Kind, StageCosts};
use pipesched_stages::LayerCosts;

/// Arguments of `pipesched profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    recompute: RecomputeArgs,
    /// The schedule the costs are for: it gives the chunks per rank (2 for interleaved) and the
    /// placement. Without it, one chunk per rank unless -v says otherwise.
    #[arg(long, short = 's', value_name = "NAME")]
    schedule: Option<Kind>,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Print the cost file's JSON instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(flatten)]
    out: OutArgs,
}

/// Profiles and writes the cost file.
pub fn run(args: ProfileArgs) -> Result<()> {
    let transport = args.transport.start()?;
    let result = profile_with(&args, &transport);
    transport.conclude(result)
}

/// [`run`] once the transport is up: with ranks as processes, every process profiles its own
/// stages, and rank 0 writes the file.
fn profile_with(args: &ProfileArgs, transport: &Transport) -> Result<()> {
    let layout = args.layout.layout(args.schedule)?;
    if transport.is_processes() {
        transport.check_size(layout.p)?;
    }
    let dir = if transport.is_root() { Some(args.out.prepare()?) } else { None };
    let demand = Demand::profiling(layout.stages());
    let spec = args.model.spec()?;
    let policies = args.recompute.policies();
    let mut workload = spec.build(&layout, &policies, &demand, transport)?;
    let file = workload.profile_file(7)?;
    let Some(dir) = dir else { return Ok(()) };
    let text = file.to_json();
    let path = dir.join("costs.json");
    write_atomic(&path, text.as_bytes())?;
    if args.json {
        pipesched::sayln!("{text}")?;
    } else {
        pipesched::output::say(format_args!("{}", table(&file)))?;
        if let (ModelSource::Model(model), Some(_)) = (&spec.model.source, &file.layers) {
            let specs = model.stage_specs(layout.stages(), &spec.partition, &policies)?;
            let composed = file.compose(model, &specs, layout)?;
            pipesched::output::say(format_args!("{}", sums(&file.model, &composed)))?;
        }
    }
    eprintln!("wrote {} for {layout}", path.display());
    Ok(())
}

/// The cost file as a table: one row per stage, then the static bytes per rank.
fn table(file: &CostFile) -> String {
    let m = &file.model;
    let u = &m.time_unit;
    let mut out = format!(
        "{:>5}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>11}  {:>11}  {:>11}\n",
        "stage",
        format!("F ({u})"),
        format!("I ({u})"),
        format!("W ({u})"),
        format!("R ({u})"),
        "policy",
        "F keeps",
        "R re-creates",
        "I keeps"
    );
    let stages: &[_] = match &m.costs {
        StageCosts::Stages(list) => list,
        StageCosts::PerRank(c) => std::slice::from_ref(c),
    };
    for (k, c) in stages.iter().enumerate() {
        let policy = file.recompute.as_ref().and_then(|r| r.get(k)).map_or("-".into(), |p| p.to_string());
        out.push_str(&format!(
            "{k:>5}  {:>9.3}  {:>9.3}  {:>9.3}  {:>9.3}  {policy:>9}  {:>11}  {:>11}  {:>11}\n",
            c.f,
            c.i,
            c.w,
            c.t_r(),
            units::bytes(c.act_bytes),
            units::bytes(c.recompute_bytes),
            units::bytes(c.w_bytes)
        ));
    }
    let statics: Vec<String> = m.static_bytes.iter().map(|&b| units::bytes(b)).collect();
    out.push_str(&format!("static bytes per rank: {}; cross-rank latency {:.4} {u}\n", statics.join(", "), m.latency));
    if let Some(layers) = &file.layers {
        out.push_str(&layer_table(layers, u));
    }
    out
}

/// Each stage's measured times beside the sums of its layers' ([`CostFile::compose`] for the
/// profiled partition and policies), and how far apart they are.
fn sums(measured: &CostModel, composed: &CostModel) -> String {
    let u = &measured.time_unit;
    let (StageCosts::Stages(a), StageCosts::Stages(b)) = (&measured.costs, &composed.costs) else {
        return String::new();
    };
    let mut out = format!("\nper stage, measured / sum of its layers ({u}):\n");
    let pair = |x: f64, y: f64| {
        let off = if x > 0.0 { format!("{:+.0} %", 100.0 * (y / x - 1.0)) } else { "-".into() };
        format!("{x:>9.3} / {y:<9.3} ({off:>6})")
    };
    for (k, (m, c)) in a.iter().zip(b).enumerate() {
        out.push_str(&format!(
            "{k:>5}  F {}  I {}  W {}  R {}\n",
            pair(m.f, c.f),
            pair(m.i, c.i),
            pair(m.w, c.w),
            pair(m.t_r(), c.t_r())
        ));
    }
    out
}

/// The per-layer costs as a table: one row per layer, then the loss.
fn layer_table(costs: &LayerCosts, u: &str) -> String {
    let mut out = format!(
        "\nper layer, {} rows per micro-batch:\n{:>5}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>11}  {:>11}  {:>11}\n",
        costs.rows,
        "layer",
        "kind",
        format!("F ({u})"),
        format!("I ({u})"),
        format!("W ({u})"),
        format!("R ({u})"),
        "F keeps",
        "input",
        "I keeps"
    );
    for (k, l) in costs.layers.iter().enumerate() {
        let (t, b) = (&l.times, &l.bytes);
        out.push_str(&format!(
            "{k:>5}  {:>9}  {:>9.3}  {:>9.3}  {:>9.3}  {:>9.3}  {:>11}  {:>11}  {:>11}\n",
            l.kind,
            t.f,
            t.i,
            t.w,
            t.r,
            units::bytes(b.act_bytes),
            units::bytes(b.input_bytes),
            units::bytes(b.w_bytes)
        ));
    }
    let loss = &costs.loss;
    out.push_str(&format!(
        "{:>5}  {:>9}  {:>9.3}  {:>9.3}  {:>9}  {:>9}  {:>11}\n",
        "loss",
        "",
        loss.f,
        loss.i,
        "",
        "",
        units::bytes(loss.saved_bytes)
    ));
    out
}
