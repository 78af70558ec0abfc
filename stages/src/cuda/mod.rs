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

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

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
    /// The CUDA version the driver supports, as `1000·major + 10·minor` (12080 is 12.8).
    pub driver_version: Option<i32>,
    /// Whether cuBLAS (matrix products) can be loaded.
    pub cublas: bool,
    /// Whether NVRTC (run-time kernel compilation) can be loaded.
    pub nvrtc: bool,
    /// How many GPUs the driver sees.
    pub visible: usize,
    /// The GPUs probed (all visible ones, or the one asked about), each opened or not.
    pub gpus: Vec<GpuInfo>,
    /// GPUs that are visible but could not be opened, with the driver's reason.
    pub unopened: Vec<(usize, String)>,
}

/// The oldest driver stages can use: GPU timing reads event times through
/// `cuEventElapsedTime_v2`, which drivers for CUDA 12.8 and later have.
pub const MIN_DRIVER_VERSION: i32 = 12080;

/// Looks for the driver, cuBLAS, NVRTC and every visible GPU, without ever panicking.
pub fn probe() -> CudaReport {
    probe_only(None)
}

/// An error unless stages can run on `cuda:ordinal`: probes the libraries and that one GPU
/// (others are not opened), once per process.
pub fn check(ordinal: usize) -> Result<()> {
    static CHECKED: OnceLock<Mutex<HashMap<usize, Result<()>>>> = OnceLock::new();
    let mut done = CHECKED.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ok) = done.get(&ordinal) {
        return ok.clone();
    }
    let result = probe_only(Some(ordinal)).check(ordinal);
    // Only a usable GPU is remembered: a busy one is probed again next time.
    if result.is_ok() {
        done.insert(ordinal, Ok(()));
    }
    result
}

fn probe_only(only: Option<usize>) -> CudaReport {
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
    let mut report = CudaReport {
        driver: None,
        driver_version: None,
        cublas,
        nvrtc,
        visible: 0,
        gpus: Vec::new(),
        unopened: Vec::new(),
    };
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
    let mut version = 0;
    // SAFETY: the driver library is present (checked above) and initialised (by device_count);
    // `cuDriverGetVersion` writes one int through the pointer, which points to a local.
    #[allow(unsafe_code)]
    let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
    if status == cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        report.driver_version = Some(version);
    }
    report.visible = count;
    for ordinal in (0..count).filter(|o| only.is_none_or(|k| k == *o)) {
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
            Err(e) => report.unopened.push((ordinal, e.to_string())),
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
        if ordinal >= self.visible {
            return fail(format!(
                "no such GPU: the driver sees {} (cuda:0..cuda:{}); check CUDA_VISIBLE_DEVICES",
                self.visible,
                self.visible.saturating_sub(1)
            ));
        }
        if let Some((_, why)) = self.unopened.iter().find(|(k, _)| *k == ordinal) {
            return fail(format!("the GPU is visible but cannot be opened ({why}); is it in exclusive mode and busy?"));
        }
        if let Some(v) = self.driver_version.filter(|v| *v < MIN_DRIVER_VERSION) {
            return fail(format!(
                "the driver supports CUDA {}.{}; GPU timing needs a driver for CUDA 12.8 or newer",
                v / 1000,
                (v % 1000) / 10
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
            None if self.visible == 0 => out.push("cuda: the driver loaded, but it sees no GPU".into()),
            None => {
                if let Some(v) = self.driver_version {
                    out.push(format!("cuda: driver for CUDA {}.{}", v / 1000, (v % 1000) / 10));
                }
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
                for (k, why) in &self.unopened {
                    out.push(format!("cuda:{k}  cannot be opened: {why}"));
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
            driver_version: Some(13000),
            cublas,
            nvrtc,
            visible: gpus,
            unopened: vec![],
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
        let old = CudaReport { driver_version: Some(12040), ..report(None, 1, true, true) };
        let e = old.check(0).unwrap_err().to_string();
        assert!(e.contains("CUDA 12.4") && e.contains("12.8 or newer"), "{e}");
        let busy = CudaReport { unopened: vec![(1, "busy".into())], ..report(None, 2, true, true) };
        assert!(busy.check(0).is_ok(), "another GPU's trouble does not block cuda:0");
        assert!(busy.check(1).unwrap_err().to_string().contains("cannot be opened (busy)"));
    }

    #[test]
    fn probing_this_machine_never_panics() {
        let r = probe();
        let lines = r.lines();
        assert_eq!(lines.iter().filter(|l| l.starts_with("cuda:") && l.contains("GiB free")).count(), r.gpus.len());
        assert!(lines.iter().any(|l| l.starts_with("cuBLAS: ")) && lines.iter().any(|l| l.starts_with("NVRTC: ")));
        if r.driver.is_some() {
            assert!(r.gpus.is_empty());
            assert!(r.check(0).is_err());
        }
    }
}
