//! The speed of a host memory copy, measured: the host link a run times its offload and reload
//! copies with when `--host-bandwidth` is not given.
//!
//! On CPU stages an offload copies the kept tensors into host buffers of their own and a reload
//! copies them back — memcpys of the micro-batch's kept bytes. So the link is calibrated by
//! timing exactly that: a copy of `bytes` between two buffers that already hold their pages, the
//! median of a few. No latency is added: a copy's fixed cost is inside its measured time.

use std::time::Instant;

use pipesched_schedules::HostLink;

use crate::error::{Error, Result};

/// Copies timed after one untimed warm-up copy.
const REPS: usize = 9;

/// The host link of a `bytes`-byte memcpy on this machine, in bytes per millisecond: the median
/// of `REPS` timed copies. An error if `bytes` is 0 (nothing to time).
pub fn measure(bytes: u64) -> Result<HostLink> {
    let len = usize::try_from(bytes).map_err(|_| Error::Config(format!("{bytes} bytes do not fit this machine")))?;
    if len == 0 {
        return Err(Error::Config(
            "no stage that offloads keeps anything for its backward, so there is no copy to time; leave such stages out of --offload".into(),
        ));
    }
    let src: Vec<u8> = (0..len).map(|k| k as u8).collect();
    let mut dst = vec![1u8; len];
    dst.copy_from_slice(&src);
    let mut times: Vec<f64> = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let ms = times[REPS / 2].max(1e-9);
    Ok(HostLink::new(bytes as f64 / ms, 0.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_has_a_finite_positive_speed() {
        let link = measure(1 << 20).unwrap();
        assert!(link.bandwidth.is_finite() && link.bandwidth > 0.0);
        assert_eq!(link.latency, 0.0);
        assert!(measure(0).unwrap_err().to_string().contains("no copy to time"));
    }
}
