//! The forward-only pass through the pipeline (inference and evaluation): [`Model::infer`]
//! runs a forward-only schedule ([`Schedule::is_forward_only`], such as
//! [`forward_only`](pipesched_schedules::forward_only)) over the model's stages on the executor —
//! one worker per rank, the same links, ledger and trace as a training step — each stage in
//! evaluation mode ([`Stage::evaluate`]: dropout off, nothing kept for a backward).
//!
//! Micro-batch `j` of the pass is the task's held-out micro-batch `j`, the one the sequential
//! validation walk ([`Model::validation_loss`]) runs as its `j`-th: each stage runs the same
//! [`Stage::evaluate`] on the same input, so the pass's per-micro-batch losses equal the walk's
//! bit for bit.
//!
//! What the ledger counts (the rule in `pipesched_schedules::Ledger`): a rank holds its stages'
//! parameters from the start (no gradients and no optimizer state: nothing is trained), and
//! nothing else between actions; a forward holds, only while it runs, the input it consumes and
//! the output it computes into — at most two activations per rank at a time. An output sent to
//! another stage counts as a message in flight on its consumer until that consumer's forward
//! starts. [`Model::inference_bytes`] predicts these from shapes alone: the input is
//! `rows × input width` values (the first stage's: the task's input), the output
//! `rows × output width` (the last stage's: its `1 × 1` loss), 4 bytes each.

use pipesched_schedules::{CostModel, Schedule, StageCost, Trace};
use pipesched_stages::{Stage, Tensor};

use crate::exec::{execute, ExecOptions, StageWork, Transport};
use crate::model::Model;
use crate::workload::Layout;
use crate::{Error, Result};

/// One stage in evaluation mode, as the executor drives it through a forward-only schedule.
struct Evaluating<'a> {
    stage: &'a mut Stage,
    /// The first stage's inputs, per micro-batch, taken by its forwards.
    inputs: Vec<Option<Tensor>>,
    /// The last stage's targets, per micro-batch.
    targets: Vec<Option<Tensor>>,
    /// The last stage's losses, per micro-batch (`[1, 1]` tensors, read after the pass).
    losses: Vec<Option<Tensor>>,
    /// Bytes of the input and the output of the last forward.
    working: u64,
}

impl Evaluating<'_> {
    fn refuse(&self, op: &str, mb: usize) -> Error {
        Error::Usage(format!(
            "stage {}, micro-batch {mb}: {op} in a forward-only pass, which keeps nothing for a backward; run a training schedule with `pipesched run`",
            self.stage.index()
        ))
    }
}

impl StageWork for Evaluating<'_> {
    type Payload = Tensor;
    type Error = Error;

    fn forward(&mut self, mb: usize, input: Option<Tensor>) -> Result<Option<Tensor>> {
        let index = self.stage.index();
        let x = match input {
            Some(x) => x,
            None => self.inputs.get_mut(mb).and_then(Option::take).ok_or_else(|| {
                Error::Usage(format!(
                    "stage {index} has no input for micro-batch {mb}: it is not the first stage, or it ran twice"
                ))
            })?,
        };
        let consumed = x.bytes();
        let target = self.targets.get(mb).and_then(Option::as_ref);
        if self.stage.is_last() && target.is_none() {
            return Err(Error::Usage(format!("the last stage has no target for micro-batch {mb}")));
        }
        let out = self.stage.evaluate(x, target)?;
        self.working = consumed + out.bytes();
        if self.stage.is_last() {
            self.losses[mb] = Some(out);
            return Ok(None);
        }
        Ok(Some(out))
    }

    fn recompute(&mut self, mb: usize) -> Result<()> {
        Err(self.refuse("a recompute", mb))
    }

    fn backward_input(&mut self, mb: usize, _grad: Option<Tensor>) -> Result<Option<Tensor>> {
        Err(self.refuse("a backward", mb))
    }

    fn backward_weight(&mut self, mb: usize) -> Result<()> {
        Err(self.refuse("a backward", mb))
    }

    fn backward(&mut self, mb: usize, _grad: Option<Tensor>) -> Result<Option<Tensor>> {
        Err(self.refuse("a backward", mb))
    }

    fn offload(&mut self, mb: usize) -> Result<()> {
        Err(self.refuse("an offload", mb))
    }

    fn reload(&mut self, mb: usize) -> Result<()> {
        Err(self.refuse("a reload", mb))
    }

    fn held_bytes(&self) -> u64 {
        0
    }

    fn working_bytes(&self) -> u64 {
        self.working
    }

    fn static_bytes(&self) -> u64 {
        self.stage.param_bytes()
    }

    fn payload_bytes(payload: &Tensor) -> u64 {
        payload.bytes()
    }
}

