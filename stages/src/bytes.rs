//! Byte predictions for one micro-batch of a stage, from shapes alone.
//!
//! The three numbers mean what the schedules crate's `StageCost` fields mean, and follow the
//! simulator's convention: `F` keeps `act_bytes` from its start until `I`/`B` ends; `R` adds
//! `recompute_bytes`; `I` shrinks the micro-batch to `w_bytes`; `W`/`B` frees it. Transient
//! temporaries inside one op are not counted. Invariant: a [`Stage`](crate::Stage)'s
//! `held_bytes_of(mb)` equals these numbers after every op (tested in `stage.rs` for every
//! policy), and `act_bytes + recompute_bytes` is the same for every policy but `optimal` (what
//! `none` keeps).
//!
//! Counts are in units of the stored element ([`Precision::stored_bytes`]: 4 bytes, or 2 under
//! mixed precision). Exact `f32` values kept beside 16-bit activations — token ids, the model
//! input a checkpoint keeps on the first stage, targets and the loss's state — count
//! [`Precision::units_per_f32`] units each; [`Rows::in_units`] and [`LossRows::of`] are where
//! that is applied.
//!
//! `optimal` has no `R`: its `recompute_bytes` is what its `I` holds at most above `act_bytes`
//! between the steps it interleaves (see `optimal.rs`), so `act_bytes + recompute_bytes` is the
//! most a micro-batch holds on the stage, as under every other policy — inside `I`, where the
//! ledger counts it as the op's working bytes ([`Stage::working_bytes`](crate::Stage::working_bytes)).

use pipesched_schedules::StageCost;
use serde::{Deserialize, Serialize};

use crate::layers::Layer;
use crate::loss::LossKind;
use crate::model_states::ParamCount;
use crate::optimal::{OptimalPlan, MAX_LAYERS};
use crate::partition::StageSpec;
use crate::policy::{Kept, RecomputePolicy};
use crate::precision::Precision;
use crate::spec::{LayerSpec, ModelSpec};

/// Bytes one micro-batch holds on a stage in each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StageBytes {
    /// Kept by `F` until the backward (under the stage's recompute policy).
    pub act_bytes: u64,
    /// Re-created by `R` (what the policy dropped).
    pub recompute_bytes: u64,
    /// Kept from `I` until `W`.
    pub w_bytes: u64,
    /// The activation `F` sends to the next stage (none from the last stage).
    #[serde(default)]
    pub fwd_msg_bytes: u64,
    /// The input gradient `I`/`B` sends to the previous stage (none from the first stage).
    #[serde(default)]
    pub bwd_msg_bytes: u64,
}

impl StageBytes {
    /// Every count at `u64::MAX`: what a prediction that overflows reports.
    pub const SATURATED: StageBytes = StageBytes {
        act_bytes: u64::MAX,
        recompute_bytes: u64::MAX,
        w_bytes: u64::MAX,
        fwd_msg_bytes: u64::MAX,
        bwd_msg_bytes: u64::MAX,
    };

    /// A `StageCost` with these bytes and the given times.
    pub fn cost(&self, f: f64, i: f64, w: f64) -> StageCost {
        StageCost {
            act_bytes: self.act_bytes,
            recompute_bytes: self.recompute_bytes,
            w_bytes: self.w_bytes,
            fwd_msg_bytes: self.fwd_msg_bytes,
            bwd_msg_bytes: self.bwd_msg_bytes,
            ..StageCost::times(f, i, w)
        }
    }
}

impl StageSpec {
    /// Whether this stage ends the model (holds the head and the loss).
    pub fn is_last(&self, model: &ModelSpec) -> bool {
        self.layers.end == model.num_layers()
    }

    /// Parameters of this stage's layers, trained and frozen (saturating; a validated model
    /// never gets there).
    pub fn param_counts(&self, model: &ModelSpec) -> ParamCount {
        model.param_counts(&self.layers).unwrap_or(ParamCount { trained: u64::MAX, frozen: u64::MAX })
    }

