//! The cost table of one partition at one micro-batch size: every stage's composed cost under
//! every recompute policy tried, its static bytes, and its ladder — the policies a stage steps
//! through to keep less, `none` first.
//!
//! Invariant: along a ladder the bytes `F` keeps per micro-batch strictly decrease; a policy
//! that keeps no less than one before it (at no less recompute time) is left off.

use std::ops::Range;

use pipesched_schedules::StageCost;
use pipesched_stages::{LayerCosts, ModelSpec, RecomputePolicy, StageSpec};

use crate::Result;

/// The policies tried per stage, before those that keep no less than a cheaper one are dropped.
pub(super) fn policy_set(model: &ModelSpec) -> Vec<RecomputePolicy> {
    let mut set = vec![RecomputePolicy::None];
    if model.all_layers().iter().any(|l| l.kind() == "attention") {
        set.push(RecomputePolicy::Selective);
    }
    set.extend([RecomputePolicy::Every(2), RecomputePolicy::Sqrt, RecomputePolicy::Full]);
    set
}

/// Per stage and per policy, the composed cost; and per stage its static bytes.
pub(super) struct Table {
    /// `costs[k][s]`: stage `s` under policy `set[k]`.
    pub costs: Vec<Vec<StageCost>>,
    /// `statics[s]`: stage `s`'s parameters, gradients and optimizer state.
    pub statics: Vec<u64>,
    /// Per stage, the ladder of indices into the policy set: `none` first, each next one
    /// keeping strictly fewer bytes.
    pub ladder: Vec<Vec<usize>>,
}

impl Table {
    /// The table of the stages `ranges` of `model` under each policy of `set`, from `costs`.
    pub fn new(
        model: &ModelSpec,
        costs: &LayerCosts,
        ranges: &[Range<usize>],
        set: &[RecomputePolicy],
    ) -> Result<Table> {
        let mut all = Vec::with_capacity(set.len());
        let mut statics = Vec::new();
        for &policy in set {
            let specs: Vec<StageSpec> = ranges
                .iter()
                .enumerate()
                .map(|(index, layers)| StageSpec { index, layers: layers.clone(), policy, device: Default::default() })
                .collect();
            let composed = costs.compose(model, &specs)?;
            statics = composed.static_bytes;
            all.push(composed.costs);
        }
        let ladder = (0..ranges.len())
            .map(|s| {
                let mut order: Vec<usize> = (1..set.len()).collect();
                order.sort_by(|&a, &b| {
                    all[b][s].act_bytes.cmp(&all[a][s].act_bytes).then(all[a][s].t_r().total_cmp(&all[b][s].t_r()))
                });
                let mut rungs = vec![0];
                for k in order {
                    if all[k][s].act_bytes < all[*rungs.last().expect("none is first")][s].act_bytes {
                        rungs.push(k);
                    }
                }
                rungs
            })
            .collect();
        Ok(Table { costs: all, statics, ladder })
    }
}
