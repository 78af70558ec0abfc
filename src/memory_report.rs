//! `MemoryReport`: where a training step's bytes go on every rank, from shapes alone — nothing
//! is built, so a model far larger than this machine (`gpt2-xl`) can be reported.
//!
//! Per rank: the model states — parameters, gradients, `f32` master weights (mixed precision)
//! and optimizer state, by the stages' own rule (`ModelStates`, through `ModelSpec::footprint`,
//! which the tests hold equal to built stages byte for byte; with ZeRO stage 1 the optimizer
//! state of the largest slice, replica 0's: [`ReplicaBytes`]) — then what one
//! micro-batch keeps in each phase (`F` keeps, `R` re-creates, `I` keeps for `W`, by
//! `StageSpec::checked_bytes`), how many micro-batches the schedule holds at once, and the
//! simulator's peak of the rank's held bytes: the number `run` measures and predicts
//! (`predicted_peak_held_bytes`), equal to it by construction — the same per-stage bytes fed
//! to the same simulator. Messages in flight are the simulator's at equal op times (they
//! depend on timing; held bytes do not). Workspace, input data and bookkeeping are the
//! footprint's upper bounds, as the memory check before a run counts them.
//!
//! With data parallelism each stage also keeps the buffer its gradients are summed in, one
//! `f32` a trained parameter (`sum_buffer_bytes`, [`ReplicaBytes`]; static, as the model states
//! are).
//!
//! Invariant: `total = peak_bytes + workspace + data + records`, and
//! `peak_held = model_states + sum_buffer + activation_peak`.

use pipesched_schedules::{simulate, CostModel, DataParallel, Schedule, Stats};
use pipesched_stages::{microbatches_in_flight, LayerSpec, Load, ModelSpec, OptimizerSpec, StageSpec};
use serde::Serialize;

use crate::replica_bytes::ReplicaBytes;
use crate::{Error, Result};

/// What one micro-batch holds on a rank's stages, per phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PerMicrobatch {
    /// Kept by `F` until the backward, under the stages' recompute policies.
    pub f_keeps: u64,
    /// Re-created by `R` (under `optimal`, which has no `R`: the most its fused `I` holds above
    /// what `F` kept, which the held peak — sampled between actions, as `run` measures — leaves
    /// out).
    pub r_recreates: u64,
    /// Kept from `I` until `W`.
    pub i_keeps_for_w: u64,
}

/// Where one rank's bytes go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankMemory {
    /// The rank.
    pub rank: usize,
    /// Its model stages.
    pub stages: Vec<usize>,
    /// Parameters of its stages, trained and frozen.
    pub parameter_count: u64,
    /// Parameters of its stages that train (under LoRA, the adapters'; else all of them).
    pub trained_parameter_count: u64,
    /// Bytes of the parameters.
    pub parameter_bytes: u64,
    /// Bytes of the accumulated gradients.
    pub gradient_bytes: u64,
    /// Bytes of the `f32` master weights under mixed precision (this replica's slice under
    /// ZeRO-1; 0 otherwise).
    pub master_bytes: u64,
    /// Bytes of the optimizer state (this replica's slice under ZeRO-1).
    pub optimizer_bytes: u64,
    /// Parameters, gradients, master weights and optimizer state.
    pub model_state_bytes: u64,
    /// With data parallelism, the buffers its stages' gradients are summed over the replicas
    /// in: one `f32` a trained parameter, kept from step to step (0 with one replica).
    pub sum_buffer_bytes: u64,
    /// One micro-batch, summed over its stages.
    pub per_microbatch: PerMicrobatch,
    /// Per stage, the most micro-batches held at once.
    pub in_flight: Vec<usize>,
    /// The simulator's peak of held bytes less the model states: activations at the peak.
    pub activation_peak_bytes: u64,
    /// The simulator's peak of held bytes (what `run` measures).
    pub peak_held_bytes: u64,
    /// The simulator's peak of live bytes, messages in flight included, at equal op times.
    pub peak_bytes: u64,
    /// The simulator's peak of host bytes: what offload moved off the device (0 without it).
    pub host_peak_bytes: u64,
    /// A bound on what one op allocates while it runs.
    pub workspace_bytes: u64,
    /// A bound on the step's inputs and targets.
    pub data_bytes: u64,
    /// A bound on bookkeeping records.
    pub records_bytes: u64,
    /// `peak_bytes` plus the bounds.
    pub total_bytes: u64,
}

