//! `Footprint`: the bytes a model split into stages will allocate for a training step, part by
//! part, estimated from shapes alone before anything is built — so a request that cannot fit is
//! refused before it is allocated, never by the allocator aborting halfway.
//!
//! Invariants: every count is computed with checked arithmetic (an overflow is an
//! [`Error::Size`], never a panic) in time independent of the number of layers; and the parts
//! the stages account for are computed by the stages' own rules — parameters, gradients and
//! optimizer state as [`Stage::static_bytes`](crate::Stage::static_bytes) counts them, the bytes
//! per micro-batch by [`StageSpec::checked_bytes`] — so the tests compare them with what built
//! stages hold, byte for byte. The other parts (messages, workspace, data, records) are upper
//! bounds of what the executor and the ops allocate besides; each field says what it bounds.

use std::mem::size_of;
use std::ops::Range;

use pipesched_schedules::{Op, Schedule};

use crate::bytes::StageBytes;
use crate::corpus::Corpus;
use crate::error::{Error, Result};
use crate::layers::{Block, Layer, LayerNorm, Linear, Saved, WNeeds};
use crate::model_states::ModelStates;
use crate::optim::OptimizerSpec;
use crate::partition::StageSpec;
use crate::slot::Slot;
use crate::spec::{LayerSpec, ModelSpec};
use crate::task::TEACHER_WIDTH;
use crate::tensor::Tensor;

const F32: u64 = 4;

/// Bytes of one built layer: its box and the largest built-in layer behind it.
const LAYER_RECORD: u64 =
    (size_of::<Box<dyn Layer>>() + max(size_of::<Block>(), max(size_of::<Linear>(), size_of::<LayerNorm>()))) as u64;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// What a step asks of the stages: rows per micro-batch, micro-batches, and how many
/// micro-batches each stage holds at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// Rows per micro-batch.
    pub batch: usize,
    /// Micro-batches per step (`m`).
    pub microbatches: usize,
    /// Per stage, the most micro-batches it holds at once (forwarded, last backward not yet
    /// run): [`microbatches_in_flight`] of the schedule, or `m` for every stage as a bound.
    pub in_flight: Vec<usize>,
}

/// The parts of a footprint, in the order reports list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The parameters.
    Parameters,
    /// The accumulated gradients.
    Gradients,
    /// The `f32` master weights (mixed precision only).
    MasterWeights,
    /// The optimizer's state (one tensor per parameter for SGD, two for Adam).
    OptimizerState,
    /// What the micro-batches in flight keep for their backward.
    Activations,
    /// Activations and gradients sent between stages and not yet consumed.
    Messages,
    /// The step's inputs (first stage) and targets (last stage), made before the step.
    Data,
    /// What one op allocates while it runs.
    Workspace,
    /// Bookkeeping: layer, tensor and per-micro-batch records.
    Records,
    /// The teacher task's weights and the model's layer list, once per model.
    Shared,
}

impl Part {
    /// Every part.
    pub const ALL: [Part; 10] = [
        Part::Parameters,
        Part::Gradients,
        Part::MasterWeights,
        Part::OptimizerState,
        Part::Activations,
        Part::Messages,
        Part::Data,
        Part::Workspace,
        Part::Records,
        Part::Shared,
    ];

    /// How a report names it.
    pub fn name(self) -> &'static str {
        match self {
            Part::Parameters => "parameters",
            Part::Gradients => "gradients",
            Part::MasterWeights => "f32 master weights",
            Part::OptimizerState => "optimizer state",
            Part::Activations => "activations kept for the backward",
            Part::Messages => "activations and gradients between stages",
            Part::Data => "input and target data",
            Part::Workspace => "op workspace",
            Part::Records => "bookkeeping",
            Part::Shared => "task and layer list",
        }
    }
}

