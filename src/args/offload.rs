//! The offload flags of `simulate`, `run` and `memory`: `--offload` (which micro-batches move
//! what their forward kept into host memory) and `--host-bandwidth` (how fast the copies run).
//!
//! Invariant: past these flags the plan is an [`Offload`] and the link a [`HostLink`] in the cost
//! model's time unit; a bandwidth is never 0 or negative, and one without `--offload` is refused
//! (it would be silently ignored).

use clap::Args;

use pipesched_schedules::{with_offload, CostModel, HostLink, Offload, Schedule};

use super::bandwidth::Bandwidth;
use crate::error::{Error, Result};

/// Activation offload (PipeOffload): what moves to host memory, and over which link.
#[derive(Debug, Clone, Default, Args)]
pub struct OffloadArgs {
    /// Offload activations: after each forward, an O action moves what it kept for the backward
    /// into host memory, and an L action brings it back right before the recompute or backward.
    /// all (every stage and micro-batch), every:K (micro-batches 0, K, 2K, … of every stage) or
    /// stage numbers (0,1). The copies run on the rank's own timeline, between its other actions.
    #[arg(long, value_name = "all|every:K|STAGES")]
    pub offload: Option<Offload>,
    /// Device ↔ host copy bandwidth for --offload: bytes per second, ms or us (8GiB/s) with a model
    /// in milliseconds, bytes per unit with one in abstract units. `run` measures a host memcpy when
    /// it is not given.
    #[arg(long, value_name = "BYTES/s", value_parser = host_bandwidth)]
    pub host_bandwidth: Option<Bandwidth>,
}

/// A `--host-bandwidth` value: a [`Bandwidth`] of more than 0 bytes.
fn host_bandwidth(text: &str) -> std::result::Result<Bandwidth, String> {
    if text.trim().starts_with('-') {
        return Err(format!("`{text}` is negative: give the bytes a copy moves per second, e.g. 8GiB/s"));
    }
    text.parse::<Bandwidth>().map_err(|e| {
        if e.contains("no bandwidth at all") {
            format!("`{text}`: offload copies would never finish; give the bytes a copy moves per second, e.g. 8GiB/s")
        } else {
            e
        }
    })
}

impl OffloadArgs {
    /// Whether `--offload` was given.
    pub fn given(&self) -> bool {
        self.offload.is_some()
    }

    /// `schedule` with `O` and `L` planned as `--offload` says (itself without it).
    pub fn plan(&self, schedule: &Schedule) -> Result<Schedule> {
        match &self.offload {
            None => Ok(schedule.clone()),
            Some(plan) => Ok(with_offload(schedule, plan)?),
        }
    }

    /// The host link `--host-bandwidth` gives, in the time unit of `model` (`ms`, or abstract
    /// units); `None` if not given. Refuses a bandwidth without `--offload`, and one whose time
    /// unit does not fit the model's.
    pub fn link(&self, model: &CostModel) -> Result<Option<HostLink>> {
        let Some(b) = &self.host_bandwidth else { return Ok(None) };
        if self.offload.is_none() {
            return Err(Error::Usage(format!(
                "--host-bandwidth {b} times offload copies, but nothing offloads; add --offload all (or every:K, or stage numbers), or drop --host-bandwidth"
            )));
        }
        let per_unit = match (b.per_ms(), model.time_unit == "ms") {
            (Some(per_ms), true) => per_ms,
            (None, false) => b.bytes as f64,
            (Some(_), false) => {
                return Err(Error::Usage(format!(
                    "--host-bandwidth {b} is per unit of time, but the model's times have no unit; give the bandwidth in bytes per unit (e.g. --host-bandwidth 64MiB), or the times with units"
                )))
            }
            (None, true) => {
                return Err(Error::Usage(format!(
                    "--host-bandwidth {b} has no time unit, but the model is in milliseconds; give bytes per second, ms or us, e.g. --host-bandwidth {b}/s"
                )))
            }
        };
        Ok(Some(HostLink::new(per_unit, 0.0)?))
    }

    /// `model` with the host link of `--host-bandwidth` when given (else its own, if it has one).
    pub fn apply(&self, mut model: CostModel) -> Result<CostModel> {
        if let Some(link) = self.link(&model)? {
            model.host_link = Some(link);
        }
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(offload: Option<&str>, bw: Option<&str>) -> OffloadArgs {
        OffloadArgs {
            offload: offload.map(|o| o.parse().unwrap()),
            host_bandwidth: bw.map(|b| host_bandwidth(b).unwrap()),
        }
    }

    #[test]
    fn the_link_is_in_the_models_unit() {
        let mut ms = CostModel::per_rank(1.0, 1.0, 1.0);
        ms.time_unit = "ms".into();
        let link = args(Some("all"), Some("2MB/s")).link(&ms).unwrap().unwrap();
        assert_eq!(link.bandwidth, 2000.0);
        let units = CostModel::per_rank(1.0, 1.0, 1.0);
        assert_eq!(args(Some("all"), Some("64B")).link(&units).unwrap().unwrap().bandwidth, 64.0);
        assert!(args(Some("all"), Some("64B")).link(&ms).unwrap_err().to_string().contains("has no time unit"));
        assert!(args(Some("all"), Some("1MB/s")).link(&units).unwrap_err().to_string().contains("no unit"));
        assert!(args(None, Some("1MB/s")).link(&ms).unwrap_err().to_string().contains("nothing offloads"));
        assert_eq!(args(Some("all"), None).link(&ms).unwrap(), None);
    }

    #[test]
    fn refuses_zero_and_negative_bandwidths() {
        for bad in ["0", "0B/s", "-1", "-8GiB/s"] {
            let e = host_bandwidth(bad).unwrap_err();
            assert!(e.contains("never finish") || e.contains("negative"), "{bad}: {e}");
        }
    }
}
