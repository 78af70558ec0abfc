//! GPUs, lanes and device buffers: the part of the CUDA backend that owns `cudarc` objects.
//!
//! - A [`Gpu`] is opened once per ordinal and process (a context, the kernels of `ops.cu`
//!   compiled by NVRTC and loaded, and a lane for work outside any stage). Opening probes the
//!   driver and libraries first, so a missing piece is an error, never a panic inside `cudarc`.
//! - A [`Lane`] is one CUDA stream with its own cuBLAS handle. Every stage on a GPU has its own
//!   lane; while one of its ops runs, the lane is *entered* on that thread ([`Lane::enter`]), and
//!   every kernel, product, allocation and copy the op makes goes to that stream. Buffers used
//!   on another stream later (the next stage on the same GPU) are ordered by `cudarc`'s
//!   per-buffer events, so handing a buffer over needs no copy and no host synchronisation.
//! - A [`DeviceBuffer`] is `len` `f32`s on one GPU. Its bytes are what the stage's ledger counts.
//!
//! Invariant: a kernel is launched only with the argument kinds its signature in `ops.cu` has
//! (checked against the table in `source.rs` on every launch), with `n` no larger than any buffer
//! it indexes; this is what makes each `unsafe` launch sound.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use super::source::{launch_1d, Arg, KERNELS, NVRTC_OPTIONS, OPS_CU};
use crate::device::Device;
use crate::error::{Error, Result};

/// An error on `cuda:ordinal` while doing `what`.
pub(crate) fn device_error(ordinal: usize, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device { device: Device::Cuda(ordinal).to_string(), reason: format!("{what}: {e}") }
}

/// The NVRTC options `ops.cu` is compiled with ([`NVRTC_OPTIONS`]: every `+` and `*` rounded on
/// its own, IEEE division and square root, denormals kept — the host's arithmetic, so the
/// element-wise kernels give the CPU stages' bits).
pub(crate) fn compile_options() -> CompileOptions {
    CompileOptions {
        options: NVRTC_OPTIONS.iter().map(|o| o.to_string()).collect(),
        name: Some("ops.cu".into()),
        ..Default::default()
    }
}

/// `ops.cu` compiled to PTX, once per process.
fn ptx() -> std::result::Result<Ptx, String> {
    static PTX: OnceLock<std::result::Result<Ptx, String>> = OnceLock::new();
    PTX.get_or_init(|| compile_ptx_with_opts(OPS_CU, compile_options()).map_err(|e| format!("{e:?}"))).clone()
}

/// One opened GPU.
pub(crate) struct Gpu {
    pub(crate) ordinal: usize,
    pub(crate) ctx: Arc<CudaContext>,
    functions: HashMap<&'static str, CudaFunction>,
}

/// Opens `cuda:ordinal` (once per process; later calls share it).
pub(crate) fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    let mut open = GPUS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(g) = open.get(&ordinal) {
        return Ok(g.clone());
    }
    super::check(ordinal)?;
    let err = |what: &str, e: &dyn std::fmt::Display| device_error(ordinal, what, e);
    let ctx = CudaContext::new(ordinal).map_err(|e| err("opening a context", &e))?;
    let ptx = ptx().map_err(|e| err("compiling the kernels of ops.cu with NVRTC", &e))?;
    let module = ctx.load_module(ptx).map_err(|e| err("loading the compiled kernels", &e))?;
    let mut functions = HashMap::new();
    for (name, _) in KERNELS {
        let f = module.load_function(name).map_err(|e| err(&format!("loading kernel {name}"), &e))?;
        functions.insert(*name, f);
    }
    let g = Arc::new(Gpu { ordinal, ctx, functions });
    open.insert(ordinal, g.clone());
    Ok(g)
}

impl Gpu {
    /// Bytes in use on the GPU as the driver reports them (total − free, all processes), after
    /// everything queued has run (so freed buffers have gone back).
    pub(crate) fn used_bytes(&self) -> Result<u64> {
        self.ctx.synchronize().map_err(|e| device_error(self.ordinal, "synchronizing", e))?;
        let (free, total) =
            self.ctx.mem_get_info().map_err(|e| device_error(self.ordinal, "reading free memory", e))?;
        Ok((total - free) as u64)
    }
}

/// One CUDA stream and a cuBLAS handle bound to it.
pub struct Lane {
    ordinal: usize,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lane(cuda:{})", self.ordinal)
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // cuBLAS destroys its handle in the context current on this thread: make it this lane's
        // (the drop may run on a thread last bound to another GPU).
        // (A first attempt returns an error recorded earlier without binding; the second binds.)
        if self.stream.context().bind_to_thread().is_err() {
            let _ = self.stream.context().bind_to_thread();
        }
    }
}