/// The bytes one stage allocates for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFootprint {
    /// Position in the pipeline.
    pub index: usize,
    /// Global indices of its layers.
    pub layers: Range<usize>,
    /// What one micro-batch holds in each phase (the stages' own accounting).
    pub per_microbatch: StageBytes,
    /// Micro-batches held at once (at most `m`).
    pub in_flight: usize,
    /// Its parameters as stored (4 or 2 bytes each, [`ModelStates`]):
    /// [`Stage::param_bytes`](crate::Stage::param_bytes).
    pub params: u64,
    /// The gradient buffers, as many bytes as the parameters.
    pub grads: u64,
    /// The `f32` master weights under mixed precision (else 0).
    pub master: u64,
    /// The optimizer's moments: one or two `f32` copies of the parameters.
    pub optimizer: u64,
    /// `in_flight ×` the most one micro-batch holds in any phase (after `R`: what policy `none`
    /// keeps; after `I`: what `W` needs).
    pub activations: u64,
    /// A bound on the messages of this stage not yet consumed: its output activation and the
    /// gradient it receives back, for each micro-batch in flight (none on the last stage).
    pub messages: u64,
    /// The first stage's inputs and the last stage's targets for all `m` micro-batches.
    pub data: u64,
    /// A bound on what one op allocates while it runs: one micro-batch's parameter gradients
    /// (made by `W`, then added), plus the largest layer's kept, `W` and transient floats
    /// (`LayerSpec::transient_per_row`) for the batch.
    pub workspace: u64,
    /// Per-micro-batch slots and the executor's input/target/loss entries (`m` of each), the
    /// layer and tensor structs, and per-layer records of the micro-batches in flight.
    pub records: u64,
}

impl StageFootprint {
    /// The bytes of `part` (0 for [`Part::Shared`], which belongs to the whole model).
    pub fn part(&self, part: Part) -> u64 {
        match part {
            Part::Parameters => self.params,
            Part::Gradients => self.grads,
            Part::MasterWeights => self.master,
            Part::OptimizerState => self.optimizer,
            Part::Activations => self.activations,
            Part::Messages => self.messages,
            Part::Data => self.data,
            Part::Workspace => self.workspace,
            Part::Records => self.records,
            Part::Shared => 0,
        }
    }
}

/// The bytes a model's stages allocate for a step. Its total fits in a `u64` (checked when it
/// is made), so every part and sum of parts does too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// Per stage.
    pub stages: Vec<StageFootprint>,
    /// Once per model: the task's data (the teacher's weights and one batch's generation
    /// temporaries, or the generated text) and the list of layer specs each stage's build makes.
    pub shared: u64,
    total: u64,
}

impl Footprint {
    /// The bytes of `part`, over all stages.
    pub fn part(&self, part: Part) -> u64 {
        match part {
            Part::Shared => self.shared,
            _ => self.stages.iter().map(|s| s.part(part)).sum(),
        }
    }

    /// Every byte.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The non-empty parts, largest first.
    pub fn largest_parts(&self) -> Vec<(Part, u64)> {
        let mut parts: Vec<(Part, u64)> =
            Part::ALL.iter().map(|&p| (p, self.part(p))).filter(|&(_, b)| b > 0).collect();
        parts.sort_by_key(|&(_, bytes)| std::cmp::Reverse(bytes));
        parts
    }
}

/// For each model stage of `schedule`, the most micro-batches it holds at once: forwarded and
/// not yet released by their last backward (`W`, or `B`). Exact from the lane order alone — a
/// stage's actions all run on one rank, in lane order — and linear in the schedule's length.
pub fn microbatches_in_flight(schedule: &Schedule) -> Vec<usize> {
    let n = schedule.stages();
    let (mut now, mut most) = (vec![0usize; n], vec![0usize; n]);
    for a in schedule.actions() {
        let Some(count) = now.get_mut(a.stage()) else { continue };
        match a.op {
            Op::F => {
                *count += 1;
                most[a.stage()] = most[a.stage()].max(*count);
            }
            Op::B | Op::W => *count = count.saturating_sub(1),
            // An offloaded micro-batch is still in flight: its bytes come back before its backward.
            Op::I | Op::R | Op::O | Op::L => {}
        }
    }
    most
}

