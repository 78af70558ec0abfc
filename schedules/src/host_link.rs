//! `HostLink`: the link between a rank's device and its host memory, which offload (`O`) and
//! reload (`L`) actions cross.
//!
//! Moving `b` bytes either way takes `latency + b / bandwidth`, in the cost model's time unit.
//! The copy runs on the rank's own timeline, between its other actions: the simulator, like the
//! executor, runs an `O` or `L` as one more action of the lane, so nothing overlaps it (PipeOffload
//! overlaps its copies with compute on a separate copy stream; this model is the serial bound).
//!
//! Invariant: `bandwidth` is finite and > 0 and `latency` finite and ≥ 0 ([`HostLink::new`] and
//! [`HostLink::check`] refuse anything else) — but for [`HostLink::untimed`], infinitely fast,
//! which only byte predictions use.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The device ↔ host link of every rank.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HostLink {
    /// Bytes per time unit of the cost model, each way.
    pub bandwidth: f64,
    /// Time unit(s) every copy takes besides its bytes.
    #[serde(default)]
    pub latency: f64,
}

impl HostLink {
    /// A link of `bandwidth` bytes per time unit and `latency`; an error if either is out of
    /// range.
    pub fn new(bandwidth: f64, latency: f64) -> Result<HostLink> {
        // Only byte predictions use an infinitely fast link (`untimed`); a given one is finite.
        if !bandwidth.is_finite() {
            return Err(bandwidth_error(bandwidth));
        }
        let link = HostLink { bandwidth, latency };
        link.check()?;
        Ok(link)
    }

    /// A link whose copies take no time, for models whose times are placeholders (byte
    /// predictions): every offload and reload still moves its bytes.
    pub fn untimed() -> HostLink {
        HostLink { bandwidth: f64::INFINITY, latency: 0.0 }
    }

    /// Refuses a bandwidth that is not finite and > 0, or a latency that is not finite and ≥ 0.
    pub fn check(&self) -> Result<()> {
        if !(self.bandwidth > 0.0 && (self.bandwidth.is_finite() || *self == HostLink::untimed())) {
            return Err(bandwidth_error(self.bandwidth));
        }
        if !(self.latency.is_finite() && self.latency >= 0.0) {
            return Err(Error::Cost(format!(
                "the host link's latency must be a finite time ≥ 0, got {}",
                self.latency
            )));
        }
        Ok(())
    }

    /// How long moving `bytes` across the link takes: `latency + bytes / bandwidth`.
    pub fn time(&self, bytes: u64) -> f64 {
        self.latency + bytes as f64 / self.bandwidth
    }
}

/// The error for a bandwidth that is not finite and > 0.
fn bandwidth_error(bandwidth: f64) -> Error {
    Error::Cost(format!(
        "the host link's bandwidth must be a finite number > 0 (bytes per time unit), got {bandwidth}; give the bytes per second a device-to-host copy moves (`run` measures a memcpy when none is given)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_latency_plus_bytes_over_bandwidth() {
        let link = HostLink::new(512.0, 0.25).unwrap();
        assert_eq!(link.time(1024), 2.25);
        assert_eq!(link.time(0), 0.25);
    }

    #[test]
    fn refuses_bandwidths_and_latencies_out_of_range() {
        for b in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = HostLink::new(b, 0.0).unwrap_err().to_string();
            assert!(e.contains("bandwidth must be a finite number > 0"), "{b}: {e}");
        }
        for c in [-1.0, f64::NAN] {
            let e = HostLink::new(1.0, c).unwrap_err().to_string();
            assert!(e.contains("latency must be a finite time ≥ 0"), "{c}: {e}");
        }
    }
}