thread_local! {
    /// The lanes entered on this thread, innermost last.
    static ACTIVE: RefCell<Vec<Arc<Lane>>> = const { RefCell::new(Vec::new()) };
    /// This thread's own lane per GPU, for work outside any entered lane (moving parameters at
    /// build time, copies for reports, tests): a cuBLAS handle is never shared between threads.
    static DEFAULT: RefCell<HashMap<usize, Arc<Lane>>> = RefCell::new(HashMap::new());
}

/// While alive, the lane it was made from is this thread's lane for its GPU. Not `Send`: it
/// must drop on the thread that entered it, innermost first.
#[must_use = "the lane is active only while the scope is alive"]
pub struct LaneScope {
    lane: Arc<Lane>,
    _here: std::marker::PhantomData<*const ()>,
}

impl Drop for LaneScope {
    fn drop(&mut self) {
        ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            // Scopes drop innermost first, so the top is this scope's lane; if not (a scope
            // leaked with mem::forget), remove this one wherever it is.
            match a.iter().rposition(|l| Arc::ptr_eq(l, &self.lane)) {
                Some(k) => {
                    a.remove(k);
                }
                None => debug_assert!(false, "a lane scope dropped twice"),
            }
        });
    }
}

impl Lane {
    /// A new stream with its own cuBLAS handle on `cuda:ordinal`.
    pub fn new(ordinal: usize) -> Result<Arc<Lane>> {
        let g = gpu(ordinal)?;
        Ok(Arc::new(Lane::on(ordinal, &g.ctx)?))
    }

    fn on(ordinal: usize, ctx: &Arc<CudaContext>) -> Result<Lane> {
        let stream = ctx.new_stream().map_err(|e| device_error(ordinal, "creating a stream", e))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| device_error(ordinal, "creating a cuBLAS handle", e))?;
        Ok(Lane { ordinal, stream, blas })
    }

    /// Makes this lane the current one for its GPU on this thread until the scope drops.
    pub fn enter(self: &Arc<Self>) -> LaneScope {
        ACTIVE.with(|a| a.borrow_mut().push(self.clone()));
        LaneScope { lane: self.clone(), _here: std::marker::PhantomData }
    }

    /// The GPU's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Waits until everything queued on the lane has run.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| device_error(self.ordinal, "synchronizing a stream", e))
    }

    /// A mark on the GPU's clock, reached when everything queued on the lane so far has run.
    pub fn mark(&self) -> Result<Mark> {
        let err = |e| device_error(self.ordinal, "recording an event", e);
        // Timing events: `None` would make the driver skip the timestamp.
        let event = self.stream.context().new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT));
        let event = event.map_err(err)?;
        event.record(&self.stream).map_err(err)?;
        Ok(Mark { ordinal: self.ordinal, event })
    }
}

/// A CUDA event recorded on a lane: a point on its GPU's clock.
pub struct Mark {
    ordinal: usize,
    event: CudaEvent,
}

impl std::fmt::Debug for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mark(cuda:{})", self.ordinal)
    }
}

impl Mark {
    /// Milliseconds of GPU time from `origin` (a mark on the same GPU, recorded earlier) to this
    /// mark; waits until the GPU has reached it. Resolution about half a microsecond.
    pub fn ms_since(&self, origin: &Mark) -> Result<f64> {
        if origin.ordinal != self.ordinal {
            return Err(crate::tensor::mixed("timing", Device::Cuda(origin.ordinal), Device::Cuda(self.ordinal)));
        }
        self.event.synchronize().map_err(|e| device_error(self.ordinal, "waiting for an event", e))?;
        origin
            .event
            .elapsed_ms(&self.event)
            .map(f64::from)
            .map_err(|e| device_error(self.ordinal, "reading event times", e))
    }
}

/// This thread's lane for `gpu`: the innermost entered lane on it, else the thread's own lane
/// for that GPU (made on first use).
pub(crate) fn current(gpu: &Gpu) -> Result<Arc<Lane>> {
    if let Some(l) = ACTIVE.with(|a| a.borrow().iter().rev().find(|l| l.ordinal == gpu.ordinal).cloned()) {
        return Ok(l);
    }
    if let Some(l) = DEFAULT.with(|d| d.borrow().get(&gpu.ordinal).cloned()) {
        return Ok(l);
    }
    let lane = Arc::new(Lane::on(gpu.ordinal, &gpu.ctx)?);
    DEFAULT.with(|d| d.borrow_mut().insert(gpu.ordinal, lane.clone()));
    Ok(lane)
}

