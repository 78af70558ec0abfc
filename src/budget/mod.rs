//! The memory budget: how much memory this process can still get, what a request will allocate
//! (an [`Estimate`] in named parts), and the one check that refuses a request that cannot fit
//! before anything is allocated.
//!
//! The rule, in one place ([`check`]): a request is refused when its estimate exceeds
//! [`HEADROOM_PERCENT`] % of the available memory. The other 10 % is left for what estimates do
//! not count — the allocator's own overhead, the program, thread stacks, traces — and for the
//! rest of the machine. Available memory on Linux is the least of `MemAvailable` in
//! `/proc/meminfo` and, for every cgroup (v2 or v1) on this process's path that sets a memory
//! limit, that limit minus its usage. When none of these can be read the machine's memory is
//! unknown and only requests no 64-bit process could allocate are refused.

use std::fmt;

use pipesched_schedules::{Footprint as ScheduleSize, Simulation};
use pipesched_stages::{Footprint, Load, ModelSpec, OptimizerSpec, Part as StagePart, StageSpec};

use crate::units;

mod available;

pub use available::Available;

/// A request is refused above this share of the available memory, in percent.
pub const HEADROOM_PERCENT: u64 = 90;

/// One part of an estimate: what it is, its bytes, and what makes it smaller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// What it is (`activations kept for the backward`).
    pub name: &'static str,
    /// Its bytes.
    pub bytes: u64,
    /// What to change to make it smaller: alternatives, each on its own.
    pub remedies: &'static [&'static str],
}

/// What a request will allocate, in parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// The request (`model small (S = 4, 128 rows per micro-batch, m = 8)`).
    pub subject: String,
    /// Its parts.
    pub parts: Vec<Part>,
}

impl Estimate {
    /// Every byte (saturating at `u64::MAX`: more than any machine has).
    pub fn total(&self) -> u64 {
        self.parts.iter().fold(0u64, |t, p| t.saturating_add(p.bytes))
    }

    /// The non-empty parts, largest first.
    pub fn largest(&self) -> Vec<&Part> {
        let mut parts: Vec<&Part> = self.parts.iter().filter(|p| p.bytes > 0).collect();
        parts.sort_by_key(|p| std::cmp::Reverse(p.bytes));
        parts
    }

    /// The estimate of a model's footprint, for `load`.
    pub fn of_model(model: &ModelSpec, load: &Load, footprint: &Footprint) -> Estimate {
        let subject = format!(
            "model {} (S = {}, {} rows per micro-batch, m = {})",
            model.name,
            footprint.stages.len(),
            load.batch,
            load.microbatches
        );
        let parts = StagePart::ALL
            .iter()
            .map(|&p| Part { name: p.name(), bytes: footprint.part(p), remedies: remedies(p) })
            .collect();
        Estimate { subject, parts }
    }
}

impl Estimate {
    /// This estimate with one more part.
    pub fn with(mut self, part: Part) -> Estimate {
        self.parts.push(part);
        self
    }

    /// This estimate plus what checking a step against the sequential reference (`--verify`)
    /// adds: a copy of the parameters from before the step, the reference's own stages
    /// (parameters and gradients), and one micro-batch on every stage at once, at its largest.
    pub fn with_reference(mut self, footprint: &Footprint) -> Estimate {
        let per_microbatch = footprint.stages.iter().fold(0u64, |t, s| {
            let b = s.per_microbatch;
            t.saturating_add(b.act_bytes.saturating_add(b.recompute_bytes).max(b.w_bytes))
        });
        let params = footprint.part(StagePart::Parameters);
        let bytes = params
            .saturating_mul(2)
            .saturating_add(footprint.part(StagePart::Gradients))
            .saturating_add(per_microbatch);
        self.parts.push(Part { name: "sequential reference", bytes, remedies: &["running without --verify"] });
        self
    }

