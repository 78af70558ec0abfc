//! `StageWork`: what the executor needs from a model stage — the ops (`F R I W B`, and the
//! copies `O` and `L`) and an honest count of the bytes the stage holds, on its device and in
//! host memory.
//!
//! ## Design
//! The executor is generic over this trait so that real stages (tensors and layers) and
//! synthetic stages (sleeping for given times, holding given byte counts) run through the same
//! workers, links, ledger and hang diagnostics: whatever the executor measures on synthetic
//! stages is what it costs real ones.

use std::fmt::Display;
use std::time::Instant;

use pipesched_stages::{LayerCost, LossCost};

use super::wire::Wire;

/// A stage's layers' costs, in order, and its loss's on the last stage.
pub type StageLayers = (Vec<LayerCost>, Option<LossCost>);

/// One model stage as the executor drives it. Micro-batch indices are `0 … m−1`.
pub trait StageWork: Send {
    /// What flows between stages: activations forward, gradients back.
    type Payload: Send + Wire + 'static;
    /// The stage's own error type.
    type Error: Display;

    /// Forward of micro-batch `mb`. `input` is the previous stage's output, `None` on the first
    /// stage (which reads its own data). Returns the output for the next stage (`None` on the
    /// last stage, which ends in the loss).
    fn forward(&mut self, mb: usize, input: Option<Self::Payload>) -> Result<Option<Self::Payload>, Self::Error>;

    /// Re-creates what the recompute policy dropped for `mb`.
    fn recompute(&mut self, mb: usize) -> Result<(), Self::Error>;

    /// Input-gradient backward of `mb`. `grad` is the next stage's input gradient, `None` on
    /// the last stage (which starts from the loss). Returns the gradient for the previous stage
    /// (`None` on the first stage).
    fn backward_input(&mut self, mb: usize, grad: Option<Self::Payload>) -> Result<Option<Self::Payload>, Self::Error>;

    /// Weight-gradient backward of `mb`, after its `backward_input`.
    fn backward_weight(&mut self, mb: usize) -> Result<(), Self::Error>;

    /// Full backward of `mb`: input gradient and weight gradient.
    fn backward(&mut self, mb: usize, grad: Option<Self::Payload>) -> Result<Option<Self::Payload>, Self::Error>;

    /// Offload: moves what the stage keeps for `mb` into host memory, a copy in buffers of its
    /// own that [`host_bytes`](StageWork::host_bytes) counts; the device's bytes are released.
    /// An error if `mb` holds nothing to move or is already on the host.
    fn offload(&mut self, mb: usize) -> Result<(), Self::Error>;

    /// Reload: moves `mb`'s offloaded bytes back where its recompute and backward read them,
    /// bit for bit. An error if `mb` is not on the host.
    fn reload(&mut self, mb: usize) -> Result<(), Self::Error>;

    /// Bytes the stage holds in host memory right now (offloaded micro-batches). 0 (the
    /// default) for stages that never offload.
    fn host_bytes(&self) -> u64 {
        0
    }

    /// Applies the optimizer to the gradients of the micro-batches since the last update, in a
    /// run of steps back to back ([`ExecOptions::updates`](super::ExecOptions::updates)): called
    /// right after the stage's last backward of each update group, before its next action.
    /// Stages without weights do nothing (the default).
    fn update(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Bytes the stage holds right now for micro-batches in flight (not counting static bytes).
    fn held_bytes(&self) -> u64;

    /// Bytes the stage's last action held only while it ran (the ledger's working bytes), on
    /// top of what it holds before and after: a forward-only stage's input and output. 0 (the
    /// default) for stages whose every byte is in [`held_bytes`](StageWork::held_bytes).
    fn working_bytes(&self) -> u64 {
        0
    }

    /// Static bytes: parameters, gradients, optimizer state.
    fn static_bytes(&self) -> u64;

    /// Bytes of a payload: what a message in flight holds until its consumer takes it.
    fn payload_bytes(payload: &Self::Payload) -> u64;

    /// For the profiler: the costs of each of the stage's layers run alone on micro-batch 0 of
    /// a begun one-micro-batch step (`warmup` unmeasured runs, then the median of `reps`), given
    /// the stage's `input` (`None` on the first stage, which reads its own) and the gradient it
    /// receives (`None` on the last stage, which starts from its loss); with the loss's costs
    /// on the last stage. `None` (the default): a stage that is not made of layers.
    fn layer_costs(
        &mut self,
        _input: Option<&Self::Payload>,
        _grad: Option<&Self::Payload>,
        _warmup: usize,
        _reps: usize,
    ) -> Result<Option<StageLayers>, Self::Error> {
        Ok(None)
    }

    /// With data parallelism: waits for the sum of this step's gradients over the replicas,
    /// started when the stage's last backward ended, and puts it in place. Called by the
    /// executor once its rank's lane is done; returns when the sum ran, for the trace. `None`
    /// (the default): nothing was summed.
    fn finish_sum(&mut self) -> Result<Option<SumRan>, Self::Error> {
        Ok(None)
    }

    /// The clock of the device the stage's ops run on, for stages whose ops return before the
    /// device has run them (GPU streams). `None` (the default): an op's work is done when it
    /// returns, and host clocks time it.
    fn clock(&mut self) -> Option<&mut dyn DeviceClock> {
        None
    }
}

/// A sum of one stage's gradients over the replicas, as it ran on this process.
#[derive(Debug, Clone, Copy)]
pub struct SumRan {
    /// When the stage's last backward of the step handed its gradients to the sum.
    pub start: Instant,
    /// When this process's communication thread had the sum (or this replica's slice of it).
    pub end: Instant,
    /// Bytes of the stage's gradients.
    pub bytes: u64,
}

/// Timing on a device's own clock: marks recorded in order with the work queued on it.
///
/// The executor starts the clock before a rank's first action (with the device idle, so the
/// start is at the host time it was taken), marks before and after every op, and reads the marks
/// after the rank's last action. Spans, memory samples and transfers of that rank are then placed
/// at `host time of the start + device time since the start`.
pub trait DeviceClock {
    /// Waits until the device has run everything queued, then starts the clock; forgets marks.
    fn start(&mut self) -> Result<(), String>;
    /// Records a mark after the work queued so far; returns its index (0, 1, 2, … since start).
    fn mark(&mut self) -> Result<usize, String>;
    /// Waits for every mark, then returns each one's time in milliseconds since the start.
    fn read(&mut self) -> Result<Vec<f64>, String>;
}