/// One transformer layer's activations, pipesched's count next to Korthikanti et al.'s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TransformerLayer {
    /// Tokens per sequence `s`.
    pub seq: usize,
    /// Sequences per micro-batch `b`.
    pub sequences: usize,
    /// Width `h`.
    pub width: usize,
    /// Heads `a`.
    pub heads: usize,
    /// Bytes one micro-batch keeps in an attention layer and the MLP block after it, with no
    /// recompute (`f32`, dropout masks re-drawn from the seed rather than kept).
    pub pipesched_bytes: u64,
    /// `s·b·h·(34 + 5·a·s/h)`: Korthikanti et al. (2022), 16-bit activations and 1-byte
    /// dropout masks, no tensor parallelism.
    pub korthikanti_bytes: u64,
}

/// Where a step's bytes go, per rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryReport {
    /// The model's name.
    pub model: String,
    /// The schedule's name.
    pub schedule: String,
    /// Ranks, chunks, micro-batches.
    pub p: usize,
    /// Chunks per rank.
    pub v: usize,
    /// Micro-batches per step.
    pub m: usize,
    /// Rows per micro-batch.
    pub rows: usize,
    /// Data-parallel replicas.
    pub dp: usize,
    /// The ZeRO stage (0 or 1).
    pub zero: u8,
    /// The precision it trains in (`f32`, `bf16`, `f16`, `mixed-bf16`, `mixed-f16`).
    pub precision: String,
    /// Parameters of the whole model, trained and frozen.
    pub parameter_count: u64,
    /// Parameters of the whole model that train (under LoRA, the adapters').
    pub trained_parameter_count: u64,
    /// Model states of the whole model on one replica (replica 0 under ZeRO-1: its slices of the
    /// optimizer state).
    pub model_state_bytes: u64,
    /// Per rank.
    pub ranks: Vec<RankMemory>,
    /// The first transformer layer (an attention layer followed by an MLP block), if any.
    pub transformer_layer: Option<TransformerLayer>,
}