/// The result of a forward-only pass.
pub struct Inference {
    /// Each micro-batch's loss, in micro-batch order.
    pub losses: Vec<f32>,
    /// The measured trace.
    pub trace: Trace,
}

impl Model {
    /// Runs the held-out micro-batches `0…m−1` through the forward-only `schedule` (see the module
    /// doc). Leaves the parameters, the accumulated gradients and any step in flight as they
    /// were. Every stage must be in this process.
    pub fn infer(&mut self, schedule: &Schedule, opts: &ExecOptions) -> Result<Inference> {
        if !schedule.is_forward_only() {
            return Err(Error::Usage(format!(
                "{} trains (it has backward actions); a forward-only pass runs a schedule of forwards only: -s forward",
                schedule.name
            )));
        }
        if !matches!(opts.transport, Transport::InProcess) || self.stages.len() != self.specs.len() {
            return Err(Error::Usage(
                "a forward-only pass runs every stage in this process, ranks as threads; drop the processes".into(),
            ));
        }
        let (m, n) = (schedule.m, self.specs.len());
        let mut inputs: Vec<Option<Tensor>> = (0..m).map(|_| None).collect();
        let mut targets: Vec<Option<Tensor>> = (0..m).map(|_| None).collect();
        for j in 0..m {
            let (x, t) = self.task.validation(j, self.batch);
            inputs[j] = Some(x);
            targets[j] = Some(t);
        }
        let mut stages: Vec<Evaluating> = Vec::with_capacity(n);
        for (k, rs) in self.stages.iter_mut().enumerate() {
            let stage = rs.stage_mut();
            let (first, last) = (k == 0, k + 1 == n);
            stages.push(Evaluating {
                stage,
                inputs: if first { std::mem::take(&mut inputs) } else { Vec::new() },
                targets: if last { std::mem::take(&mut targets) } else { Vec::new() },
                losses: (0..if last { m } else { 0 }).map(|_| None).collect(),
                working: 0,
            });
        }
        let trace = execute(schedule, &mut stages, opts)?;
        let last = stages.last().ok_or_else(|| Error::Config("a model needs at least one stage".into()))?;
        let losses = last
            .losses
            .iter()
            .enumerate()
            .map(|(j, l)| {
                let l = l.as_ref().ok_or_else(|| Error::Config(format!("micro-batch {j} gave no loss")))?;
                Ok(l.values()?[0])
            })
            .collect::<Result<Vec<f32>>>()?;
        Ok(Inference { losses, trace })
    }

    /// The bytes of a forward-only pass over `layout`, predicted from shapes alone (see the
    /// module doc), as a cost model whose times are all 1: each stage's `act_bytes` are what its
    /// forward holds while it runs (input and output), its `fwd_msg_bytes` the output it sends,
    /// and each rank's static bytes its stages' parameters. Every stage must be in this process.
    pub fn inference_bytes(&self, layout: &Layout) -> Result<CostModel> {
        if self.stages.len() != self.specs.len() || layout.stages() != self.specs.len() {
            return Err(Error::Usage(format!(
                "predicting a forward-only pass over {} stages needs all {} of the model's stages in this process",
                layout.stages(),
                self.specs.len()
            )));
        }
        let value = std::mem::size_of::<f32>() as u64;
        let rows = self.batch as u64;
        let stages = self.stages.iter().map(|rs| {
            let stage = rs.stage();
            let input = rows * stage.input_width() as u64 * value;
            let output = if stage.is_last() { value } else { rows * stage.output_width() as u64 * value };
            let sent = if stage.is_last() { 0 } else { output };
            let cost = StageCost { act_bytes: input + output, fwd_msg_bytes: sent, ..StageCost::times(1.0, 1.0, 1.0) };
            (cost, stage.param_bytes())
        });
        Ok(CostModel::of_bytes(stages.collect(), layout.p, |s| layout.rank_of(s)))
    }
}