/// `len` `f32`s on one GPU.
pub struct DeviceBuffer {
    pub(crate) slice: CudaSlice<f32>,
    /// The logical length (the allocation has at least one element).
    len: usize,
    pub(crate) gpu: Arc<Gpu>,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({} f32 on cuda:{})", self.len, self.gpu.ordinal)
    }
}

/// `len` uninitialised `f32`s on `gpu`'s current lane.
fn alloc(gpu: &Arc<Gpu>, len: usize) -> Result<DeviceBuffer> {
    Ok(DeviceBuffer { slice: alloc_uninit(gpu, len)?, len, gpu: gpu.clone() })
}

/// `len` (at least one) uninitialised values of `T` on `gpu`'s current lane. Every caller hands
/// them to a kernel, product or copy that writes all `len` before anything reads them.
pub(crate) fn alloc_uninit<T: cudarc::driver::DeviceRepr>(gpu: &Arc<Gpu>, len: usize) -> Result<CudaSlice<T>> {
    let lane = current(gpu)?;
    // SAFETY: the memory is uninitialised, and is written whole before it is read (above).
    #[allow(unsafe_code)]
    let slice = unsafe { lane.stream.alloc::<T>(len.max(1)) };
    slice.map_err(|e| device_error(gpu.ordinal, &format!("allocating {} bytes", std::mem::size_of::<T>() * len), e))
}

impl DeviceBuffer {
    /// A copy of `values` on `cuda:ordinal`.
    pub(crate) fn upload(ordinal: usize, values: &[f32]) -> Result<DeviceBuffer> {
        let g = gpu(ordinal)?;
        let lane = current(&g)?;
        let slice =
            if values.is_empty() { lane.stream.clone_htod(&[0.0f32][..]) } else { lane.stream.clone_htod(values) };
        let slice = slice.map_err(|e| device_error(ordinal, "copying host data to the GPU", e))?;
        Ok(DeviceBuffer { slice, len: values.len(), gpu: g })
    }

    /// The values, copied to the host (waits for the work that produces them).
    pub(crate) fn download(&self) -> Result<Vec<f32>> {
        let lane = current(&self.gpu)?;
        let mut v = lane.stream.clone_dtoh(&self.slice).map_err(|e| self.err("copying GPU data to the host", e))?;
        lane.synchronize()?;
        v.truncate(self.len);
        Ok(v)
    }

    /// A copy on `cuda:ordinal` (a peer copy between GPUs, which the driver stages through host
    /// memory when the two cannot reach each other).
    pub(crate) fn copy_to(&self, ordinal: usize) -> Result<DeviceBuffer> {
        let g = gpu(ordinal)?;
        let mut out = alloc(&g, self.len)?;
        let lane = current(&g)?;
        lane.stream.memcpy_dtod(&self.slice, &mut out.slice).map_err(|e| self.err("copying between GPUs", e))?;
        // The source is freed on its own stream, which `cudarc` orders after the source's last
        // recorded reader only — a copy on another GPU, or one followed by another reader, is not
        // covered. Make that stream wait for this copy too (waiting on another context's event
        // is allowed), so the source cannot be freed or overwritten while the copy reads it.
        let done = lane.stream.record_event(None).map_err(|e| self.err("recording a copy's end", e))?;
        self.slice.stream().wait(&done).map_err(|e| self.err("ordering a copy before the source's reuse", e))?;
        Ok(out)
    }

    /// A copy on the same GPU.
    pub(crate) fn duplicate(&self) -> Result<DeviceBuffer> {
        self.copy_to(self.gpu.ordinal)
    }

    /// `len` uninitialised values on the same GPU, for an output the caller overwrites whole.
    pub(crate) fn scratch(&self, len: usize) -> Result<DeviceBuffer> {
        alloc(&self.gpu, len)
    }

    /// `len` zeros on the same GPU.
    pub(crate) fn zeros(&self, len: usize) -> Result<DeviceBuffer> {
        let mut b = alloc(&self.gpu, len)?;
        b.fill_zero()?;
        Ok(b)
    }

    /// Sets every value to zero.
    pub(crate) fn fill_zero(&mut self) -> Result<()> {
        let lane = current(&self.gpu)?;
        lane.stream.memset_zeros(&mut self.slice).map_err(|e| device_error(self.gpu.ordinal, "zeroing memory", e))
    }

    /// Number of values.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The GPU's ordinal.
    pub(crate) fn ordinal(&self) -> usize {
        self.gpu.ordinal
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        device_error(self.gpu.ordinal, what, e)
    }
}