impl MemoryReport {
    /// The report for `specs` (stages of `model`, one per model stage of `schedule`, which has
    /// its `R` actions planned) at `batch` samples per micro-batch, trained with `optimizer`
    /// over `dp`'s replicas.
    pub fn of(
        model: &ModelSpec,
        schedule: &Schedule,
        specs: &[StageSpec],
        batch: usize,
        optimizer: &OptimizerSpec,
        dp: DataParallel,
    ) -> Result<MemoryReport> {
        let rows = model.rows(batch).ok_or_else(|| {
            Error::Usage(format!(
                "{batch} samples per micro-batch of {}: the rows overflow; give a smaller --batch",
                model.name
            ))
        })?;
        if specs.len() != schedule.stages() {
            return Err(Error::Config(format!(
                "{} stage specs for a schedule of {} stages",
                specs.len(),
                schedule.stages()
            )));
        }
        let in_flight = microbatches_in_flight(schedule);
        let load = Load { batch: rows, microbatches: schedule.m, in_flight: in_flight.clone() };
        let footprint = model.footprint(specs, optimizer, &load)?;
        let mut per_stage = Vec::with_capacity(specs.len());
        for spec in specs {
            let bytes = spec.checked_bytes(model, rows).ok_or_else(|| {
                Error::Usage(format!(
                    "stage {}'s bytes per micro-batch overflow 64 bits; give a smaller --batch",
                    spec.index
                ))
            })?;
            per_stage.push(bytes);
        }
        // A stage's optimizer state: of all its parameters, or, under ZeRO-1, of the contiguous
        // slice replica 0 keeps (the largest).
        // A stage's master weights and optimizer state, `[master, moments]`.
        let replica = specs
            .iter()
            .map(|spec| ReplicaBytes::of(spec.param_counts(model).trained, optimizer, model.precision, dp))
            .collect::<Result<Vec<_>>>()?;
        let optimizer_parts = |s: usize| -> [u64; 2] {
            let f = &footprint.stages[s];
            if !dp.sharded {
                return [f.master, f.optimizer];
            }
            [replica[s].master, replica[s].optimizer]
        };
        let optimizer_of = |s: usize| -> u64 { optimizer_parts(s).iter().sum() };
        let sum_buffer = |s: usize| -> u64 { replica[s].sum_buffer };
        let stages = per_stage.iter().zip(&footprint.stages).enumerate();
        let costs = CostModel::of_bytes(
            stages
                .map(|(s, (b, f))| (b.cost(1.0, 1.0, 1.0), f.params + f.grads + optimizer_of(s) + sum_buffer(s)))
                .collect(),
            schedule.p,
            |s| schedule.rank_of(s),
        );
        let statics = costs.static_bytes.clone();
        let trace = simulate(schedule, &costs)?;
        let stats = Stats::of(&trace);
        let mut ranks = Vec::with_capacity(schedule.p);
        for (rank, &base) in statics.iter().enumerate() {
            let stages = schedule.stages_of(rank);
            let sum = |f: &dyn Fn(usize) -> u64| stages.iter().map(|&s| f(s)).sum::<u64>();
            let fp = |s: usize| &footprint.stages[s];
            let workspace = sum(&|s| fp(s).workspace);
            let data = sum(&|s| fp(s).data);
            let records = sum(&|s| fp(s).records);
            ranks.push(RankMemory {
                rank,
                parameter_count: sum(&|s| specs[s].param_counts(model).total().unwrap_or(u64::MAX)),
                trained_parameter_count: sum(&|s| specs[s].param_counts(model).trained),
                parameter_bytes: sum(&|s| fp(s).params),
                gradient_bytes: sum(&|s| fp(s).grads),
                master_bytes: sum(&|s| optimizer_parts(s)[0]),
                optimizer_bytes: sum(&|s| optimizer_parts(s)[1]),
                model_state_bytes: base - sum(&sum_buffer),
                sum_buffer_bytes: sum(&sum_buffer),
                per_microbatch: PerMicrobatch {
                    f_keeps: sum(&|s| per_stage[s].act_bytes),
                    r_recreates: sum(&|s| per_stage[s].recompute_bytes),
                    i_keeps_for_w: sum(&|s| per_stage[s].w_bytes),
                },
                in_flight: stages.iter().map(|&s| in_flight[s]).collect(),
                activation_peak_bytes: stats.peak_held_bytes[rank].saturating_sub(base),
                peak_held_bytes: stats.peak_held_bytes[rank],
                peak_bytes: stats.peak_bytes[rank],
                host_peak_bytes: trace.ranks[rank].peak_host_bytes(),
                workspace_bytes: workspace,
                data_bytes: data,
                records_bytes: records,
                total_bytes: stats.peak_bytes[rank] + workspace + data + records,
                stages,
            });
        }
        let model_state_bytes = ranks.iter().map(|r| r.model_state_bytes).sum();
        let whole = model.param_counts(&(0..model.num_layers())).unwrap_or_default();
        Ok(MemoryReport {
            model: model.name.clone(),
            schedule: schedule.name.clone(),
            p: schedule.p,
            v: schedule.v,
            m: schedule.m,
            rows,
            dp: dp.replicas,
            zero: u8::from(dp.sharded),
            precision: model.precision.to_string(),
            parameter_count: whole.total().unwrap_or(u64::MAX),
            trained_parameter_count: whole.trained,
            model_state_bytes,
            ranks,
            transformer_layer: transformer_layer(model, batch),
        })
    }
}

/// The first attention layer followed by an MLP block, counted both ways.
fn transformer_layer(model: &ModelSpec, sequences: usize) -> Option<TransformerLayer> {
    let layers = model.all_layers();
    let k = layers
        .windows(2)
        .position(|w| matches!((w[0], w[1]), (LayerSpec::Attention { .. }, LayerSpec::Block { .. })))?;
    let LayerSpec::Attention { width, heads, seq, .. } = layers[k] else { return None };
    let rows = (sequences as u64).checked_mul(seq as u64)?;
    let kept = |l: &LayerSpec| l.saved_per_row_in(model).map(|f| f as u64);
    let floats = kept(&layers[k])?.checked_add(kept(&layers[k + 1])?)?;
    let (s, b, h, a) = (seq as u64, sequences as u64, width as u64, heads as u64);
    // s·b·h·34 + 5·a·s²·b, exactly.
    let quadratic = a.checked_mul(s)?.checked_mul(s)?.checked_mul(b)?.checked_mul(5)?;
    let korthikanti = s.checked_mul(b)?.checked_mul(h)?.checked_mul(34)?.checked_add(quadratic)?;
    Some(TransformerLayer {
        seq,
        sequences,
        width,
        heads,
        pipesched_bytes: floats.checked_mul(rows)?.checked_mul(model.precision.stored_bytes())?,
        korthikanti_bytes: korthikanti,
    })
}