    /// Bytes one micro-batch of `batch` rows holds on this stage, per phase (saturating at
    /// `u64::MAX`; [`checked_bytes`](StageSpec::checked_bytes) says when that happens).
    pub fn predicted_bytes(&self, model: &ModelSpec, batch: usize) -> StageBytes {
        self.checked_bytes(model, batch).unwrap_or(StageBytes::SATURATED)
    }

    /// An error unless this stage's policy can run on micro-batches of `batch` rows: under
    /// `optimal:BYTES`, a budget below the stage's least (the error names it) or a stage the
    /// program cannot plan. Other policies always can.
    pub fn check_policy(&self, model: &ModelSpec, batch: usize) -> crate::error::Result<()> {
        let crate::RecomputePolicy::Optimal(budget) = self.policy else { return Ok(()) };
        let layers = SpecLayers { model, range: self.layers.clone() };
        let loss = self.is_last(model).then(|| LossRows::of(model.loss, model.output_width(), model.precision));
        let scale = (batch as u64).saturating_mul(model.precision.stored_bytes());
        let input = self.layers.start == 0;
        optimal_plan(&layers, budget, loss, scale, batch, model_input_units(input, model.precision))
            .map(|_| ())
            .map_err(|e| crate::error::Error::Policy(format!("stage {} (layers {:?}): {e}", self.index, self.layers)))
    }

    /// Bytes one micro-batch of `batch` rows holds on this stage, per phase; `None` if a count
    /// overflows or the stage's range holds no layer of `model`. Time independent of the number
    /// of layers.
    pub fn checked_bytes(&self, model: &ModelSpec, batch: usize) -> Option<StageBytes> {
        let layers = SpecLayers { model, range: self.layers.clone() };
        let loss = self.is_last(model).then_some((model.loss, model.output_width()));
        stage_bytes(&layers, self.policy, self.layers.start == 0, loss, batch, model.precision)
    }
}

/// One layer as the byte rule sees it: its widths and the floats it keeps per row (for a
/// profiled layer, the bytes of one micro-batch: any unit the counts are linear in).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows {
    /// Input width: what a checkpoint of its input keeps.
    pub input: usize,
    /// Output width.
    pub output: usize,
    /// Floats the forward keeps per row (`None`: more than a `usize`).
    pub saved: Option<usize>,
    /// Floats `I` keeps per row for `W`.
    pub w: Option<usize>,
    /// Floats the forward keeps per row under selective recompute.
    pub selective: Option<usize>,
    /// `Σ in·out` over the forward's matrix products (per row; 0 where unknown): the time
    /// proxy of `optimal`'s program.
    pub maps: usize,
}

/// A stage's layers, in order, as the byte rule reads them.
pub(crate) trait StageRows {
    /// Σ `f(layer)` over the layers at positions `0, step, 2·step, …`; `None` on overflow.
    fn sum(&self, step: usize, f: fn(&Rows) -> Option<usize>) -> Option<usize>;
    /// The first layer and the last (`None` for no layers).
    fn ends(&self) -> Option<(Rows, Rows)>;
    /// Every layer, in order (`None` for more than `optimal::MAX_LAYERS`).
    fn each(&self) -> Option<Vec<Rows>>;
}

/// A stage of a [`ModelSpec`], summed over runs of identical layers (time independent of their
/// number).
struct SpecLayers<'a> {
    model: &'a ModelSpec,
    range: std::ops::Range<usize>,
}

impl StageRows for SpecLayers<'_> {
    fn sum(&self, step: usize, f: fn(&Rows) -> Option<usize>) -> Option<usize> {
        self.model.sum_over(&self.range, step, |l| f(&l.rows(self.model)))
    }
    fn ends(&self) -> Option<(Rows, Rows)> {
        if self.range.is_empty() {
            return None;
        }
        let first = self.model.layer(self.range.start)?;
        let last = self.model.layer(self.range.end.checked_sub(1)?)?;
        Some((first.rows(self.model), last.rows(self.model)))
    }
    fn each(&self) -> Option<Vec<Rows>> {
        if self.range.len() > MAX_LAYERS {
            return None;
        }
        self.range.clone().map(|i| Some(self.model.layer(i)?.rows(self.model))).collect()
    }
}

