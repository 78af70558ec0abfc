//! [`WeightVersions`]: one stage's weight versions in a run — which version each micro-batch
//! uses ([`Updates`](pipesched_schedules::Updates) works them out), which one the stage's
//! parameters are now, and the others it keeps (*stashed*) until nothing needs them.
//!
//! Invariant: the stage's parameters are version `loaded`; `stashed` holds every other live
//! version; a version lives while it is the newest or a micro-batch still to finish uses it —
//! the rule `Updates` counts stashed versions by, so measured bytes equal predicted ones.

use std::collections::BTreeMap;

use pipesched_stages::{Error, Result, Stage, Tensor};

/// A stage's weight versions in a run.
#[derive(Debug)]
pub(crate) struct WeightVersions {
    /// The version each micro-batch of the run uses (`u32::MAX`: none).
    of: Vec<u32>,
    /// Micro-batches per update.
    every: usize,
    /// Per version: micro-batches using it whose backward has not finished.
    uses: BTreeMap<u32, usize>,
    /// The newest version: updates made so far.
    newest: u32,
    /// The version the stage's parameters are now.
    loaded: u32,
    /// Every other live version's parameters.
    stashed: BTreeMap<u32, Vec<Tensor>>,
}

impl WeightVersions {
    /// Version 0 loaded, micro-batch `j` to run on `of[j]`, an update every `every`.
    pub(crate) fn new(of: &[u32], every: usize) -> WeightVersions {
        let mut uses = BTreeMap::new();
        for &v in of.iter().filter(|&&v| v != u32::MAX) {
            *uses.entry(v).or_insert(0) += 1;
        }
        WeightVersions { of: of.to_vec(), every, uses, newest: 0, loaded: 0, stashed: BTreeMap::new() }
    }

    /// Micro-batches per update.
    pub(crate) fn every(&self) -> usize {
        self.every
    }

    /// The newest version: updates made so far.
    pub(crate) fn newest(&self) -> u32 {
        self.newest
    }

    /// Makes `stage`'s parameters version `want`, swapping it with the loaded one (no copy).
    pub(crate) fn load(&mut self, stage: &mut Stage, want: u32) -> Result<()> {
        if want == self.loaded {
            return Ok(());
        }
        let mut other = self.stashed.remove(&want).ok_or_else(|| Error::Order {
            place: format!("stage {}", stage.index()),
            reason: format!(
                "weight version {want} is asked for, which this stage does not hold (it holds {}, the newest {})",
                self.loaded, self.newest
            ),
        })?;
        for ((p, _), q) in stage.params_and_grads_mut().into_iter().zip(other.iter_mut()) {
            std::mem::swap(p, q);
        }
        self.stashed.insert(self.loaded, other);
        self.loaded = want;
        Ok(())
    }

    /// Makes `stage`'s parameters the version micro-batch `mb` uses.
    pub(crate) fn load_for(&mut self, stage: &mut Stage, mb: usize) -> Result<()> {
        let want = self.of.get(mb).copied().unwrap_or(u32::MAX);
        self.load(stage, want)
    }

    /// After micro-batch `mb`'s backward finished: drops its version if nothing uses it any more
    /// and it is not the newest.
    pub(crate) fn finished(&mut self, stage: &mut Stage, mb: usize) -> Result<()> {
        let v = self.of.get(mb).copied().unwrap_or(u32::MAX);
        let left = self.uses.get_mut(&v).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left != Some(0) || v >= self.newest {
            return Ok(());
        }
        self.load(stage, self.newest)?;
        self.stashed.remove(&v);
        Ok(())
    }

    /// Loads the newest version for an update and says whether a micro-batch still to finish
    /// uses it (the update must then keep a copy).
    pub(crate) fn before_update(&mut self, stage: &mut Stage) -> Result<bool> {
        self.load(stage, self.newest)?;
        Ok(self.uses.get(&self.newest).is_some_and(|&n| n > 0))
    }

    /// After an update made the next version in the stage's parameters: `kept` is the previous
    /// newest, when [`before_update`](WeightVersions::before_update) said to keep it.
    pub(crate) fn updated(&mut self, kept: Option<Vec<Tensor>>) {
        if let Some(old) = kept {
            self.stashed.insert(self.newest, old);
        }
        self.newest += 1;
        self.loaded = self.newest;
    }

    /// Bytes of the versions stashed besides the parameters.
    pub(crate) fn stashed_bytes(&self) -> u64 {
        self.stashed.values().flatten().map(Tensor::bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipesched_stages::{ModelSpec, Partition, Policies};

    fn stage() -> Stage {
        let model = ModelSpec::tiny();
        let specs = model.stage_specs(1, &Partition::Even, &"none".parse::<Policies>().unwrap()).unwrap();
        Stage::new(&model, &specs[0]).unwrap()
    }

    fn first_value(stage: &Stage) -> f32 {
        stage.params()[0].values().unwrap()[0]
    }

    /// An update: keep the newest if asked, then change the parameters as an optimizer would.
    fn update(v: &mut WeightVersions, stage: &mut Stage) {
        let keep = v.before_update(stage).unwrap();
        let kept = keep.then(|| stage.params().into_iter().map(|t| t.try_clone().unwrap()).collect());
        for (p, _) in stage.params_and_grads_mut() {
            let bumped: Vec<f32> = p.values().unwrap().iter().map(|x| x + 1.0).collect();
            *p = Tensor::new(p.rows(), p.cols(), bumped).unwrap();
        }
        v.updated(kept);
    }

    #[test]
    fn synchronous_runs_stash_nothing() {
        // Two steps of two: each update comes after both micro-batches of its group finished.
        let mut s = stage();
        let mut v = WeightVersions::new(&[0, 0, 1, 1], 2);
        for mb in 0..2 {
            v.load_for(&mut s, mb).unwrap();
            v.finished(&mut s, mb).unwrap();
        }
        update(&mut v, &mut s);
        assert_eq!((v.newest(), v.stashed_bytes()), (1, 0));
    }

    #[test]
    fn a_version_in_use_is_stashed_and_swapped_back_for_its_backward() {
        // PipeDream-like: micro-batches 0 and 1 forward on version 0, then 0's backward and an
        // update; micro-batch 1's backward runs on version 0 again, micro-batch 2 on version 1.
        let mut s = stage();
        let params: u64 = s.params().iter().map(|t| t.bytes()).sum();
        let v0 = first_value(&s);
        let mut v = WeightVersions::new(&[0, 0, 1], 1);
        v.load_for(&mut s, 0).unwrap();
        v.load_for(&mut s, 1).unwrap();
        v.finished(&mut s, 0).unwrap();
        update(&mut v, &mut s);
        assert_eq!(v.stashed_bytes(), params, "version 0 kept for micro-batch 1");
        assert_eq!(first_value(&s), v0 + 1.0);
        v.load_for(&mut s, 2).unwrap();
        v.load_for(&mut s, 1).unwrap();
        assert_eq!(first_value(&s), v0, "micro-batch 1's backward sees its forward's weights");
        v.finished(&mut s, 1).unwrap();
        assert_eq!(v.stashed_bytes(), 0, "nothing uses version 0 any more");
        assert_eq!(first_value(&s), v0 + 1.0, "the newest is loaded again");
        let e = v.load(&mut s, 0).unwrap_err().to_string();
        assert!(e.contains("does not hold"), "{e}");
    }
}