impl LayerSpec {
    /// Floats per row an op of the layer holds for a moment beyond what it keeps: attention's
    /// backward holds the probabilities after dropout and their gradient (`heads·seq` each);
    /// the other layers' temporaries are no larger than what they keep. `None` on overflow.
    pub fn transient_per_row(&self) -> Option<usize> {
        match *self {
            LayerSpec::Attention { heads, seq, .. } => heads.checked_mul(seq)?.checked_mul(2),
            _ => Some(0),
        }
    }

    /// Number of parameter tensors (each has a gradient and optimizer state tensors).
    pub fn tensor_count(&self) -> usize {
        match self {
            LayerSpec::Linear { .. } | LayerSpec::Norm { .. } | LayerSpec::Embedding { .. } => 2,
            LayerSpec::Block { .. } | LayerSpec::Attention { .. } => 6,
        }
    }
}

impl ModelSpec {
    /// The bytes `specs` (stages of this model) allocate for a step of `load` trained with
    /// `optimizer`. An error if the model is invalid, a stage's layers lie outside it, `load`
    /// does not give one in-flight count per stage, or a count overflows 64 bits.
    pub fn footprint(&self, specs: &[StageSpec], optimizer: &OptimizerSpec, load: &Load) -> Result<Footprint> {
        self.validate()?;
        if load.in_flight.len() != specs.len() {
            return Err(Error::Size {
                what: format!("{} in-flight counts for {} stages", load.in_flight.len(), specs.len()),
                hint: "give one per stage (microbatches_in_flight of the schedule)".into(),
            });
        }
        for spec in specs {
            if spec.layers.is_empty() || spec.layers.end > self.num_layers() {
                return Err(Error::Partition(format!(
                    "stage {} has layers {:?}, but {} has layers 0..{}",
                    spec.index,
                    spec.layers,
                    self.name,
                    self.num_layers()
                )));
            }
        }
        for spec in specs {
            spec.check_policy(self, load.batch)?;
        }
        let overflow = |what: &str| Error::Size {
            what: format!(
                "{what} of {} at {} rows per micro-batch and m = {} overflows 64 bits",
                self.name, load.batch, load.microbatches
            ),
            hint: "use a smaller batch or fewer micro-batches".into(),
        };
        let stages = specs
            .iter()
            .zip(&load.in_flight)
            .map(|(spec, &in_flight)| {
                self.stage_footprint(spec, optimizer, load, in_flight)
                    .ok_or_else(|| overflow(&format!("stage {}", spec.index)))
            })
            .collect::<Result<Vec<_>>>()?;
        let shared = self.shared_bytes(load.batch).ok_or_else(|| overflow("the task"))?;
        let total = stages
            .iter()
            .try_fold(shared, |t, s| Part::ALL.iter().try_fold(t, |t, &p| t.checked_add(s.part(p))))
            .ok_or_else(|| overflow("the total"))?;
        Ok(Footprint { stages, shared, total })
    }

