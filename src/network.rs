//! The network between ranks, measured: each pipeline rank times its link to the next with
//! round trips of messages of several sizes (answered by one byte), through the communication
//! threads, as the pipeline's messages go; a link's one-way latency is half the median round trip
//! of the smallest message, and its bandwidth the slope of the median one-way time from the
//! smallest message to the largest. The pipeline's network is the median link.
//!
//! The times include what a pipeline message pays on top of MPI: the hops through both
//! communication threads, and the wait of an idle one for its next poll (up to 50 µs), so
//! they are the latency the pipeline sees, not MPI's own (`examples/mpi_pingpong` measures
//! that).

use serde::{Deserialize, Serialize};

use crate::report::median;

/// Message sizes of the link test, in bytes: 1 KiB to 4 MiB.
pub const SIZES: [usize; 4] = [1 << 10, 1 << 16, 1 << 20, 1 << 22];

/// Measured round trips per size (after 2 unmeasured ones).
pub const REPS: usize = 10;

/// One link's round trips: per size of [`SIZES`], the measured times in milliseconds.
pub type RoundTrips = Vec<Vec<f64>>;

/// What a message between ranks costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// One-way latency, milliseconds.
    pub latency: f64,
    /// Bytes per millisecond beyond the latency; `None` where the times do not grow with size.
    pub bandwidth: Option<f64>,
}

impl Network {
    /// The network of links timed with round trips of messages of `sizes` (each link's
    /// [`RoundTrips`], sizes in order); `None` without a link.
    pub fn of(sizes: &[usize], links: &[RoundTrips]) -> Option<Network> {
        let per_link: Vec<Network> = links.iter().filter_map(|l| link(sizes, l)).collect();
        let latency = median(per_link.iter().map(|n| n.latency).collect())?;
        let bandwidth = median(per_link.iter().filter_map(|n| n.bandwidth).collect());
        Some(Network { latency, bandwidth })
    }
}

/// One link's latency and bandwidth from its round trips.
fn link(sizes: &[usize], trips: &RoundTrips) -> Option<Network> {
    let medians: Vec<f64> = trips.iter().map(|t| median(t.clone())).collect::<Option<_>>()?;
    let (first, last) = (*medians.first()?, *medians.last()?);
    let latency = first / 2.0;
    // One way with n bytes: the round trip less the 1-byte answer's way back (a latency).
    let (small, large) = (first - latency, last - latency);
    let bytes = sizes.last()?.checked_sub(*sizes.first()?)? as f64;
    let bandwidth = (sizes.len() > 1 && large > small).then(|| bytes / (large - small));
    Some(Network { latency, bandwidth })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_and_bandwidth_come_from_the_smallest_and_largest_messages() {
        // Round trips: 2·0.01 ms for 1 KiB; 0.01 + 0.01 + (4 MiB − 1 KiB) / 2e6 B/ms for 4 MiB.
        let bytes = ((1 << 22) - (1 << 10)) as f64;
        let trips = vec![vec![0.03, 0.02, 0.02], vec![0.05], vec![0.5], vec![0.02 + bytes / 2e6, 9.0, 0.0]];
        let n = Network::of(&SIZES, &[trips]).unwrap();
        assert_eq!(n.latency, 0.01);
        let bw = n.bandwidth.unwrap();
        assert!((bw - 2e6).abs() < 1e-6 * 2e6, "{bw}");
    }

    #[test]
    fn the_median_link_is_the_network_and_flat_times_have_no_bandwidth() {
        let link = |rtt: f64, big: f64| vec![vec![rtt], vec![big]];
        let n = Network::of(&[1, 1001], &[link(0.2, 0.3), link(0.4, 0.5), link(0.6, 0.7)]).unwrap();
        assert_eq!(n.latency, 0.2);
        // Every link: 1000 more bytes take 0.1 ms more.
        assert_eq!(n.bandwidth, Some(1000.0 / (0.5 - 0.4)));
        let flat = Network::of(&[1, 1001], &[link(0.2, 0.2)]).unwrap();
        assert_eq!(flat.bandwidth, None);
        assert_eq!(Network::of(&SIZES, &[]), None);
    }
}