    /// This estimate plus what rank 0 holds besides when it checks a step of ranks as processes:
    /// every stage's parameters and gradients gathered from the others, and with `replicas > 1`
    /// a second reference model (each replica's share runs on its own, and their gradients are
    /// added into the first).
    pub fn with_gathered_reference(mut self, footprint: &Footprint, replicas: usize) -> Estimate {
        let model = footprint.part(StagePart::Parameters).saturating_add(footprint.part(StagePart::Gradients));
        let copies = if replicas > 1 { 2 } else { 1 };
        self.parts.push(Part {
            name: "stages gathered for the sequential reference",
            bytes: model.saturating_mul(copies),
            remedies: &["running without --verify"],
        });
        self
    }
}

const BATCH: &str = "a smaller --batch";
const MODEL: &str = "a smaller model (fewer or narrower layers)";
const FEWER_MICROBATCHES: &str = "fewer micro-batches (-m)";

/// What makes a part of a model's footprint smaller.
fn remedies(part: StagePart) -> &'static [&'static str] {
    match part {
        StagePart::Parameters | StagePart::Gradients => &[MODEL],
        StagePart::OptimizerState => &["--optimizer sgd (one state tensor per parameter; Adam keeps two)", MODEL],
        StagePart::MasterWeights => {
            &["training in f32, bf16 or f16 (only mixed precision keeps f32 master weights)", MODEL]
        }
        StagePart::Activations => &[
            BATCH,
            "a recompute policy that keeps less (--recompute full)",
            "a schedule that holds fewer micro-batches at once (1f1b rather than gpipe)",
        ],
        StagePart::Messages | StagePart::Data => &[BATCH, FEWER_MICROBATCHES],
        StagePart::Workspace => &[MODEL, BATCH],
        StagePart::Records => &[FEWER_MICROBATCHES, "fewer layers"],
        StagePart::Shared => &[BATCH, "a narrower model input or output, or a shorter text"],
    }
}

/// The estimate for `specs` (stages of `model`) trained with `optimizer` under `load`: an error
/// if the model is invalid or a count overflows (see [`ModelSpec::footprint`]).
pub fn model(
    model: &ModelSpec,
    specs: &[StageSpec],
    optimizer: &OptimizerSpec,
    load: &Load,
) -> pipesched_stages::Result<Estimate> {
    let footprint = model.footprint(specs, optimizer, load)?;
    Ok(Estimate::of_model(model, load, &footprint))
}

/// The estimate for synthetic stages, one per entry of `in_flight` (the most micro-batches each
/// holds at once, from `pipesched_stages::microbatches_in_flight`), each keeping `act_bytes`
/// per micro-batch from `F`, `w_bytes` from `I` until `W`, and sending messages of
/// `msg_bytes` — the numbers of one stage, after a rank's share is split among its chunks.
///
/// A stage's buffers are recycled through its pool, which only allocates when it is empty, so it
/// never holds more buffers of a kind than were held at once: `in_flight` of each kept kind. A
/// stage sends at most two messages per micro-batch (activation, gradient); `2·m` message
/// buffers per stage bound those in links and pools.
pub fn synthetic(act_bytes: u64, w_bytes: u64, msg_bytes: u64, m: usize, in_flight: &[usize]) -> Estimate {
    let held: u64 = in_flight.iter().fold(0u64, |t, &k| t.saturating_add(k.min(m) as u64));
    let stages = in_flight.len() as u64;
    let parts = vec![
        Part {
            name: "buffers kept by F",
            bytes: held.saturating_mul(act_bytes),
            remedies: &[
                "a smaller mem= in the synthetic spec",
                "a schedule that holds fewer micro-batches at once (1f1b rather than gpipe)",
                FEWER_MICROBATCHES,
            ],
        },
        Part {
            name: "buffers kept from I until W",
            bytes: held.saturating_mul(w_bytes),
            remedies: &["a smaller wmem= in the synthetic spec"],
        },
        Part {
            name: "message buffers",
            bytes: stages.saturating_mul(2).saturating_mul(m as u64).saturating_mul(msg_bytes),
            remedies: &["a smaller msg= in the synthetic spec", FEWER_MICROBATCHES],
        },
    ];
    Estimate { subject: format!("synthetic stages (S = {}, m = {m})", in_flight.len()), parts }
}