/// The loss as the byte rule sees it, in the units of the layers' counts: what its backward
/// keeps, and the target a checkpointed last stage keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LossRows {
    /// Kept by the loss's forward for its backward.
    pub saved: usize,
    /// The target.
    pub target: usize,
}

impl LossRows {
    /// Units per row of a `kind` loss over `output` columns, in `precision`: its state and the
    /// target are `f32` in every precision.
    pub(crate) fn of(kind: LossKind, output: usize, precision: Precision) -> LossRows {
        let u = precision.units_per_f32();
        LossRows { saved: kind.saved_floats(1, output) * u, target: kind.target_width(output) * u }
    }
}

/// Units per value of a stage's first-layer input, which a checkpoint keeps as given: the model
/// input (`f32`) on the first stage, a stored activation elsewhere.
pub(crate) fn model_input_units(first: bool, precision: Precision) -> usize {
    if first {
        precision.units_per_f32()
    } else {
        1
    }
}

impl Rows {
    /// The counts of a layer that keeps `exact` exact `f32` values per row among its state, in
    /// units of `precision`'s stored element.
    pub(crate) fn in_units(self, exact: usize, precision: Precision) -> Rows {
        let extra = exact * (precision.units_per_f32() - 1);
        let add = |c: Option<usize>| c.and_then(|c| c.checked_add(extra));
        Rows { saved: add(self.saved), w: add(self.w), selective: add(self.selective), ..self }
    }
}

/// What one micro-batch holds on a stage per phase, in the units of its layers' counts (floats
/// per row, or bytes): the byte rule before it is scaled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    kept: usize,
    dropped: usize,
    w: usize,
    out: usize,
    input: usize,
}

impl Held {
    /// Each count times `scale`, as [`StageBytes`]; `None` on overflow.
    pub(crate) fn scaled(self, scale: u64) -> Option<StageBytes> {
        let b = |units: usize| (units as u64).checked_mul(scale);
        Some(StageBytes {
            act_bytes: b(self.kept)?,
            recompute_bytes: b(self.dropped)?,
            w_bytes: b(self.w)?,
            fwd_msg_bytes: b(self.out)?,
            bwd_msg_bytes: b(self.input)?,
        })
    }
}

/// The byte rule of a stage (see the module doc), in the units of the layers' counts
/// (`unit_bytes` bytes each, for micro-batches of `rows` rows): what one micro-batch holds per
/// phase under `policy`, for the
/// stage's `layers`, which begin the model when `first` and end it with `loss` when it is given.
/// `None` on overflow, without layers, or for an `optimal` budget the stage cannot meet
/// ([`optimal_plan`] says why). The one place a policy's bytes are worked out: for built stages,
/// for specs, and for stages composed of profiled layers.
pub(crate) fn held(
    layers: &(impl StageRows + ?Sized),
    policy: RecomputePolicy,
    first: bool,
    loss: Option<LossRows>,
    unit_bytes: u64,
    rows: usize,
    input_units: usize,
) -> Option<Held> {
    let (head, tail) = layers.ends()?;
    let count = layers.sum(1, |_| Some(1))?;
    let loss_saved = loss.map_or(0, |l| l.saved);
    let everything = layers.sum(1, |l| l.saved)?.checked_add(loss_saved)?;
    let w = layers.sum(1, |l| l.w)?;
    let mut peak_above = None;
    let kept = match policy.kept(count) {
        Kept::Optimal(budget) => {
            let plan = optimal_plan(layers, budget, loss, unit_bytes, rows, input_units).ok()?;
            peak_above = Some(usize::try_from(plan.peak_units() - plan.kept_units()).ok()?);
            usize::try_from(plan.kept_units()).ok()?
        }
        Kept::Everything => everything,
        // What each layer's selective forward keeps, and the loss's state.
        Kept::Selective => layers.sum(1, |l| l.selective)?.checked_add(loss_saved)?,
        // The input of every checkpointed layer (positions 0, k, 2k, … of the stage), and the
        // target on the last stage.
        // The first layer's input counts `input_units` units a value (the model input).
        Kept::Inputs(k) => layers
            .sum(k, |l| Some(l.input))?
            .checked_add(head.input * (input_units - 1))?
            .checked_add(loss.map_or(0, |l| l.target))?,
    };
    // What F sends on (the last layer's output) and what I/B sends back (the gradient of the
    // first layer's input); the model's ends send nothing.
    Some(Held {
        kept,
        dropped: peak_above.unwrap_or(everything.saturating_sub(kept)),
        w,
        out: if loss.is_some() { 0 } else { tail.output },
        input: if first { 0 } else { head.input },
    })
}

