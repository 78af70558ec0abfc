//! `--devices`: where the ranks run — `cpu` for all, `cuda` round-robin over the visible GPUs,
//! or one device per rank (`cuda:0,cuda:0,cuda:1`).
//!
//! Invariant: [`Devices::resolve`] returns exactly one device per rank, each checked usable here.

use std::fmt;
use std::str::FromStr;

use pipesched_stages::Device;

use crate::{Error, Result};

/// The devices of the ranks, as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Devices {
    /// Every rank on the host.
    #[default]
    Cpu,
    /// Ranks round-robin over the visible GPUs.
    Cuda,
    /// One device per rank.
    List(Vec<Device>),
}

impl Devices {
    /// Whether every rank is on the host.
    pub fn all_cpu(&self) -> bool {
        match self {
            Devices::Cpu => true,
            Devices::Cuda => false,
            Devices::List(l) => l.iter().all(|d| *d == Device::Cpu),
        }
    }

    /// The device of each of `p` ranks, every one checked before anything runs.
    pub fn resolve(&self, p: usize) -> Result<Vec<Device>> {
        let list: Vec<Device> = match self {
            Devices::Cpu => vec![Device::Cpu; p],
            Devices::Cuda => {
                let gpus = pipesched_stages::cuda::probe().visible.max(1);
                (0..p).map(|r| Device::Cuda(r % gpus)).collect()
            }
            Devices::List(l) => l.clone(),
        };
        if list.len() != p {
            return Err(Error::Config(format!(
                "--devices lists {} devices but there are p={p} ranks; give one per rank, or `cpu` / `cuda`",
                list.len()
            )));
        }
        let mut checked: Vec<Device> = Vec::new();
        for d in &list {
            if !checked.contains(d) {
                d.check()?;
                checked.push(*d);
            }
        }
        Ok(list)
    }
}

impl FromStr for Devices {
    type Err = Error;

    fn from_str(s: &str) -> Result<Devices> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Devices::Cpu),
            "cuda" => Ok(Devices::Cuda),
            t => Ok(Devices::List(t.split(',').map(str::parse).collect::<pipesched_stages::Result<_>>()?)),
        }
    }
}

impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Devices::Cpu => f.write_str("cpu"),
            Devices::Cuda => f.write_str("cuda"),
            Devices::List(l) => f.write_str(&l.iter().map(Device::to_string).collect::<Vec<_>>().join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_per_rank() {
        assert_eq!(Devices::Cpu.resolve(3).unwrap(), vec![Device::Cpu; 3]);
        let two: Devices = "cpu, CPU".parse().unwrap();
        assert_eq!(two.to_string(), "cpu,cpu");
        assert!(two.all_cpu());
        let e = two.resolve(3).unwrap_err();
        assert!(matches!(e, Error::Config(_)) && e.to_string().contains("2 devices but there are p=3 ranks"), "{e}");
        let e = "cpu,gpu".parse::<Devices>().unwrap_err().to_string();
        assert!(e.contains("gpu") && e.contains("cuda:N"), "{e}");
    }
}