/// The estimate for a schedule of `size` (`None`: its counts overflow), named `subject`: its lanes
/// and their validation, and — when `simulated` — one simulation of it, keeping its trace or only
/// its stats, with memory curves when the cost model has bytes (see
/// [`pipesched_schedules::Footprint`]).
pub fn schedule(subject: String, size: Option<ScheduleSize>, simulated: Option<Simulation>) -> Estimate {
    let lanes = size.and_then(|s| s.schedule_bytes()).unwrap_or(u64::MAX);
    let simulation = match simulated {
        None => 0,
        Some(sim) => size.and_then(|s| s.simulation_bytes(sim)).map_or(u64::MAX, |all| all.saturating_sub(lanes)),
    };
    let fewer: &'static [&'static str] = &["fewer micro-batches (-m)", "fewer ranks or chunks (-p, -v)"];
    let parts = vec![
        Part { name: "the schedule's lanes and their validation", bytes: lanes, remedies: fewer },
        Part { name: "the simulation", bytes: simulation, remedies: fewer },
    ];
    Estimate { subject, parts }
}

/// What the executor itself keeps for `steps` steps of `actions` actions each, over `stages`
/// stages and `m` micro-batches: per action and step kept, its span, the bytes held after it, the
/// message it received and its trace entry (with two memory samples) — 256 bytes, rounded up —
/// and the links' slots, preallocated for `m` messages in each direction at every stage boundary.
pub fn executor(actions: usize, steps: usize, stages: usize, m: usize) -> Part {
    const PER_ACTION: u64 = 256;
    const PER_SLOT: u64 = 128;
    let records = (actions as u64).saturating_mul(steps as u64).saturating_mul(PER_ACTION);
    let links = (stages as u64).saturating_mul(2).saturating_mul(m as u64).saturating_mul(PER_SLOT);
    Part {
        name: "the executor's records, step traces and links",
        bytes: records.saturating_add(links),
        remedies: &["fewer micro-batches (-m)", "fewer steps (--steps, --warmup)"],
    }
}

/// The most an estimate may ask for: [`HEADROOM_PERCENT`] % of `available`, or, when that is
/// unknown, what a 64-bit process can address at all (`isize::MAX`).
pub fn limit(available: Option<&Available>) -> u64 {
    match available {
        Some(a) => (a.bytes as u128 * HEADROOM_PERCENT as u128 / 100) as u64,
        None => isize::MAX as u64,
    }
}

/// Refuses `estimate` if it exceeds [`limit`]`(available)`.
pub fn check(estimate: &Estimate, available: Option<&Available>) -> Result<(), TooBig> {
    if estimate.total() <= limit(available) {
        return Ok(());
    }
    Err(TooBig { estimate: estimate.clone(), available: available.cloned() })
}

/// A request refused before anything was allocated: its estimate exceeds the memory budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooBig {
    /// What the request would allocate.
    pub estimate: Estimate,
    /// The memory available, when known.
    pub available: Option<Available>,
}

impl fmt::Display for TooBig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.estimate.total();
        let amount = |b: u64| if b == u64::MAX { "more than 16 EiB".to_string() } else { units::bytes(b) };
        let largest = self.estimate.largest();
        let listed: Vec<String> = largest.iter().take(3).map(|p| format!("{} {}", p.name, amount(p.bytes))).collect();
        write!(f, "{} needs an estimated {} of memory ({}", self.estimate.subject, amount(total), listed.join(", "))?;
        if largest.len() > 3 {
            let rest = largest[3..].iter().fold(0u64, |t, p| t.saturating_add(p.bytes));
            write!(f, ", {} in {} more parts", amount(rest), largest.len() - 3)?;
        }
        match &self.available {
            Some(a) => write!(
                f,
                "), but {} is available ({}) and at most {HEADROOM_PERCENT} % of it, {}, is used",
                units::bytes(a.bytes),
                a.source,
                units::bytes(limit(Some(a)))
            )?,
            None => write!(f, "), more than a 64-bit process can address")?,
        }
        let mut remedies: Vec<&str> = Vec::new();
        for r in largest.iter().take(2).flat_map(|p| p.remedies) {
            if !remedies.contains(r) {
                remedies.push(r);
            }
        }
        write!(f, ". To fit, try {}", remedies.join("; or "))
    }
}