    /// One stage's footprint; `None` on overflow.
    fn stage_footprint(
        &self,
        spec: &StageSpec,
        optimizer: &OptimizerSpec,
        load: &Load,
        in_flight: usize,
    ) -> Option<StageFootprint> {
        let (batch, m) = (load.batch as u64, load.microbatches as u64);
        let in_flight = in_flight.min(load.microbatches);
        let n = in_flight as u64;
        let layers = &spec.layers;
        let statics = ModelStates::of(self.param_counts(&spec.layers)?, optimizer, self.precision)?;
        let params = statics.params;
        let states = optimizer.states_per_param() as u64 + u64::from(self.precision.is_mixed());
        let per_microbatch = spec.checked_bytes(self, load.batch)?;
        let everything = per_microbatch.act_bytes.checked_add(per_microbatch.recompute_bytes)?;
        let activations = n.checked_mul(everything.max(per_microbatch.w_bytes))?;
        let (first, last) = (layers.start == 0, spec.is_last(self));
        let output = self.layer(layers.end.checked_sub(1)?)?.output_width() as u64;
        // Messages are stored activations and gradients (2 bytes a value under mixed precision).
        let stored = F32 / self.precision.stored_bytes();
        let messages = if last { 0 } else { rows_bytes(2 * n, batch, output)? / stored };
        let mut data = 0u64;
        if first {
            data = rows_bytes(m, batch, self.input_width() as u64)?;
        }
        if last {
            data = data.checked_add(rows_bytes(m, batch, self.loss.target_width(self.output_width()) as u64)?)?;
        }
        let loss_row = if last { self.loss.saved_floats(1, self.output_width()) } else { 0 };
        let widest = self
            .kinds_in(layers)
            .map(|l| l.saved_per_row()?.checked_add(l.w_per_row()?)?.checked_add(l.transient_per_row()?))
            .try_fold(loss_row, |w, l| Some(w.max(l?)))?;
        // One micro-batch's gradients: as many bytes as the gradient buffers.
        let workspace = statics.grads.checked_add(rows_bytes(1, batch, widest as u64)?)?;
        let tensors = self.sum_over(layers, 1, |l| l.tensor_count_in(self.lora.as_ref()))? as u64;
        let count = layers.len() as u64;
        let per_mb = (size_of::<Slot>() + 3 * size_of::<Option<Tensor>>()) as u64;
        // A layer's kept tensors: the list and the tensors in it (a block keeps the most, 6).
        let per_layer_mb = (size_of::<Saved>().max(size_of::<WNeeds>()) + 6 * size_of::<Tensor>()) as u64;
        let records = [
            m.checked_mul(per_mb)?,
            count.checked_mul(LAYER_RECORD)?,
            tensors.checked_mul(size_of::<Tensor>() as u64)?.checked_mul(1 + states)?,
            n.checked_mul(count)?.checked_mul(per_layer_mb)?,
        ]
        .iter()
        .try_fold(0u64, |t, &x| t.checked_add(x))?;
        Some(StageFootprint {
            index: spec.index,
            layers: layers.clone(),
            per_microbatch,
            in_flight,
            params,
            grads: statics.grads,
            master: statics.master,
            optimizer: statics.optimizer,
            activations,
            messages,
            data,
            workspace,
            records,
        })
    }

    /// The task's data (the teacher's weights and one batch's generation temporaries, or the
    /// generated corpus), and the list of layer specs.
    fn shared_bytes(&self, batch: usize) -> Option<u64> {
        let (input, output) = (self.input_width(), self.output_width());
        let task = if self.reads_tokens() {
            Corpus::DEFAULT_LEN as u64
        } else {
            let teacher = rows_bytes(input.checked_add(output)? as u64, 1, TEACHER_WIDTH as u64)?;
            let generate = rows_bytes(1, batch as u64, (TEACHER_WIDTH as u64).checked_add(output as u64)?)?;
            teacher.checked_add(generate)?
        };
        let list = (self.num_layers() as u64).checked_mul(size_of::<LayerSpec>() as u64)?;
        task.checked_add(list)
    }
}

