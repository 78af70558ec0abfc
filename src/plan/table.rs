//! The cost table of one partition at one micro-batch size: every stage's composed cost under
//! every recompute policy tried, its static bytes, and its ladder — the policies a stage steps
//! through to keep less, `none` first.
//!
//! Besides the fixed policies, each stage may run `optimal:B` at budgets of 1, 1¼, 1½, 2 and 3
//! times its own least (so `B` differs per stage): a column of the table is one policy per
//! stage.
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

/// The budgets tried for `optimal`, as fractions `(num, den)` of each stage's least budget.
const OPTIMAL_LEVELS: [(u64, u64); 5] = [(1, 1), (5, 4), (3, 2), (2, 1), (3, 1)];

/// Per stage and per policy, the composed cost; and per stage its static bytes.
pub(super) struct Table {
    /// `policies[k][s]`: stage `s`'s policy in column `k` (column 0 is `none`).
    pub policies: Vec<Vec<RecomputePolicy>>,
    /// `costs[k][s]`: stage `s` under policy `policies[k][s]`.
    pub costs: Vec<Vec<StageCost>>,
    /// `statics[s]`: stage `s`'s parameters, gradients and optimizer state.
    pub statics: Vec<u64>,
    /// Per stage, the ladder of indices into the policy set: `none` first, each next one
    /// keeping strictly fewer bytes.
    pub ladder: Vec<Vec<usize>>,
}

impl Table {
    /// The table of the stages `ranges` of `model` under each policy of `set` and at each
    /// `optimal` level, from `costs`.
    pub fn new(
        model: &ModelSpec,
        costs: &LayerCosts,
        ranges: &[Range<usize>],
        set: &[RecomputePolicy],
    ) -> Result<Table> {
        let specs = |policies: &[RecomputePolicy]| -> Vec<StageSpec> {
            ranges
                .iter()
                .zip(policies)
                .enumerate()
                .map(|(index, (layers, &policy))| StageSpec {
                    index,
                    layers: layers.clone(),
                    policy,
                    device: Default::default(),
                })
                .collect()
        };
        let mut columns: Vec<Vec<RecomputePolicy>> = set.iter().map(|&p| vec![p; ranges.len()]).collect();
        let least = specs(&columns[0])
            .iter()
            .map(|spec| costs.optimal_least_budget(model, spec))
            .collect::<pipesched_stages::Result<Vec<u64>>>()?;
        for (num, den) in OPTIMAL_LEVELS {
            columns.push(least.iter().map(|&l| RecomputePolicy::Optimal(l.saturating_mul(num) / den)).collect());
        }
        let mut all = Vec::with_capacity(columns.len());
        let mut kept = Vec::with_capacity(columns.len());
        let mut statics = Vec::new();
        for policies in columns {
            let composed = match costs.compose(model, &specs(&policies)) {
                Ok(c) => c,
                // A level the program cannot plan (a stage too deep for it) is left out.
                Err(_) if matches!(policies[0], RecomputePolicy::Optimal(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            statics = composed.static_bytes;
            all.push(composed.costs);
            kept.push(policies);
        }
        let set = kept;
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
        Ok(Table { policies: set, costs: all, statics, ladder })
    }
}