impl std::error::Error for TooBig {}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_schedules::{gpipe, one_f_one_b};
    use pipesched_stages::{microbatches_in_flight, Partition, Policies};

    const GIB: u64 = 1 << 30;

    fn machine(bytes: u64) -> Available {
        Available { bytes, source: "test".into() }
    }

    /// The estimate of `model` under 1F1B at p stages, m micro-batches, `batch` rows.
    fn one_f_one_b_estimate(model: &ModelSpec, p: usize, m: usize, batch: usize) -> Estimate {
        let specs = model.stage_specs(p, &Partition::Even, &Policies::all(Default::default())).unwrap();
        let load = Load { batch, microbatches: m, in_flight: microbatches_in_flight(&one_f_one_b(p, m).unwrap()) };
        super::model(model, &specs, &OptimizerSpec::adam(3e-4), &load).unwrap()
    }

    fn part(e: &Estimate, name: &str) -> u64 {
        e.parts.iter().find(|p| p.name == name).unwrap().bytes
    }

    #[test]
    fn a_preset_that_fits_passes() {
        let e = one_f_one_b_estimate(&ModelSpec::small(), 4, 8, 128);
        assert_eq!(part(&e, "parameters"), 4 * 4_246_288);
        assert_eq!(part(&e, "optimizer state"), 2 * 4 * 4_246_288);
        assert!(e.total() < GIB, "{}", e.total());
        check(&e, Some(&machine(24 * GIB))).unwrap();
    }

    #[test]
    fn a_four_terabyte_model_file_is_refused() {
        let text = ModelSpec::small()
            .with_mlp(|s| {
                s.hidden = 1_000_000;
                s.ffn = 1_000_000
            })
            .unwrap()
            .to_toml()
            .unwrap();
        let model = ModelSpec::from_toml(&text).unwrap();
        let e = one_f_one_b_estimate(&model, 4, 8, 128);
        // 16,000,179,000,016 parameters (see spec.rs), four bytes each.
        assert_eq!(part(&e, "parameters"), 64_000_716_000_064);
        let refusal = check(&e, Some(&machine(24 * GIB))).unwrap_err().to_string();
        assert!(
            refusal.starts_with(
                "model small (S = 4, 128 rows per micro-batch, m = 8) needs an estimated 291 TiB of memory \
                 (optimizer state 116 TiB, op workspace 58.2 TiB, parameters 58.2 TiB, 58.3 TiB in 6 more parts), \
                 but 24.0 GiB is available (test) and at most 90 % of it, 21.6 GiB, is used. "
            ),
            "{refusal}"
        );
        assert!(
            refusal.ends_with(
                "To fit, try --optimizer sgd (one state tensor per parameter; Adam keeps two); or a smaller model \
                 (fewer or narrower layers); or a smaller --batch"
            ),
            "{refusal}"
        );
    }

    #[test]
    fn verifying_adds_the_sequential_reference() {
        let model = ModelSpec::small();
        let specs = model.stage_specs(2, &Partition::Even, &Policies::all(Default::default())).unwrap();
        let load = Load { batch: 128, microbatches: 4, in_flight: vec![2, 1] };
        let footprint = model.footprint(&specs, &OptimizerSpec::sgd(0.1, 0.9), &load).unwrap();
        let plain = Estimate::of_model(&model, &load, &footprint);
        let verified = plain.clone().with_reference(&footprint);
        let per_mb: u64 = specs
            .iter()
            .map(|s| {
                let b = s.predicted_bytes(&model, 128);
                (b.act_bytes + b.recompute_bytes).max(b.w_bytes)
            })
            .sum();
        assert_eq!(verified.total() - plain.total(), 3 * 4 * 4_246_288 + per_mb);
        // Across processes rank 0 also holds every stage's parameters and gradients it gathered,
        // and with replicas a second reference model.
        let gathered = verified.clone().with_gathered_reference(&footprint, 1);
        assert_eq!(gathered.total() - verified.total(), 2 * 4 * 4_246_288);
        let replicated = verified.clone().with_gathered_reference(&footprint, 2);
        assert_eq!(replicated.total() - verified.total(), 4 * 4 * 4_246_288);
    }

    #[test]
    fn an_input_width_of_u64_max_is_an_error_naming_the_field() {
        let json = ModelSpec::small().to_json().replace("\"input\": 128", "\"input\": 18446744073709551615");
        let e = ModelSpec::from_json(&json).unwrap_err().to_string();
        assert!(e.contains("`input` = 18446744073709551615"), "{e}");
        let specs = ModelSpec::small().stage_specs(2, &Partition::Even, &Policies::all(Default::default())).unwrap();
        let wide = ModelSpec::small().with_mlp(|s| s.input = usize::MAX).unwrap();
        let load = Load { batch: 128, microbatches: 8, in_flight: vec![2, 1] };
        let e = super::model(&wide, &specs, &OptimizerSpec::adam(3e-4), &load).unwrap_err().to_string();
        assert!(e.contains("layer 0 (linear)'s parameters") && e.contains("`input` = 18446744073709551615"), "{e}");
    }

    #[test]
    fn a_terabyte_of_synthetic_buffers_is_refused() {
        let in_flight = microbatches_in_flight(&one_f_one_b(4, 8).unwrap()); // 4, 3, 2, 1
        let e = synthetic(1 << 40, 0, 0, 8, &in_flight);
        assert_eq!(e.total(), 10 << 40);
        assert_eq!(
            check(&e, Some(&machine(16 * GIB))).unwrap_err().to_string(),
            "synthetic stages (S = 4, m = 8) needs an estimated 10.0 TiB of memory (buffers kept by F \
             10.0 TiB), but 16.0 GiB is available (test) and at most 90 % of it, 14.4 GiB, is used. To fit, try a \
             smaller mem= in the synthetic spec; or a schedule that holds fewer micro-batches at once (1f1b rather \
             than gpipe); or fewer micro-batches (-m)"
        );
        let gpipe_held = microbatches_in_flight(&gpipe(4, 8).unwrap());
        let e = synthetic(1 << 20, 1 << 18, 1 << 16, 8, &gpipe_held);
        assert_eq!(e.total(), 32 * (1 << 20) + 32 * (1 << 18) + 4 * 2 * 8 * (1 << 16));
        check(&e, Some(&machine(16 * GIB))).unwrap();
    }

    #[test]
    fn profiling_at_a_huge_batch_is_refused() {
        let model = ModelSpec::small();
        let specs = model.stage_specs(1, &Partition::Even, &Policies::all(Default::default())).unwrap();
        let load = Load { batch: 100_000_000, microbatches: 1, in_flight: vec![1] };
        let e = super::model(&model, &specs, &OptimizerSpec::adam(3e-4), &load).unwrap();
        // After I a micro-batch holds 13,180,928 bytes per 128 rows (stages/README.md): 102,976 per row.
        assert_eq!(part(&e, "activations kept for the backward"), 102_976 * 100_000_000);
        assert_eq!(part(&e, "input and target data"), 4 * (128 + 16) * 100_000_000);
        let refusal = check(&e, Some(&machine(24 * GIB))).unwrap_err().to_string();
        assert!(refusal.starts_with("model small (S = 1, 100000000 rows per micro-batch, m = 1) needs an estimated"));
        assert!(refusal.contains("activations kept for the backward 9.37 TiB"), "{refusal}");
        assert!(refusal.contains("To fit, try a smaller --batch; or a recompute policy"), "{refusal}");
    }

    #[test]
    fn unknown_memory_refuses_only_what_no_process_can_address() {
        let e = synthetic(1 << 40, 0, 0, 8, &[4, 3, 2, 1]);
        check(&e, None).unwrap();
        let e = synthetic(u64::MAX / 2, 0, 0, 8, &[4]);
        assert_eq!(e.total(), u64::MAX, "saturates");
        let refusal = check(&e, None).unwrap_err().to_string();
        assert!(refusal.contains("more than 16 EiB") && refusal.contains("more than a 64-bit process"), "{refusal}");
        assert_eq!(limit(Some(&machine(100))), 90);
    }
}
