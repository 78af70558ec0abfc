//! `Device`: where a stage's tensors live and its compute runs.
//!
//! `Cpu` runs a stage's ops on its worker thread; `Cuda(ordinal)` runs them on a GPU, on a CUDA
//! stream of the stage's own. Checking a device probes the driver, the GPU, cuBLAS and NVRTC (in
//! the `cuda` module, the only one touching `cudarc`) and names the first missing piece. Nothing
//! ever panics on it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Device {
    /// The host CPU; matrix products through `gemm`, single-threaded.
    #[default]
    Cpu,
    /// The CUDA GPU with this ordinal: products through cuBLAS, everything else through the
    /// kernels of `stages/kernels/ops.cu` compiled at run time by NVRTC.
    Cuda(usize),
}

impl Device {
    /// `Ok` if stages can run on this device in this build; otherwise an error naming the device.
    pub fn check(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(ordinal) => crate::cuda::check(ordinal),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(k) => write!(f, "cuda:{k}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;

    /// `cpu`, `cuda` (ordinal 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Device> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(k)) => Ok(Device::Cuda(k)),
                _ => Err(Error::Device {
                    device: s.to_string(),
                    reason: "not a device; write `cpu`, `cuda` or `cuda:N`".into(),
                }),
            },
        }
    }
}

impl TryFrom<String> for Device {
    type Error = Error;
    fn try_from(s: String) -> Result<Device> {
        s.parse()
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("CUDA:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        assert!("tpu".parse::<Device>().unwrap_err().to_string().contains("cuda:N"));
    }

    #[test]
    fn cuda_is_a_clear_error_not_a_panic() {
        assert!(Device::Cpu.check().is_ok());
        let e = Device::Cuda(1).check().unwrap_err().to_string();
        assert!(e.contains("cuda:1"), "{e}");
    }
}