/// One kernel argument.
pub(crate) enum KArg<'a> {
    /// A buffer the kernel reads.
    In(&'a DeviceBuffer),
    /// A buffer the kernel writes (and may read).
    Out(&'a mut DeviceBuffer),
    /// bfloat16 values the kernel reads (as `unsigned short` bits).
    InBf16(&'a CudaSlice<half::bf16>),
    /// bfloat16 values the kernel writes.
    OutBf16(&'a mut CudaSlice<half::bf16>),
    /// IEEE half values the kernel reads (as `unsigned short` bits).
    InF16(&'a CudaSlice<half::f16>),
    /// IEEE half values the kernel writes.
    OutF16(&'a mut CudaSlice<half::f16>),
    /// `unsigned int`.
    U32(u32),
    /// `unsigned long long`.
    U64(u64),
    /// `float`.
    F32(f32),
}

impl KArg<'_> {
    fn kind(&self) -> Arg {
        match self {
            KArg::In(_) => Arg::PtrF32,
            KArg::Out(_) => Arg::PtrF32Mut,
            KArg::InBf16(_) | KArg::InF16(_) => Arg::PtrU16,
            KArg::OutBf16(_) | KArg::OutF16(_) => Arg::PtrU16Mut,
            KArg::U32(_) => Arg::U32,
            KArg::U64(_) => Arg::U64,
            KArg::F32(_) => Arg::F32,
        }
    }
}

/// An error unless `kinds` is exactly the parameter list of kernel `name` in `ops.cu`.
pub(crate) fn check_args(name: &str, kinds: &[Arg]) -> Result<()> {
    let Some((_, want)) = KERNELS.iter().find(|(n, _)| *n == name) else {
        return Err(Error::Device { device: "cuda".into(), reason: format!("no kernel named {name} in ops.cu") });
    };
    if *want != kinds {
        return Err(Error::Device {
            device: "cuda".into(),
            reason: format!("kernel {name} takes {want:?}, but was given {kinds:?}"),
        });
    }
    Ok(())
}

/// Launches kernel `name` of `ops.cu` on `gpu`'s current lane over `threads` threads (one per
/// element, row or column, as the kernel says). Every buffer argument must hold at least as many
/// values as the kernel indexes for `threads` and the given sizes.
pub(crate) fn launch(gpu: &Arc<Gpu>, name: &'static str, threads: usize, args: &mut [KArg]) -> Result<()> {
    let kinds: Vec<Arg> = args.iter().map(KArg::kind).collect();
    check_args(name, &kinds)?;
    if let Some(other) = args.iter().find_map(|a| match a {
        KArg::In(b) if b.gpu.ordinal != gpu.ordinal => Some(b.gpu.ordinal),
        KArg::Out(b) if b.gpu.ordinal != gpu.ordinal => Some(b.gpu.ordinal),
        _ => None,
    }) {
        return Err(crate::tensor::mixed(name, Device::Cuda(gpu.ordinal), Device::Cuda(other)));
    }
    let threads = u32::try_from(threads).map_err(|_| {
        device_error(gpu.ordinal, name, format!("{threads} threads do not fit one launch (at most {})", u32::MAX))
    })?;
    if threads == 0 {
        return Ok(());
    }
    let f = gpu.functions.get(name).ok_or_else(|| device_error(gpu.ordinal, name, "kernel not loaded"))?;
    let lane = current(gpu)?;
    let (grid, block) = launch_1d(threads);
    let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
    let mut b = lane.stream.launch_builder(f);
    for a in args.iter_mut() {
        match a {
            KArg::In(x) => b.arg(&x.slice),
            KArg::Out(x) => b.arg(&mut x.slice),
            KArg::InBf16(x) => b.arg(*x),
            KArg::OutBf16(x) => b.arg(&mut **x),
            KArg::InF16(x) => b.arg(*x),
            KArg::OutF16(x) => b.arg(&mut **x),
            KArg::U32(v) => b.arg(&*v),
            KArg::U64(v) => b.arg(&*v),
            KArg::F32(v) => b.arg(&*v),
        };
    }
    // SAFETY: the argument kinds match the kernel's parameter list (checked above against the
    // table that a test checks against ops.cu), every buffer lives on this GPU, and the callers
    // in `ops.rs` pass sizes no larger than the buffers they index; the kernels return early
    // for thread indices past their size.
    #[allow(unsafe_code)]
    let launched = unsafe { b.launch(cfg) };
    launched.map(|_| ()).map_err(|e| device_error(gpu.ordinal, &format!("launching {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_lists_are_checked_against_the_source() {
        check_args("k_add_assign", &[Arg::PtrF32Mut, Arg::PtrF32, Arg::U32]).unwrap();
        let e = check_args("k_add_assign", &[Arg::PtrF32, Arg::PtrF32, Arg::U32]).unwrap_err().to_string();
        assert!(e.contains("k_add_assign takes"), "{e}");
        let e = check_args("k_nope", &[]).unwrap_err().to_string();
        assert!(e.contains("no kernel named k_nope"), "{e}");
    }

    #[test]
    fn kernels_compile_with_the_checked_options() {
        let o = compile_options();
        assert_eq!(o.options, NVRTC_OPTIONS);
        assert_eq!((o.fmad, o.use_fast_math, o.ftz), (None, None, None), "set once, through NVRTC_OPTIONS");
    }

    /// The argument kinds of one `launch(&gpu, NAME, threads, &mut [ARGS])` call site, read from
    /// the source: `KArg::X(..)` by variant, a 16-bit `T::arg(..)` / `T::arg_mut(..)` by method.
    fn call_sites(source: &str) -> Vec<(String, Vec<Arg>)> {
        let mut sites = Vec::new();
        for (at, _) in source.match_indices("launch(\n").chain(source.match_indices("launch(&gpu")) {
            let rest = &source[at..];
            let Some(open) = rest.find("&mut [") else { continue };
            let name = rest[..open].split('"').nth(1).unwrap_or("?").to_string();
            let mut depth = 0;
            let mut end = open + 5;
            for (k, c) in rest[open + 5..].char_indices() {
                match c {
                    '[' | '(' => depth += 1,
                    ']' | ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = open + 5 + k;
                    break;
                }
            }
            let list = &rest[open + 5..=end];
            let mut kinds = Vec::new();
            let mut i = 0;
            while i < list.len() {
                let tail = &list[i..];
                let kind = [
                    ("KArg::InBf16(", Arg::PtrU16),
                    ("KArg::OutBf16(", Arg::PtrU16Mut),
                    ("KArg::InF16(", Arg::PtrU16),
                    ("KArg::OutF16(", Arg::PtrU16Mut),
                    ("KArg::In(", Arg::PtrF32),
                    ("KArg::Out(", Arg::PtrF32Mut),
                    ("KArg::U32(", Arg::U32),
                    ("KArg::U64(", Arg::U64),
                    ("KArg::F32(", Arg::F32),
                    ("T::arg_mut(", Arg::PtrU16Mut),
                    ("T::arg(", Arg::PtrU16),
                ]
                .into_iter()
                .find(|(p, _)| tail.starts_with(p));
                match kind {
                    Some((p, k)) => {
                        kinds.push(k);
                        i += p.len();
                    }
                    None => i += tail.chars().next().map_or(1, char::len_utf8),
                }
            }
            sites.push((name, kinds));
        }
        sites
    }

    #[test]
    fn every_launch_site_passes_its_kernels_parameter_list() {
        let sites = call_sites(include_str!("ops.rs"));
        assert_eq!(sites.len(), 24, "one site per launch in ops.rs: {sites:?}");
        for (name, kinds) in &sites {
            check_args(name, kinds).unwrap_or_else(|e| panic!("ops.rs: {e}"));
        }
        let launched: std::collections::BTreeSet<&str> = sites.iter().map(|(n, _)| n.as_str()).collect();
        // The 16-bit conversions are launched from gemm.rs with the kernel name in a variable.
        let half = call_sites(include_str!("gemm.rs"));
        assert_eq!(half.len(), 3, "{half:?}");
        for to in ["k_to_bf16", "k_to_f16"] {
            check_args(to, &half[0].1).unwrap();
            check_args(to, &half[1].1).unwrap();
        }
        for from in ["k_from_bf16", "k_from_f16"] {
            check_args(from, &half[2].1).unwrap();
        }
        let all: Vec<&str> = KERNELS.iter().map(|(n, _)| *n).collect();
        for name in all {
            assert!(
                launched.contains(name) || name.starts_with("k_to_") || name.starts_with("k_from_"),
                "{name} is never launched"
            );
        }
    }

    #[test]
    fn no_gpu_means_an_error_not_a_panic() {
        if super::super::probe().check(0).is_ok() {
            eprintln!("skipped: a usable GPU is present; tests/gpu.rs covers it");
            return;
        }
        let e = gpu(0).err().expect("no GPU here").to_string();
        assert!(e.contains("cuda:0"), "{e}");
        assert!(DeviceBuffer::upload(0, &[1.0]).is_err());
        assert!(Lane::new(0).is_err());
    }
}
