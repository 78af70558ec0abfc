//! The CUDA side of [`Device`]: the only module that touches `cudarc`.
//!
//! `cudarc` is built with dynamic loading, so pipesched builds on machines without any CUDA
//! toolkit; at run time the driver, cuBLAS and NVRTC are looked up as shared libraries. Calling
//! into a library that is not there would panic inside `cudarc`, so every entry point here
//! probes for the libraries first and turns their absence into a clear error.

#[cfg(test)]
mod emulate;
pub(crate) mod gemm;
pub(crate) mod ops;
mod runtime;
mod source;

pub use gemm::cublas_ms;
pub use runtime::{DeviceBuffer, Lane, LaneScope, Mark};

use crate::device::Device;
use crate::error::{Error, Result};

/// One visible GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuInfo {
    /// Its ordinal (`cuda:N`).
    pub ordinal: usize,
    /// Its name, as the driver reports it.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Total device memory in bytes.
    pub total_bytes: usize,
    /// Free device memory in bytes when probed.
    pub free_bytes: usize,
}

/// What the CUDA libraries and GPUs of this machine look like.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaReport {
    /// Why the driver cannot be used, if it cannot (`None`: the driver loaded).
    pub driver: Option<String>,
    /// Whether cuBLAS (matrix products) can be loaded.
    pub cublas: bool,
    /// Whether NVRTC (run-time kernel compilation) can be loaded.
    pub nvrtc: bool,
    /// The GPUs the driver sees.
    pub gpus: Vec<GpuInfo>,
}

/// Looks for the driver, cuBLAS, NVRTC and the GPUs, without ever panicking.
pub fn probe() -> CudaReport {
    // SAFETY: `is_culib_present` only tries to dlopen the library under its known names and
    // closes it again; it calls nothing inside it.
    #[allow(unsafe_code)]
    let (driver, cublas, nvrtc) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
        )
    };
    let mut report = CudaReport { driver: None, cublas, nvrtc, gpus: Vec::new() };
    if !driver {
        report.driver = Some("the CUDA driver library (libcuda.so) is not installed or not on the loader path".into());
        return report;
    }
    let count = match cudarc::driver::CudaContext::device_count() {
        Ok(n) => n.max(0) as usize,
        Err(e) => {
            report.driver = Some(format!("the CUDA driver loaded but cannot list GPUs: {e}"));
            return report;
        }
    };
    for ordinal in 0..count {
        let info = cudarc::driver::CudaContext::new(ordinal).and_then(|ctx| {
            let (free_bytes, total_bytes) = ctx.mem_get_info()?;
            Ok(GpuInfo {
                ordinal,
                name: ctx.name()?,
                compute_capability: ctx.compute_capability()?,
                total_bytes,
                free_bytes,
            })
        });
        match info {
            Ok(gpu) => report.gpus.push(gpu),
            Err(e) => {
                report.driver = Some(format!("GPU {ordinal} is visible but cannot be opened: {e}"));
                return report;
            }
        }
    }
    report
}

/// Bytes in use on `cuda:ordinal` as its driver reports them (total − free, every process), after
/// the GPU has run everything queued: what the stages' byte ledger is checked against.
pub fn used_bytes(ordinal: usize) -> Result<u64> {
    runtime::gpu(ordinal)?.used_bytes()
}

impl CudaReport {
    /// Why stages cannot run on `cuda:ordinal` here: the first missing piece, named.
    pub fn check(&self, ordinal: usize) -> Result<()> {
        let fail = |reason: String| Err(Error::Device { device: Device::Cuda(ordinal).to_string(), reason });
        if let Some(why) = &self.driver {
            return fail(format!("{why}; run on `cpu`, or on a machine with an NVIDIA driver"));
        }
        if ordinal >= self.gpus.len() {
            return fail(format!(
                "no such GPU: the driver sees {} (cuda:0..cuda:{}); check CUDA_VISIBLE_DEVICES",
                self.gpus.len(),
                self.gpus.len().saturating_sub(1)
            ));
        }
        if !self.cublas {
            return fail("cuBLAS (libcublas) is not installed; matrix products need it".into());
        }
        if !self.nvrtc {
            return fail("NVRTC (libnvrtc) is not installed; the element-wise kernels are compiled with it".into());
        }
        Ok(())
    }

    /// One line per finding, for `pipesched devices`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.driver {
            Some(why) => out.push(format!("cuda: unavailable: {why}")),
            None if self.gpus.is_empty() => out.push("cuda: the driver loaded, but it sees no GPU".into()),
            None => {
                for g in &self.gpus {
                    out.push(format!(
                        "cuda:{}  {} (compute {}.{}), {:.1} GiB, {:.1} GiB free",
                        g.ordinal,
                        g.name,
                        g.compute_capability.0,
                        g.compute_capability.1,
                        g.total_bytes as f64 / (1u64 << 30) as f64,
                        g.free_bytes as f64 / (1u64 << 30) as f64
                    ));
                }
            }
        }
        let lib = |present: bool, name: &str, what: &str| {
            format!("{name}: {}", if present { "found".to_string() } else { format!("not found ({what})") })
        };
        out.push(lib(self.cublas, "cuBLAS", "needed for matrix products on GPUs"));
        out.push(lib(self.nvrtc, "NVRTC", "needed to compile the element-wise kernels"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(driver: Option<&str>, gpus: usize, cublas: bool, nvrtc: bool) -> CudaReport {
        CudaReport {
            driver: driver.map(String::from),
            cublas,
            nvrtc,
            gpus: (0..gpus)
                .map(|ordinal| GpuInfo {
                    ordinal,
                    name: "Test GPU".into(),
                    compute_capability: (9, 0),
                    total_bytes: 80 << 30,
                    free_bytes: 79 << 30,
                })
                .collect(),
        }
    }

    #[test]
    fn each_missing_piece_is_named() {
        let e = report(Some("no libcuda"), 0, false, false).check(0).unwrap_err().to_string();
        assert!(e.contains("cuda:0") && e.contains("no libcuda") && e.contains("`cpu`"), "{e}");
        let e = report(None, 1, true, true).check(3).unwrap_err().to_string();
        assert!(e.contains("driver sees 1") && e.contains("CUDA_VISIBLE_DEVICES"), "{e}");
        let e = report(None, 1, false, true).check(0).unwrap_err().to_string();
        assert!(e.contains("cuBLAS"), "{e}");
        let e = report(None, 1, true, false).check(0).unwrap_err().to_string();
        assert!(e.contains("NVRTC"), "{e}");
        assert!(report(None, 2, true, true).check(1).is_ok());
    }

    #[test]
    fn probing_this_machine_never_panics() {
        let r = probe();
        assert_eq!(r.lines().len(), r.gpus.len().max(1) + 2);
        if r.driver.is_some() {
            assert!(r.gpus.is_empty());
            assert!(r.check(0).is_err());
        }
    }
}
