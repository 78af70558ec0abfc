//! Model stages with real compute for pipeline-parallel training: tensors, layers with an
//! explicit backward split into input (`I`) and weight (`W`) gradients, recompute policies,
//! partitioning, and exact byte accounting of what a stage keeps per micro-batch.
//!
//! ```
//! use pipesched_stages::{reference_step, ModelSpec, Partition, Policies, Stage, Task};
//!
//! let model = ModelSpec::tiny();
//! let specs = model.stage_specs(2, &Partition::Even, &"full,none".parse::<Policies>()?)?;
//! let task = Task::new(&model, 7);
//!
//! // A pipelined executor drives stages like this, in any valid order of ops.
//! let mut stages = Stage::build_all(&model, &specs)?;
//! for s in &mut stages { s.begin_step(0, 2)?; }
//! let (x0, t0) = task.batch(0, 0, model.batch);
//! let (x1, t1) = task.batch(0, 1, model.batch);
//! let a0 = stages[0].forward(0, x0, None)?;
//! let a1 = stages[0].forward(1, x1, None)?;
//! let l1 = stages[1].forward(1, a1, Some(&t1))?;          // micro-batch 1 first
//! let l0 = stages[1].forward(0, a0, Some(&t0))?;
//! let g1 = stages[1].backward_input(1, None)?;            // I(1): the loss gradient, scaled 1/m
//! let g0 = stages[1].backward(0, None)?;                  // B(0)
//! stages[1].backward_weight(1)?;                          // W(1) after W(0)
//! stages[0].recompute(1)?;                                // R: policy `full` dropped the rest
//! stages[0].backward(1, Some(g1))?;                       // out of order: parked until mb 0
//! stages[0].backward(0, Some(g0))?;
//!
//! // ... gives the sequential reference's gradients, bit for bit.
//! let (reference, grads) = reference_step(&model, &specs, &task, 0, 2, model.batch)?;
//! assert_eq!(reference.losses, vec![l0.data()[0], l1.data()[0]]);
//! for (stage, want) in stages.iter().zip(&grads) {
//!     assert!(stage.grads().iter().zip(want).all(|(g, w)| g.bit_eq(w)));
//! }
//! # Ok::<(), pipesched_stages::Error>(())
//! ```
//!
//! # For an executor
//!
//! - Call `begin_step(step, m)` on every stage with the same `step` and `m`. Any order of ops that
//!   respects the dependencies (F before R before I before W for a micro-batch; F(s) needs
//!   F(s−1)'s output, I(s) needs I(s+1)'s) gives the reference's bits: an op's result depends only
//!   on the parameters, its input, the step and the micro-batch.
//! - `W` (or `B`) calls may come in any micro-batch order; gradients that arrive before an earlier
//!   micro-batch's are parked, counted in `held_bytes_of(mb)` (not in `predicted_bytes`, which
//!   assumes in-order `W`s, as every generated schedule has), and added in order later.
//! - A stage counts what it keeps, not what it sends: activations and gradients in flight between
//!   ranks belong to the executor's ledger.
//! - The first stage computes its input gradient too; drop it. Combine the losses the last stage
//!   returns with [`mean_loss`], in micro-batch order.
//! - Bits are reproducible on one machine: `gemm` picks its kernels and blocking from the CPU, so
//!   another CPU model may round differently.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod backend;
mod byte_size;
mod bytes;
pub mod checkpointing;
mod corpus;
pub mod cuda;
mod device;
mod element;
mod error;
mod footprint;
pub mod gradcheck;
mod layer_cost;
mod layer_spec;
pub mod layers;
mod lora;
mod loss;
mod loss_scale;
mod matmul;
mod model_file;
mod model_states;
mod offload;
mod ops;
mod optim;
mod optimal;
mod params_file;
mod partition;
mod policy;
pub mod pool;
mod precision;
mod presets;
mod reference;
pub mod rng;
mod shard;
mod slot;
mod spec;
mod stage;
mod stale_reference;
mod task;
mod tensor;

pub use byte_size::ByteSize;
pub use bytes::StageBytes;
pub use corpus::Corpus;
pub use device::Device;
pub use element::{Dtype, Element};
pub use error::{Error, Result};
pub use footprint::{microbatches_in_flight, Footprint, Load, Part, StageFootprint};
pub use layer_cost::{ComposedStages, LayerBytes, LayerCost, LayerCosts, LayerTimes, LossCost};
pub use lora::{Lora, LoraTarget};
pub use loss::{LossKind, LossSaved};
pub use loss_scale::{LossScale, ScaleVerdict};
pub use matmul::GemmShape;
pub use model_file::{MODEL_FIELDS, MODEL_FILE_EXAMPLE, MODEL_FILE_HELP};
pub use model_states::{ModelStates, ParamCount};
pub use optim::{Optimizer, OptimizerSpec};
pub use optimal::{LayerKeep, OptimalPlan};
pub use params_file::{ParamsFile, Written, HEADER_LIMIT, PARAMS_FORMAT, PARAMS_VERSION};
pub use partition::{balanced_by_weight, Partition, StageSpec};
pub use policy::{Kept, Policies, RecomputePolicy};
pub use precision::{Format, Precision};
pub use reference::{
    check_chain, mean_loss, reference_step, sequential_step, sequential_step_in, train_step, StepOutput,
};
pub use shard::Shard;
pub use slot::Phase;
pub use spec::{Gpt, LayerSpec, Mlp, ModelSpec, Run};
pub use stage::Stage;
pub use stale_reference::{stale_run, StaleRun};
pub use task::{Task, TEACHER_WIDTH};
pub use tensor::Tensor;
