//! The one error type of `pipesched-stages`.
//!
//! Misuse of a stage (an op out of order, a wrong shape, an unknown micro-batch) is an error
//! value, never a panic. Every message says what was wrong, where (stage, layers, micro-batch),
//! and what to do about it.

use thiserror::Error;

/// Errors of the stages crate.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// A tensor has the wrong shape for where it was passed (a stage input, a gradient, a target,
    /// a matrix product).
    #[error("shape mismatch in {place}: {reason}")]
    Shape {
        /// Where: the stage and op, or the tensor operation.
        place: String,
        /// The shapes seen and expected.
        reason: String,
    },

    /// An op was called on a micro-batch in a state that does not allow it (backward before
    /// forward, `W` before `I`, a second forward of a micro-batch still in flight, ...).
    #[error("{place}: {reason}")]
    Order {
        /// The stage, op and micro-batch.
        place: String,
        /// What state the micro-batch is in and which op has to come first.
        reason: String,
    },

    /// A micro-batch index outside `0..m` of the current step, or an op before `begin_step`.
    #[error("{place}: micro-batch {mb} is not part of this step (m = {m}); {hint}")]
    UnknownMicrobatch {
        /// The stage and op.
        place: String,
        /// The index passed.
        mb: usize,
        /// Micro-batches in the current step (0 before `begin_step`).
        m: usize,
        /// What to do.
        hint: String,
    },

    /// A model spec that cannot be built, could not be read from TOML or JSON, or cannot be
    /// written as TOML (a seed beyond its integers).
    #[error("model spec: {0}")]
    Spec(String),

    /// Text data that cannot be used: a missing, empty or too short file.
    #[error("data: {0}")]
    Data(String),

    /// A recompute policy string that could not be parsed, or a list of the wrong length.
    #[error("recompute policy: {0}")]
    Policy(String),

    /// A partition of the model's layers into stages that does not fit the model.
    #[error("partition: {0}")]
    Partition(String),

    /// A device that cannot be used (no driver, no such GPU, a missing library), a failed GPU
    /// call, or tensors of two devices given to one operation.
    #[error("device {device}: {reason}")]
    Device {
        /// The device as written (`cuda:0`).
        device: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// Tensors of two element types (`f32` and `f64`) given to one operation, an `f64` tensor
    /// given to what runs in `f32` only (a GPU, an optimizer), or a tensor read as the other type.
    #[error("element type in {place}: {reason}")]
    Dtype {
        /// The operation.
        place: String,
        /// The types seen and what to convert.
        reason: String,
    },

    /// A memory estimate that cannot be made: a byte count that overflows 64 bits at the batch
    /// or micro-batch count asked for, or estimate inputs that do not match the stages.
    #[error("size estimate: {what}; {hint}")]
    Size {
        /// What could not be counted, with the numbers.
        what: String,
        /// What to change.
        hint: String,
    },

    /// Per-layer costs that cannot be composed into stages: another model's (a different count
    /// or kind of layers), or with times that are not finite numbers ≥ 0.
    #[error("per-layer costs: {0}")]
    Costs(String),

    /// An optimizer asked to step on gradients that are not complete, or with bad settings.
    #[error("optimizer: {0}")]
    Optimizer(String),

    /// A chain for the checkpointing algorithms that cannot be used: no layers, a time that is
    /// NaN, infinite or negative, or bytes that overflow.
    #[error("checkpointing chain: {0}")]
    Chain(String),

    /// A memory budget below the least any checkpointing strategy needs for the chain, or one
    /// that the discretisation into slots cannot reach.
    #[error("checkpointing budget of {budget} bytes: {reason}")]
    Budget {
        /// The budget asked for, in bytes.
        budget: u64,
        /// What is short, with the smallest feasible budget, and what to do.
        reason: String,
    },

    /// A parameters file that cannot be read, written or loaded: a damaged or truncated file, a
    /// tensor of another shape, one missing, or tensors of another model.
    #[error("parameters file {file}: {reason}")]
    Params {
        /// The file (or, for parts gathered from other processes, what they are).
        file: String,
        /// What is wrong, and what to do.
        reason: String,
    },

    /// A checkpointing sequence with a step that lacks what it needs, or that ends before the
    /// first layer's backward.
    #[error("checkpointing sequence, step {index} ({step}): {reason}")]
    Sequence {
        /// Position of the step in the sequence (its length when the sequence ends too early).
        index: usize,
        /// The step, as written (`Fck3`), or `end`.
        step: String,
        /// What it needed and what was held.
        reason: String,
    },
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
