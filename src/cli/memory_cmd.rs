//! `pipesched memory`: where a training step's bytes go on every rank — model states,
//! activations per micro-batch and in flight under the schedule, the simulator's peak, and the
//! bounds of what else a step allocates — from shapes alone, so it answers for models far larger
//! than this machine.

use clap::Args;

use pipesched::args::{DataParallelArgs, ModelArgs, OffloadArgs, RecomputeArgs, ScheduleArgs};
use pipesched::memory_report::MemoryReport;
use pipesched::units::bytes;
use pipesched::workload::ModelSource;
use pipesched::{Error, Result};
use pipesched_schedules::with_recompute;

/// Arguments of `pipesched memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    recompute: RecomputeArgs,
    #[command(flatten)]
    offload: OffloadArgs,
    #[command(flatten)]
    data: DataParallelArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Prints the report.
pub fn run(args: MemoryArgs) -> Result<()> {
    let spec = args.model.spec()?;
    let ModelSource::Model(model) = &spec.model.source else {
        return Err(Error::Usage(
            "memory reports a model's bytes; synthetic stages hold just what their spec says. Give a preset or a model file".into(),
        ));
    };
    if args.schedule.is_auto() {
        return Err(Error::Usage(
            "memory takes a named schedule; -s auto is built from measured costs (run `pipesched simulate -s auto` or `plan`)".into(),
        ));
    }
    let dp = args.data.data_parallel()?;
    let base = args.schedule.schedule(None)?;
    if base.is_forward_only() {
        return Err(Error::Usage(
            "memory reports a training step; a forward-only pass keeps no gradients, optimizer state or activations for a backward — `pipesched infer` predicts and measures its bytes".into(),
        ));
    }
    let policies = args.recompute.policies().for_stages(base.stages())?;
    let specs = model.stage_specs(base.stages(), &spec.partition, &pipesched_stages::Policies(policies.clone()))?;
    let flags: Vec<bool> = policies.iter().map(|p| p.drops()).collect();
    // Bytes only: the copies' time does not matter here, so --host-bandwidth is not needed.
    let schedule = args.offload.plan(&with_recompute(&base, &flags)?)?;
    let batch = spec.batch.unwrap_or(model.batch);
    let report = MemoryReport::of(model, &schedule, &specs, batch, &spec.optimizer, dp)?;
    if args.json {
        let text = serde_json::to_string(&report).map_err(|e| Error::Config(format!("the report as JSON: {e}")))?;
        return pipesched::sayln!("{text}");
    }
    pipesched::output::say(format_args!("{}", table(&report, &policies)))
}

/// The report as text.
fn table(r: &MemoryReport, policies: &[pipesched_stages::RecomputePolicy]) -> String {
    let same = policies.windows(2).all(|w| w[0] == w[1]);
    let recompute = if same {
        policies.first().map_or("none".to_string(), ToString::to_string)
    } else {
        policies.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    };
    let zero = if r.zero > 0 { format!(", ZeRO-{}", r.zero) } else { String::new() };
    let dp = if r.dp > 1 { format!(" · {} replicas{zero}", r.dp) } else { String::new() };
    let mut out = format!(
        "{} · {} p={} v={} m={} · recompute {recompute}{dp} · {} rows per micro-batch\n",
        r.model, r.schedule, r.p, r.v, r.m, r.rows
    );
    let psi = r.parameter_count;
    let of_psi = |b: u64| b as f64 / psi.max(1) as f64;
    let total = |f: fn(&pipesched::memory_report::RankMemory) -> u64| r.ranks.iter().map(f).sum::<u64>();
    let master = total(|k| k.master_bytes);
    let master = if master > 0 { format!(" + f32 master weights {:.2}Ψ", of_psi(master)) } else { String::new() };
    out.push_str(&format!(
        "{psi} parameters (Ψ) in {}; model states {} = {:.2}Ψ bytes over all ranks: parameters {:.2}Ψ + gradients {:.2}Ψ{master} + optimizer state {:.2}Ψ\n\n",
        r.precision,
        bytes(r.model_state_bytes),
        of_psi(r.model_state_bytes),
        of_psi(total(|k| k.parameter_bytes)),
        of_psi(total(|k| k.gradient_bytes)),
        of_psi(total(|k| k.optimizer_bytes)),
    ));
    let sums = total(|k| k.sum_buffer_bytes);
    if sums > 0 {
        out.insert_str(
            out.len() - 1,
            &format!(
                "and the buffers the gradients are summed over the replicas in, one f32 a trained parameter: {} over all ranks (in each rank's held peak)\n",
                bytes(sums)
            ),
        );
    }
    if r.trained_parameter_count < psi {
        out.insert_str(
            out.len() - 1,
            &format!(
                "LoRA: {} parameters train ({:.3} % of Ψ), the other {} are frozen (parameter bytes only)\n",
                r.trained_parameter_count,
                100.0 * r.trained_parameter_count as f64 / psi.max(1) as f64,
                psi - r.trained_parameter_count
            ),
        );
    }
    out.push_str(&format!(
        "{:>4}  {:>13}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {:>10}  {:>10}  {:>10}  {:>10}\n",
        "rank",
        "parameters",
        "params",
        "grads",
        "master",
        "optimizer",
        "states",
        "F keeps/mb",
        "in flight",
        "activations",
        "held peak",
        "+ bounds",
        "total"
    ));
    for k in &r.ranks {
        let flight = k.in_flight.iter().map(ToString::to_string).collect::<Vec<_>>().join("+");
        out.push_str(&format!(
            "{:>4}  {:>13}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {:>10}  {:>10}  {:>10}  {:>10}\n",
            k.rank,
            k.parameter_count,
            bytes(k.parameter_bytes),
            bytes(k.gradient_bytes),
            bytes(k.master_bytes),
            bytes(k.optimizer_bytes),
            bytes(k.model_state_bytes),
            bytes(k.per_microbatch.f_keeps),
            flight,
            bytes(k.activation_peak_bytes),
            bytes(k.peak_held_bytes),
            bytes(k.total_bytes - k.peak_held_bytes),
            bytes(k.total_bytes),
        ));
    }
    if r.ranks.iter().any(|k| k.host_peak_bytes > 0) {
        let each: Vec<String> = r.ranks.iter().map(|k| bytes(k.host_peak_bytes)).collect();
        out.push_str(&format!("\nhost peak (offloaded activations), by rank: {}\n", each.join(", ")));
    }
    out.push_str(
        "\nheld peak: the simulator's (= what `run` measures); + bounds: messages in flight at equal op times, op workspace, data and bookkeeping\n",
    );
    if let Some(t) = &r.transformer_layer {
        out.push_str(&format!(
            "\none transformer layer, s={} b={} h={} a={}: keeps {} per micro-batch here ({} storage, dropout masks re-drawn); Korthikanti et al.'s s·b·h·(34 + 5as/h) = {} (16-bit, 1-byte masks)\n",
            t.seq,
            t.sequences,
            t.width,
            t.heads,
            bytes(t.pipesched_bytes),
            if r.precision.starts_with("mixed") { "16-bit" } else { "f32" },
            bytes(t.korthikanti_bytes)
        ));
    }
    out
}