/// The `optimal` plan within `budget` bytes of a stage of `layers` (counts in units of
/// `unit_bytes` bytes, for micro-batches of `rows` rows, the first layer's input `input_units`
/// units a value), ending the model with `loss` when it is given: an error naming the least
/// budget when `budget` is below it, or saying why the stage cannot be planned.
pub(crate) fn optimal_plan(
    layers: &(impl StageRows + ?Sized),
    budget: u64,
    loss: Option<LossRows>,
    unit_bytes: u64,
    rows: usize,
    input_units: usize,
) -> crate::error::Result<OptimalPlan> {
    let mut each = layers.each().ok_or_else(|| {
        crate::error::Error::Policy(format!(
            "optimal: the stage has more than {MAX_LAYERS} layers; split the model into more stages"
        ))
    })?;
    if let Some(first) = each.first_mut() {
        first.input *= input_units;
    }
    OptimalPlan::new(&each, loss.map(|l| l.saved), unit_bytes, rows, budget)
}

/// [`held`] in bytes for one micro-batch of `batch` rows stored in `precision`, the loss given
/// by its kind and the model's output width.
pub(crate) fn stage_bytes(
    layers: &(impl StageRows + ?Sized),
    policy: RecomputePolicy,
    first: bool,
    loss: Option<(LossKind, usize)>,
    batch: usize,
    precision: Precision,
) -> Option<StageBytes> {
    let loss = loss.map(|(kind, output)| LossRows::of(kind, output, precision));
    let scale = (batch as u64).checked_mul(precision.stored_bytes())?;
    held(layers, policy, first, loss, scale, batch, model_input_units(first, precision))?.scaled(scale)
}

/// A built stage's layers, summed one by one.
impl StageRows for [Box<dyn Layer>] {
    fn sum(&self, step: usize, f: fn(&Rows) -> Option<usize>) -> Option<usize> {
        self.iter().step_by(step.max(1)).try_fold(0usize, |t, l| t.checked_add(f(&rows(l.as_ref()))?))
    }
    fn ends(&self) -> Option<(Rows, Rows)> {
        Some((rows(self.first()?.as_ref()), rows(self.last()?.as_ref())))
    }
    fn each(&self) -> Option<Vec<Rows>> {
        Some(self.iter().map(|l| rows(l.as_ref())).collect())
    }
}

/// A built layer as the byte rule sees it, in units of its stored element.
pub(crate) fn rows(l: &dyn Layer) -> Rows {
    let raw = Rows {
        input: l.input_width(),
        output: l.output_width(),
        saved: Some(l.saved_per_row()),
        w: Some(l.w_per_row()),
        selective: Some(l.selective_per_row()),
        maps: l.linear_maps().iter().fold(0usize, |t, &(i, o)| t.saturating_add(i.saturating_mul(o))),
    };
    raw.in_units(l.exact_per_row(), Precision::of_storage(l.storage()))
}