/// `count × rows × width` floats, in bytes; `None` on overflow.
fn rows_bytes(count: u64, rows: u64, width: u64) -> Option<u64> {
    count.checked_mul(rows)?.checked_mul(width)?.checked_mul(F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Mlp;
    use crate::{Optimizer, Partition, Policies, Stage, Task};
    use pipesched_schedules::{gpipe, one_f_one_b, zb_h1};

    fn specs(model: &ModelSpec, stages: usize, partition: &Partition, policy: &str) -> Vec<StageSpec> {
        model.stage_specs(stages, partition, &policy.parse::<Policies>().unwrap()).unwrap()
    }

    #[test]
    fn static_parts_are_what_built_stages_hold() {
        let mixed = |m: ModelSpec, precision| ModelSpec { precision, ..m };
        for (model, counts) in [
            (ModelSpec::tiny(), vec![1, 2, 3]),
            (ModelSpec::small(), vec![3, 4, 4]),
            (mixed(ModelSpec::tiny(), crate::Precision::MixedBf16), vec![1, 2, 3]),
            (mixed(ModelSpec::small(), crate::Precision::MixedF16), vec![3, 4, 4]),
        ] {
            let splits = [
                (1, Partition::Even),
                (2, Partition::Balanced),
                (3, Partition::Even),
                (3, Partition::Explicit(counts)),
            ];
            for (n, partition) in &splits {
                let specs = specs(&model, *n, partition, "none");
                let built = Stage::build_all(&model, &specs).unwrap();
                for opt in [OptimizerSpec::sgd(0.1, 0.9), OptimizerSpec::adam(1e-3)] {
                    let load = Load { batch: model.batch, microbatches: 4, in_flight: vec![2; *n] };
                    let fp = model.footprint(&specs, &opt, &load).unwrap();
                    for (stage, f) in built.iter().zip(&fp.stages) {
                        let built = Optimizer::new(opt, stage).unwrap();
                        let (master, state) = (built.master_bytes(), built.state_bytes() - built.master_bytes());
                        assert_eq!(
                            (f.params, f.grads, f.master, f.optimizer),
                            (stage.param_bytes(), stage.grad_bytes(), master, state)
                        );
                        assert_eq!(f.params + f.grads + f.master + f.optimizer, stage.static_bytes(&opt));
                        let tensors: usize =
                            model.all_layers()[f.layers.clone()].iter().map(LayerSpec::tensor_count).sum();
                        assert_eq!(tensors, stage.params().len());
                    }
                    let (states, count) = (opt.states_per_param() as u64, model.param_count() as u64);
                    let stored = model.precision.stored_bytes();
                    assert_eq!(fp.part(Part::Parameters), stored * count);
                    assert_eq!(fp.part(Part::Gradients), stored * count);
                    assert_eq!(fp.part(Part::MasterWeights), if stored == 2 { 4 * count } else { 0 });
                    assert_eq!(fp.part(Part::OptimizerState), states * 4 * count);
                }
            }
        }
    }

    /// Runs `k` micro-batches of a step of `m` through two stages to the point where each holds
    /// the most, and checks the footprint's activations, messages, data and gradient workspace.
    fn check_a_step(model: &ModelSpec, policy: &str, k: usize, m: usize) {
        let specs = specs(model, 2, &Partition::Even, policy);
        let rows = model.rows(model.batch).unwrap();
        let load = Load { batch: rows, microbatches: m, in_flight: vec![k, k] };
        let fp = model.footprint(&specs, &OptimizerSpec::adam(1e-3), &load).unwrap();
        let mut stages = Stage::build_all(model, &specs).unwrap();
        for s in &mut stages {
            s.begin_step(0, m).unwrap();
        }
        let task = Task::new(model, 7);
        let (mut data, mut sent, mut returned) = ([0u64; 2], 0u64, 0u64);
        for mb in 0..m {
            let (x, t) = task.batch(0, mb, rows);
            data[0] += x.bytes();
            data[1] += t.bytes();
            if mb < k {
                let a = stages[0].forward(mb, x, None).unwrap();
                sent += a.bytes();
                stages[1].forward(mb, a, Some(&t)).unwrap();
            }
        }
        for s in &mut stages {
            (0..k).for_each(|mb| s.recompute(mb).unwrap());
        }
        let after_r: Vec<u64> = stages.iter().map(Stage::held_bytes).collect();
        for mb in 0..k {
            let g = stages[1].backward_input(mb, None).unwrap();
            returned += g.bytes();
            stages[0].backward_input(mb, Some(g)).unwrap();
        }
        let after_i: Vec<u64> = stages.iter().map(Stage::held_bytes).collect();
        for s in 0..2 {
            assert_eq!(fp.stages[s].activations, after_r[s].max(after_i[s]), "{policy} stage {s}");
            assert_eq!(fp.stages[s].data, data[s], "{policy} stage {s}");
        }
        assert_eq!((fp.stages[0].messages, fp.stages[1].messages), (sent + returned, 0), "{policy}");
        // W out of order parks one micro-batch's gradients: the workspace's gradient share.
        stages[0].backward_weight(1).unwrap();
        assert_eq!(stages[0].held_bytes_of(1), fp.stages[0].params);
        assert!(fp.stages[0].workspace > fp.stages[0].params);
    }

    #[test]
    fn activations_messages_and_data_are_what_a_step_holds() {
        let mse = ModelSpec { loss: crate::LossKind::Mse, ..ModelSpec::tiny() };
        for model in [ModelSpec::tiny(), mse, ModelSpec::gpt_tiny()] {
            for policy in ["none", "full", "every:2", "sqrt", "selective", "full,none"] {
                check_a_step(&model, policy, 3, 5);
            }
        }
    }

    #[test]
    fn in_flight_counts_follow_the_lanes() {
        assert_eq!(microbatches_in_flight(&one_f_one_b(4, 8).unwrap()), vec![4, 3, 2, 1]);
        assert_eq!(microbatches_in_flight(&gpipe(4, 8).unwrap()), vec![8; 4]);
        // ZB-H1 releases a micro-batch at its deferred W: every rank holds p, rank 3 as
        // 3F0 3I0 3F1 3I1 3F2 3I2 3F3 3I3 3W0 shows.
        assert_eq!(microbatches_in_flight(&zb_h1(4, 8).unwrap()), vec![4; 4]);
    }

    #[test]
    fn parts_add_up_and_sort() {
        let model = ModelSpec::small();
        let specs = specs(&model, 4, &Partition::Even, "full");
        let load = Load { batch: 128, microbatches: 8, in_flight: vec![4, 3, 2, 1] };
        let fp = model.footprint(&specs, &OptimizerSpec::adam(1e-3), &load).unwrap();
        assert_eq!(fp.total(), Part::ALL.iter().map(|&p| fp.part(p)).sum::<u64>());
        let parts = fp.largest_parts();
        assert!(parts.windows(2).all(|w| w[0].1 >= w[1].1), "{parts:?}");
        assert_eq!(fp.stages.iter().map(|s| s.in_flight).collect::<Vec<_>>(), vec![4, 3, 2, 1]);
        let capped = Load { in_flight: vec![100; 4], ..load };
        let fp = model.footprint(&specs, &OptimizerSpec::adam(1e-3), &capped).unwrap();
        assert!(fp.stages.iter().all(|s| s.in_flight == 8), "at most m micro-batches are in flight");
    }

    #[test]
    fn overflowing_loads_are_errors_not_panics() {
        let model = ModelSpec::small();
        let specs = specs(&model, 2, &Partition::Even, "none");
        let adam = OptimizerSpec::adam(1e-3);
        let e = model.footprint(&specs, &adam, &Load { batch: usize::MAX, microbatches: 8, in_flight: vec![2, 1] });
        let e = e.unwrap_err().to_string();
        assert!(e.contains("at 18446744073709551615 rows per micro-batch") && e.contains("smaller batch"), "{e}");
        let e = model.footprint(&specs, &adam, &Load { batch: 128, microbatches: usize::MAX, in_flight: vec![2, 1] });
        assert!(matches!(e, Err(Error::Size { .. })), "{e:?}");
        let e = model.footprint(&specs, &adam, &Load { batch: 128, microbatches: 8, in_flight: vec![2] });
        assert!(e.unwrap_err().to_string().contains("1 in-flight counts for 2 stages"));
        let mut outside = specs.clone();
        outside[1].layers = 5..12;
        let e = model.footprint(&outside, &adam, &Load { batch: 128, microbatches: 8, in_flight: vec![2, 1] });
        assert!(matches!(e, Err(Error::Partition(_))), "{e:?}");
    }

    #[test]
    fn a_deep_model_is_counted_without_listing_its_layers() {
        let deep = ModelSpec::small()
            .with_mlp(|s| *s = Mlp { input: 1, hidden: 1, ffn: 1, output: 1, blocks: 1 << 40 })
            .unwrap();
        let specs = specs(&deep, 4, &Partition::Balanced, "every:3");
        let load = Load { batch: 2, microbatches: 4, in_flight: vec![4; 4] };
        let fp = deep.footprint(&specs, &OptimizerSpec::adam(1e-3), &load).unwrap();
        assert_eq!(fp.part(Part::Parameters), 4 * deep.param_count() as u64);
        assert_eq!(deep.param_count(), 2 + 6 * (1 << 40) + 2 + 2);
        assert!(fp.part(Part::Records) > (1u64 << 40) * LAYER_RECORD);
    }
}