impl LayerSpec {
    /// The layer as the byte rule sees it in `model` (under its LoRA, if any), in units of the
    /// model's stored element.
    pub(crate) fn rows(&self, model: &ModelSpec) -> Rows {
        let ([saved, selective, w], exact) = match &model.lora {
            Some(lora) => match self.floats_under(lora) {
                Some([s, sel, w, e]) => ([Some(s), Some(sel), Some(w)], e),
                None => ([None; 3], 0),
            },
            None => ([self.saved_per_row(), self.selective_per_row(), self.w_per_row()], self.exact_per_row()),
        };
        let raw = Rows {
            input: self.input_width(),
            output: self.output_width(),
            saved,
            w,
            selective,
            maps: self.maps_per_row_in(model),
        };
        raw.in_units(exact, model.precision)
    }

    /// Floats per row of the layer's state that are exact values (token ids): what
    /// [`Layer::exact_per_row`] says of the layer this spec builds.
    pub(crate) fn exact_per_row(&self) -> usize {
        match self {
            LayerSpec::Embedding { .. } => 1,
            LayerSpec::Linear { .. }
            | LayerSpec::Norm { .. }
            | LayerSpec::Block { .. }
            | LayerSpec::Attention { .. } => 0,
        }
    }

    /// `Σ in·out` over the matrix products of the forward of the layer this spec builds (its
    /// `linear_maps`), saturating.
    pub(crate) fn maps_per_row(&self) -> usize {
        match *self {
            LayerSpec::Linear { input, output } => input.saturating_mul(output),
            LayerSpec::Block { width, ffn } => width.saturating_mul(ffn).saturating_mul(2),
            LayerSpec::Attention { width, .. } => width.saturating_mul(width).saturating_mul(4),
            LayerSpec::Norm { .. } | LayerSpec::Embedding { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Partition;
    use crate::policy::{Policies, RecomputePolicy};

    fn single(model: &ModelSpec, policy: &str) -> StageBytes {
        let specs = model.stage_specs(1, &Partition::Even, &policy.parse::<Policies>().unwrap()).unwrap();
        specs[0].predicted_bytes(model, model.batch)
    }

    #[test]
    fn small_orders_policies_by_activation_bytes() {
        let m = ModelSpec::small();
        let none = single(&m, "none");
        let every2 = single(&m, "every:2");
        let sqrt = single(&m, "sqrt");
        let full = single(&m, "full");
        assert_eq!(none.recompute_bytes, 0);
        for mid in [every2, sqrt] {
            assert!(none.act_bytes > mid.act_bytes && mid.act_bytes > full.act_bytes, "{none:?} {mid:?} {full:?}");
        }
        for b in [every2, sqrt, full] {
            assert_eq!(b.act_bytes + b.recompute_bytes, none.act_bytes, "R re-creates what none keeps");
            assert_eq!(b.w_bytes, none.w_bytes);
        }
        // full keeps the model input and the regression targets: 128·(128 + 16) floats.
        assert_eq!(full.act_bytes, 4 * 128 * (128 + 16));
    }

    #[test]
    fn a_range_without_layers_predicts_nothing() {
        let m = ModelSpec::tiny();
        let spec = |layers| StageSpec { index: 0, layers, policy: RecomputePolicy::None, device: Default::default() };
        assert_eq!(spec(2..2).checked_bytes(&m, 4), None);
        assert_eq!(spec(40..41).checked_bytes(&m, 4), None);
        assert_eq!(spec(2..2).predicted_bytes(&m, 4), StageBytes::SATURATED);
        assert!(spec(2..3).checked_bytes(&m, 4).is_some());
    }

    #[test]
    fn cost_carries_the_bytes() {
        let b = StageBytes { act_bytes: 10, recompute_bytes: 5, w_bytes: 3, ..StageBytes::default() };
        let c = b.cost(1.0, 2.0, 0.5);
        assert_eq!((c.act_bytes, c.recompute_bytes, c.w_bytes, c.f, c.t_r()), (10, 5, 3, 1.0, 1.0));
        assert!(!RecomputePolicy::None.drops());
    }
}
