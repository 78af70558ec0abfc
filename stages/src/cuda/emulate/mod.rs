//! The kernels of `kernels/ops.cu`, run on the CPU and compared bit for bit with the CPU code
//! they mirror.
//!
//! The host's C compiler (`cc`, which Rust links with; `CC` overrides it) compiles `ops.cu` as C
//! through `kernels/cpu_shim.h` (no contraction, no fast math: each
//! float operation rounded on its own, as NVRTC compiles it with `--fmad=false`), and each kernel
//! runs thread by thread over the grid [`launch_1d`] gives, the shim holding the thread's index.
//! Invariant: the expected values always come from the crate's own CPU functions, never from a
//! copy of their arithmetic; the only host-side arithmetic here is what the launcher will do
//! itself (the `1/(1 − rate)` scale, the loss factors, adding the per-row losses). Without a C
//! compiler these tests fail and say so.

mod gpt;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use libloading::Library;

use super::source::{launch_1d, Arg, KERNELS};
use crate::backend::{gelu, gelu_backward, host_adam_step as adam_update, host_sgd_step as sgd_update};
use crate::layers::{Ctx, Dropout, LayerNorm, NORM_EPS};
use crate::loss::{LossKind, LossSaved};
use crate::optim::AdamScalars;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// `ops.cu` compiled for the CPU and loaded.
struct Ops {
    lib: Library,
    set_index: SetIndex,
}

type SetIndex = unsafe extern "C" fn(u32, u32, u32, u32);

/// A Rust type the launcher passes for one kernel parameter.
trait Param {
    const ARG: Arg;
}

impl Param for *const f32 {
    const ARG: Arg = Arg::PtrF32;
}
impl Param for *mut f32 {
    const ARG: Arg = Arg::PtrF32Mut;
}
impl Param for *const u16 {
    const ARG: Arg = Arg::PtrU16;
}
impl Param for *mut u16 {
    const ARG: Arg = Arg::PtrU16Mut;
}
impl Param for u32 {
    const ARG: Arg = Arg::U32;
}
impl Param for u64 {
    const ARG: Arg = Arg::U64;
}
impl Param for f32 {
    const ARG: Arg = Arg::F32;
}

/// A C function pointer type whose parameters all have an [`Arg`].
trait KernelFn: Copy {
    fn params() -> Vec<Arg>;
}

macro_rules! kernel_fn {
    ($($p:ident),+) => {
        impl<$($p: Param),+> KernelFn for unsafe extern "C" fn($($p),+) {
            fn params() -> Vec<Arg> {
                vec![$($p::ARG),+]
            }
        }
    };
}

kernel_fn!(A, B, C);
kernel_fn!(A, B, C, D);
kernel_fn!(A, B, C, D, E);
kernel_fn!(A, B, C, D, E, F);
kernel_fn!(A, B, C, D, E, F, G);
kernel_fn!(A, B, C, D, E, F, G, H);
kernel_fn!(A, B, C, D, E, F, G, H, I);
kernel_fn!(A, B, C, D, E, F, G, H, I, J, K);

/// The library, built once per test process.
fn ops() -> &'static Ops {
    static OPS: OnceLock<Ops> = OnceLock::new();
    OPS.get_or_init(build)
}

fn build() -> Ops {
    let kernels = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("pipesched-ops-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let dir = Scratch(dir);
    let so = dir.0.join("libops.so");
    // C has only C linkage: the kernels' `extern "C"` prefix goes, nothing else changes.
    let source = dir.0.join("ops.c");
    let text = std::fs::read_to_string(kernels.join("ops.cu")).expect("stages/kernels/ops.cu is readable");
    std::fs::write(&source, text.replace("extern \"C\" ", ""))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", source.display()));
    // The C compiler Rust links with; `CC` overrides it.
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let output = Command::new(&cc)
        .args(["-std=c11", "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", "-include"])
        .arg(kernels.join("cpu_shim.h"))
        .args(["-x", "c"])
        .arg(&source)
        .args(["-o"])
        .arg(&so)
        .arg("-lm")
        .output()
        .unwrap_or_else(|e| {
            panic!("the CUDA kernels are checked on the CPU by compiling them with the C compiler `{cc}`, which could not be run ({e}); install one (e.g. `apt-get install gcc`) or set CC")
        });
    assert!(output.status.success(), "{cc} could not compile ops.cu:\n{}", String::from_utf8_lossy(&output.stderr));
    // SAFETY: the library is ops.cu compiled just above as C; loading it runs no initialiser
    // (the file defines no constructor).
    #[allow(unsafe_code)]
    let lib = unsafe { Library::new(&so) }.unwrap_or_else(|e| panic!("cannot load {}: {e}", so.display()));
    // SAFETY: cpu_shim.h defines `psim_set_index` as a C `void(unsigned, unsigned, unsigned,
    // unsigned)`, which is `SetIndex`.
    #[allow(unsafe_code)]
    let set_index = unsafe { *lib.get::<SetIndex>("psim_set_index").expect("cpu_shim.h exports psim_set_index") };
    Ops { lib, set_index }
}

/// A directory removed when dropped, whether the build succeeded or panicked (a loaded
/// library's mapping outlives its file).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Ops {
    /// The kernel `name`, typed as `K` after checking `K`'s parameters against [`KERNELS`]
    /// (which `source.rs` checks against the source).
    fn kernel<K: KernelFn>(&self, name: &str) -> K {
        let (_, want) = KERNELS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} is not in KERNELS"));
        assert_eq!(K::params(), *want, "{name}: the test's function type disagrees with KERNELS");
        // SAFETY: `name` is an `extern "C"` function of ops.cu whose parameters are `want` (the
        // source test holds KERNELS to the source), `K` is an `extern "C"` function pointer
        // with exactly those parameter types and no return value, and the library lives in a
        // static for the rest of the process, so the pointer never dangles.
        #[allow(unsafe_code)]
        let f = unsafe { *self.lib.get::<K>(name).unwrap_or_else(|e| panic!("{name}: {e}")) };
        f
    }

    /// Runs `call` once per thread of the grid for `threads` items, the thread's index set.
    fn grid(&self, threads: u32, mut call: impl FnMut()) {
        let (grid, block) = launch_1d(threads);
        for b in 0..grid {
            for t in 0..block {
                // SAFETY: psim_set_index only writes the calling thread's thread-local indices.
                #[allow(unsafe_code)]
                unsafe {
                    (self.set_index)(grid, b, block, t)
                };
                call();
            }
        }
    }
}

/// Panics at the first element whose bits differ, showing both values.
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(k) = (0..got.len()).find(|&k| got[k].to_bits() != want[k].to_bits()) {
        panic!(
            "{what}[{k}]: kernel {:e} ({:#010x}), CPU {:e} ({:#010x})",
            got[k],
            got[k].to_bits(),
            want[k],
            want[k].to_bits()
        );
    }
}

/// `n` values of both signs over many magnitudes (down to subnormal, up to 3e4), with `+0` and
/// `−0` among them, different for each `salt`.
fn varied(n: usize, salt: u64) -> Vec<f32> {
    const SCALES: [f32; 7] = [1.0, 0.01, 10.0, 100.0, 3.0e4, 1e-30, 1e-41];
    let s = Stream::new(&[0xE3, salt]);
    (0..n)
        .map(|k| match k % 17 {
            5 => 0.0,
            11 => -0.0,
            _ => s.normal(k as u64) * SCALES[k % SCALES.len()],
        })
        .collect()
}

fn tensor(rows: usize, cols: usize, salt: u64) -> Tensor {
    Tensor::new(rows, cols, varied(rows * cols, salt)).unwrap()
}

/// Shapes with one column, one row, and widths on both sides of a block.
const SHAPES: [(usize, usize); 7] = [(1, 1), (5, 1), (1, 7), (3, 255), (2, 256), (4, 257), (37, 19)];

#[test]
fn add_assign_add_bias_and_column_sums() {
    let ops = ops();
    let add: unsafe extern "C" fn(*mut f32, *const f32, u32) = ops.kernel("k_add_assign");
    let bias: unsafe extern "C" fn(*mut f32, *const f32, u32, u32) = ops.kernel("k_add_bias");
    let sums: unsafe extern "C" fn(*const f32, *mut f32, u32, u32) = ops.kernel("k_column_sums");
    for (k, &(rows, cols)) in SHAPES.iter().enumerate() {
        let salt = 10 * k as u64;
        let (mut a, b) = (tensor(rows, cols, salt), tensor(rows, cols, salt + 1));
        // A column of −0 sums to +0 from Tensor::zeros, to −0 from a −0 start.
        for r in 0..rows {
            a.data_mut()[r * cols] = -0.0;
        }
        let mut want = a.clone();
        want.add_assign(&b).unwrap();
        let mut got = a.to_vec();
        let (pa, pb, n) = (got.as_mut_ptr(), b.data().as_ptr(), a.len() as u32);
        // SAFETY: `got` and `b` hold n floats; the kernel touches index i < n only.
        #[allow(unsafe_code)]
        ops.grid(n, || unsafe { add(pa, pb, n) });
        assert_bits("add_assign", &got, want.data());

        // The bias add of Linear::forward, after the same product Tensor::matmul gives.
        let (x, w, bv) = (tensor(rows, 3, salt + 2), tensor(3, cols, salt + 3), tensor(1, cols, salt + 4));
        let want = crate::layers::Linear::from_parts(w.clone(), bv.clone()).unwrap().forward(&x).unwrap();
        let mut got = x.matmul(&w).unwrap().to_vec();
        let (py, pb) = (got.as_mut_ptr(), bv.data().as_ptr());
        let (r, c) = (rows as u32, cols as u32);
        // SAFETY: `got` holds rows·cols floats and `bv` cols; the kernel guards i < rows·cols.
        #[allow(unsafe_code)]
        ops.grid(r * c, || unsafe { bias(py, pb, r, c) });
        assert_bits("add_bias", &got, want.data());

        let mut got = vec![f32::NAN; cols];
        let (px, po) = (a.data().as_ptr(), got.as_mut_ptr());
        // SAFETY: `a` holds rows·cols floats and `got` cols; one thread per column c < cols.
        #[allow(unsafe_code)]
        ops.grid(c, || unsafe { sums(px, po, r, c) });
        assert_bits("column_sums", &got, a.column_sums().unwrap().data());
    }
}

#[test]
fn gelu_forward_and_backward() {
    let ops = ops();
    let fwd: unsafe extern "C" fn(*const f32, *mut f32, u32) = ops.kernel("k_gelu_forward");
    let bwd: unsafe extern "C" fn(*const f32, *mut f32, u32) = ops.kernel("k_gelu_backward");
    let mut values = varied(1000, 1);
    // Past both clamps of exp_approx, and the extremes.
    values.extend([-1e3, 1e3, -60.0, 60.0, -44.0, 44.0, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY]);
    for n in [1, 255, 256, 257, values.len()] {
        let x = Tensor::new(1, n, values[..n].to_vec()).unwrap();
        let mut got = vec![f32::NAN; n];
        let (px, py, len) = (x.data().as_ptr(), got.as_mut_ptr(), n as u32);
        // SAFETY: `x` and `got` hold n floats; the kernel guards i < n.
        #[allow(unsafe_code)]
        ops.grid(len, || unsafe { fwd(px, py, len) });
        assert_bits("gelu", &got, gelu(&x).unwrap().data());

        let dy = tensor(1, n, 2);
        let mut got = dy.to_vec();
        let pd = got.as_mut_ptr();
        // SAFETY: as above.
        #[allow(unsafe_code)]
        ops.grid(len, || unsafe { bwd(px, pd, len) });
        assert_bits("gelu_backward", &got, gelu_backward(&x, dy).unwrap().data());
    }
}

#[test]
fn dropout_mask() {
    let ops = ops();
    let k: unsafe extern "C" fn(*mut f32, u32, u64, f32, f32) = ops.kernel("k_dropout");
    // The last rate equals draw 7 of its stream: kept, as `>=` keeps it.
    let tie = Dropout { rate: 0.0 }.stream(&Ctx::new(5, 6, 7, 4)).uniform(7);
    for (rate, layer, seed, step, mb, n) in [
        (0.1, 0, 1, 0, 0, 1),
        (0.5, 3, 7, 2, 1, 257),
        (0.9, 11, 9, 100, 5, 3000),
        (0.25, 2, u64::MAX, 1, 3, 256),
        (tie, 4, 5, 6, 7, 300),
    ] {
        let (d, ctx) = (Dropout { rate }, Ctx::new(seed, step, mb, layer));
        let x = tensor(1, n, layer as u64);
        let mut want = x.clone();
        d.apply(&mut want, &ctx).unwrap();
        let mut got = x.to_vec();
        let (pt, len, key, scale) = (got.as_mut_ptr(), n as u32, d.stream(&ctx).key(), 1.0 / (1.0 - rate));
        // SAFETY: `got` holds n floats; the kernel guards i < n.
        #[allow(unsafe_code)]
        ops.grid(len, || unsafe { k(pt, len, key, rate, scale) });
        assert_bits("dropout", &got, want.data());
    }
}

/// `[rows, cols]` values with one row of `−0` and one constant row.
fn norm_input(rows: usize, cols: usize, salt: u64) -> Tensor {
    let mut x = tensor(rows, cols, salt);
    if rows > 2 {
        x.data_mut()[..cols].fill(-0.0);
        x.data_mut()[cols..2 * cols].fill(2.5);
    }
    x
}

#[test]
fn layer_norm_forward_backward_and_weight_grads() {
    let ops = ops();
    type Fwd = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, *mut f32, *mut f32, u32, u32, f32);
    type Bwd = unsafe extern "C" fn(*const f32, *const f32, *const f32, *const f32, *mut f32, u32, u32);
    let fwd: Fwd = ops.kernel("k_layer_norm_forward");
    let bwd: Bwd = ops.kernel("k_layer_norm_backward_input");
    let dgamma: unsafe extern "C" fn(*const f32, *const f32, *mut f32, u32, u32) =
        ops.kernel("k_layer_norm_gamma_grad");
    let sums: unsafe extern "C" fn(*const f32, *mut f32, u32, u32) = ops.kernel("k_column_sums");
    for (k, &(rows, cols)) in SHAPES.iter().chain(&[(300, 4), (3, 513)]).enumerate() {
        let salt = 100 + 10 * k as u64;
        let mut gamma = Tensor::new(1, cols, varied(cols, salt).iter().map(|v| v + 1.0).collect()).unwrap();
        gamma.data_mut()[0] = 1.0;
        let norm = LayerNorm { gamma, beta: tensor(1, cols, salt + 1), frozen: false };
        let x = norm_input(rows, cols, salt + 2);
        let (want_y, stats) = norm.forward(&x).unwrap();
        let (mut y, mut xhat, mut rstd) =
            (vec![f32::NAN; rows * cols], vec![f32::NAN; rows * cols], vec![f32::NAN; rows]);
        let (px, pg, pb) = (x.data().as_ptr(), norm.gamma.data().as_ptr(), norm.beta.data().as_ptr());
        let (py, pxh, prs) = (y.as_mut_ptr(), xhat.as_mut_ptr(), rstd.as_mut_ptr());
        let (r, c) = (rows as u32, cols as u32);
        // SAFETY: x, y, xhat hold rows·cols floats, gamma and beta cols, rstd rows; one thread
        // per row r < rows.
        #[allow(unsafe_code)]
        ops.grid(r, || unsafe { fwd(px, pg, pb, py, pxh, prs, r, c, NORM_EPS) });
        assert_bits("layer_norm y", &y, want_y.data());
        assert_bits("layer_norm xhat", &xhat, stats.xhat.data());
        assert_bits("layer_norm rstd", &rstd, stats.rstd.data());

        // Signed zeros where the start of a sum shows: column 0 with every dy·x̂ = −0 (dγ), row 2
        // with every d·x̂ = −0 (mean(d·x̂)), row 3 with every d = dy·γ = −0 (mean(d)).
        let mut dy = tensor(rows, cols, salt + 3);
        let (xh, g) = (stats.xhat.data(), norm.gamma.data());
        for r in 0..rows {
            dy.data_mut()[r * cols] = 0.0f32.copysign(-xh[r * cols]);
        }
        for j in 0..cols.min(rows.saturating_sub(3) * cols) {
            dy.data_mut()[2 * cols + j] = 0.0f32.copysign(-(xh[2 * cols + j] * g[j]));
            dy.data_mut()[3 * cols + j] = 0.0f32.copysign(-g[j]);
        }
        let want_dx = norm.backward_input(&stats, &dy).unwrap();
        let mut dx = vec![f32::NAN; rows * cols];
        let (pxh, prs, pdy, pdx) =
            (stats.xhat.data().as_ptr(), stats.rstd.data().as_ptr(), dy.data().as_ptr(), dx.as_mut_ptr());
        // SAFETY: xhat, dy, dx hold rows·cols floats, rstd rows, gamma cols; one thread per row.
        #[allow(unsafe_code)]
        ops.grid(r, || unsafe { bwd(pxh, prs, pg, pdy, pdx, r, c) });
        assert_bits("layer_norm dx", &dx, want_dx.data());

        let [want_dg, want_db] = <[Tensor; 2]>::try_from(norm.weight_grads(&stats.xhat, &dy).unwrap()).unwrap();
        let (mut dg, mut db) = (vec![f32::NAN; cols], vec![f32::NAN; cols]);
        let (pdg, pdb) = (dg.as_mut_ptr(), db.as_mut_ptr());
        // SAFETY: xhat and dy hold rows·cols floats, dg and db cols; one thread per column.
        #[allow(unsafe_code)]
        ops.grid(c, || unsafe {
            dgamma(pxh, pdy, pdg, r, c);
            sums(pdy, pdb, r, c);
        });
        assert_bits("layer_norm dgamma", &dg, want_dg.data());
        assert_bits("layer_norm dbeta", &db, want_db.data());
    }
}

#[test]
fn cross_entropy_forward_and_backward() {
    let ops = ops();
    let fwd: unsafe extern "C" fn(*const f32, *const f32, *mut f32, *mut f32, u32, u32) =
        ops.kernel("k_cross_entropy_forward");
    let bwd: unsafe extern "C" fn(*mut f32, *const f32, u32, u32, f32) = ops.kernel("k_cross_entropy_backward");
    let mean: unsafe extern "C" fn(*const f32, *mut f32, u32) = ops.kernel("k_mean");
    // Each shape twice: logits up to ~1e5 apart (exp_approx clamps at −87), then logits of a
    // few units (where ln(sum) is not lost next to the max).
    for (k, &(rows, cols)) in SHAPES.iter().chain(&SHAPES).enumerate() {
        let salt = 200 + 10 * k as u64;
        let s = Stream::new(&[0x7A, salt]);
        let logits = match k < SHAPES.len() {
            true => tensor(rows, cols, salt),
            false => Tensor::from_fn(rows, cols, |r, c| 3.0 * s.normal((r * cols + c) as u64)),
        };
        let target = Tensor::from_fn(rows, 1, |r, _| (s.bits(r as u64) % cols as u64) as f32);
        let (want_loss, saved) = LossKind::CrossEntropy.forward(&logits, &target).unwrap();
        let (mut probs, mut row_loss) = (vec![f32::NAN; rows * cols], vec![f32::NAN; rows]);
        let (px, pt, pp, pl) =
            (logits.data().as_ptr(), target.data().as_ptr(), probs.as_mut_ptr(), row_loss.as_mut_ptr());
        let (r, c) = (rows as u32, cols as u32);
        // SAFETY: logits and probs hold rows·cols floats, target and row_loss rows, and every
        // target is a class index below cols; one thread per row.
        #[allow(unsafe_code)]
        ops.grid(r, || unsafe { fwd(px, pt, pp, pl, r, c) });
        // The host's part: the row losses added in row order, over the rows.
        let loss = row_loss.iter().fold(0.0f32, |t, l| t + l) / rows as f32;
        assert_bits("cross_entropy loss", &[loss], &[want_loss]);
        // ... and the same on the GPU side, which keeps the loss there.
        let mut on_device = f32::NAN;
        let pm: *mut f32 = &mut on_device;
        // SAFETY: row_loss holds rows floats and `on_device` one; only thread 0 does anything.
        #[allow(unsafe_code)]
        ops.grid(1, || unsafe { mean(row_loss.as_ptr(), pm, r) });
        assert_bits("cross_entropy loss on the device", &[on_device], &[want_loss]);
        // Row by row too: a one-row batch's loss is (0 + its row loss) / 1.
        for (r, l) in row_loss.iter().enumerate() {
            let one = Tensor::new(1, cols, logits.row(r).to_vec()).unwrap();
            let t = Tensor::scalar(target.data()[r]);
            let (want, _) = LossKind::CrossEntropy.forward(&one, &t).unwrap();
            assert_bits("cross_entropy row loss", &[(0.0 + l) / 1.0], &[want]);
        }
        let LossSaved::CrossEntropy { probs: want_probs, .. } = &saved else { unreachable!() };
        assert_bits("cross_entropy probs", &probs, want_probs.data());

        let m = 3;
        let factor = 1.0 / (rows * m) as f32;
        let want = LossKind::backward(saved, m).unwrap();
        let pp = probs.as_mut_ptr();
        // SAFETY: probs holds rows·cols floats and target rows valid class indices; i < rows·cols.
        #[allow(unsafe_code)]
        ops.grid(r * c, || unsafe { bwd(pp, pt, r, c, factor) });
        assert_bits("cross_entropy gradient", &probs, want.data());
    }
}

#[test]
fn mse_forward_and_backward() {
    let ops = ops();
    let sub: unsafe extern "C" fn(*const f32, *const f32, *mut f32, u32) = ops.kernel("k_sub");
    let squares: unsafe extern "C" fn(*const f32, *mut f32, u32) = ops.kernel("k_sum_squares");
    let scale: unsafe extern "C" fn(*mut f32, u32, f32) = ops.kernel("k_scale");
    let divide: unsafe extern "C" fn(*mut f32, u32, f32) = ops.kernel("k_divide");
    for (k, &(rows, cols)) in SHAPES.iter().enumerate() {
        let salt = 300 + 10 * k as u64;
        let (pred, target) = (tensor(rows, cols, salt), tensor(rows, cols, salt + 1));
        let (want_loss, saved) = LossKind::Mse.forward(&pred, &target).unwrap();
        let n = pred.len() as u32;
        let mut diff = vec![f32::NAN; pred.len()];
        let (pa, pb, pd) = (pred.data().as_ptr(), target.data().as_ptr(), diff.as_mut_ptr());
        // SAFETY: pred, target, diff hold n floats; the kernel guards i < n.
        #[allow(unsafe_code)]
        ops.grid(n, || unsafe { sub(pa, pb, pd, n) });
        let LossSaved::Mse { diff: want_diff } = &saved else { unreachable!() };
        assert_bits("mse diff", &diff, want_diff.data());

        let mut total = f32::NAN;
        let pt: *mut f32 = &mut total;
        // SAFETY: diff holds n floats and `total` one; only thread 0 does anything.
        #[allow(unsafe_code)]
        ops.grid(1, || unsafe { squares(pd, pt, n) });
        assert_bits("mse loss", &[total / n as f32], &[want_loss]);
        let mut on_device = total;
        let po: *mut f32 = &mut on_device;
        // SAFETY: one float, one thread.
        #[allow(unsafe_code)]
        ops.grid(1, || unsafe { divide(po, 1, n as f32) });
        assert_bits("mse loss on the device", &[on_device], &[want_loss]);

        if k == 0 {
            // The start value shows only in an empty sum; loss.rs sums with `Iterator::sum`.
            let empty: f32 = [0.0f32; 0].iter().map(|d| d * d).sum();
            let mut got = f32::NAN;
            let pg: *mut f32 = &mut got;
            // SAFETY: with n = 0 the kernel reads nothing and writes `got` alone.
            #[allow(unsafe_code)]
            ops.grid(1, || unsafe { squares(pd, pg, 0) });
            assert_bits("empty sum of squares", &[got], &[empty]);
        }

        let m = 4;
        let factor = 2.0 / (pred.len() * m) as f32;
        let want = LossKind::backward(saved, m).unwrap();
        // SAFETY: diff holds n floats; the kernel guards i < n.
        #[allow(unsafe_code)]
        ops.grid(n, || unsafe { scale(pd, n, factor) });
        assert_bits("mse gradient", &diff, want.data());
    }
}

#[test]
fn sgd_and_adam_steps() {
    let ops = ops();
    let sgd: unsafe extern "C" fn(*mut f32, *const f32, *mut f32, u32, f32, f32) = ops.kernel("k_sgd_step");
    type Adam = unsafe extern "C" fn(*mut f32, *const f32, *mut f32, *mut f32, u32, f32, f32, f32, f32, f32, f32);
    let adam: Adam = ops.kernel("k_adam_step");
    for n in [1usize, 255, 257, 1000] {
        let (mut p_cpu, mut v_cpu) = (varied(n, 400), vec![0.0f32; n]);
        let (mut p, mut v) = (p_cpu.clone(), v_cpu.clone());
        let (mut pa_cpu, mut m_cpu, mut va_cpu) = (varied(n, 401), vec![0.0f32; n], vec![0.0f32; n]);
        let (mut pa, mut m, mut va) = (pa_cpu.clone(), m_cpu.clone(), va_cpu.clone());
        let (beta1, beta2) = (0.9f32, 0.999f32);
        for t in 1..=3 {
            let g = varied(n, 410 + t as u64);
            let len = n as u32;
            sgd_update(&mut p_cpu, &g, &mut v_cpu, 0.05, 0.9);
            let (pp, pg, pv) = (p.as_mut_ptr(), g.as_ptr(), v.as_mut_ptr());
            // SAFETY: p, g, v hold n floats; the kernel guards i < n.
            #[allow(unsafe_code)]
            ops.grid(len, || unsafe { sgd(pp, pg, pv, len, 0.05, 0.9) });
            assert_bits("sgd p", &p, &p_cpu);
            assert_bits("sgd v", &v, &v_cpu);

            let s = AdamScalars { lr: 1e-3, beta1, beta2, eps: 1e-8, c1: 1.0 - beta1.powi(t), c2: 1.0 - beta2.powi(t) };
            adam_update(&mut pa_cpu, &g, &mut m_cpu, &mut va_cpu, s);
            let (pp, pm, pv) = (pa.as_mut_ptr(), m.as_mut_ptr(), va.as_mut_ptr());
            // SAFETY: p, g, m, v hold n floats; the kernel guards i < n.
            #[allow(unsafe_code)]
            ops.grid(len, || unsafe { adam(pp, pg, pm, pv, len, s.lr, s.beta1, s.beta2, s.eps, s.c1, s.c2) });
            assert_bits("adam p", &pa, &pa_cpu);
            assert_bits("adam m", &m, &m_cpu);
            assert_bits("adam v", &va, &va_cpu);
        }
    }
}

/// f32 bit patterns around every rounding boundary of both 16-bit formats: each upper half with
/// lower halves at and next to the bf16 and f16 round bits (and the NaNs and infinities among
/// them).
fn f32_patterns() -> Vec<u32> {
    const LOW: [u32; 14] = [
        0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x5FFF, 0x7FFF, 0x8000, 0x8001, 0x9000, 0xE000, 0xFFFF,
    ];
    (0..=0xFFFFu32).flat_map(|hi| LOW.iter().map(move |lo| (hi << 16) | lo)).collect()
}

#[test]
fn conversions_to_16_bits_match_the_half_crate() {
    let ops = ops();
    let to_bf16: unsafe extern "C" fn(*const f32, *mut u16, u32) = ops.kernel("k_to_bf16");
    let to_f16: unsafe extern "C" fn(*const f32, *mut u16, u32) = ops.kernel("k_to_f16");
    let x: Vec<f32> = f32_patterns().into_iter().map(f32::from_bits).collect();
    let n = x.len() as u32;
    let (mut bf, mut h) = (vec![0u16; x.len()], vec![0u16; x.len()]);
    let (px, pbf, ph) = (x.as_ptr(), bf.as_mut_ptr(), h.as_mut_ptr());
    // SAFETY: x, bf, h hold n elements; both kernels guard i < n.
    #[allow(unsafe_code)]
    ops.grid(n, || unsafe {
        to_bf16(px, pbf, n);
        to_f16(px, ph, n);
    });
    for (k, v) in x.iter().enumerate() {
        let (want_bf, want_h) = (half::bf16::from_f32(*v).to_bits(), half::f16::from_f32(*v).to_bits());
        assert_eq!(bf[k], want_bf, "bf16 of {v:e} ({:#010x}): kernel {:#06x}, half {want_bf:#06x}", v.to_bits(), bf[k]);
        assert_eq!(h[k], want_h, "f16 of {v:e} ({:#010x}): kernel {:#06x}, half {want_h:#06x}", v.to_bits(), h[k]);
    }
}

#[test]
fn conversions_from_16_bits_match_the_half_crate() {
    let ops = ops();
    let from_bf16: unsafe extern "C" fn(*const u16, *mut f32, u32) = ops.kernel("k_from_bf16");
    let from_f16: unsafe extern "C" fn(*const u16, *mut f32, u32) = ops.kernel("k_from_f16");
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let n = all.len() as u32;
    let (mut bf, mut h) = (vec![0f32; all.len()], vec![0f32; all.len()]);
    let (px, pbf, ph) = (all.as_ptr(), bf.as_mut_ptr(), h.as_mut_ptr());
    // SAFETY: all, bf, h hold n elements; both kernels guard i < n.
    #[allow(unsafe_code)]
    ops.grid(n, || unsafe {
        from_bf16(px, pbf, n);
        from_f16(px, ph, n);
    });
    let want_bf: Vec<f32> = all.iter().map(|&b| half::bf16::from_bits(b).to_f32()).collect();
    let want_h: Vec<f32> = all.iter().map(|&b| half::f16::from_bits(b).to_f32()).collect();
    assert_bits("from_bf16", &bf, &want_bf);
    assert_bits("from_f16", &h, &want_h);
}

#[test]
fn cross_entropy_reads_nothing_for_a_class_outside_the_row() {
    let ops = ops();
    let fwd: unsafe extern "C" fn(*const f32, *const f32, *mut f32, *mut f32, u32, u32) =
        ops.kernel("k_cross_entropy_forward");
    let (rows, cols) = (4usize, 3usize);
    let logits = tensor(rows, cols, 77);
    let target = [0.0f32, 3.0, -1.0, f32::NAN];
    let (mut probs, mut row_loss) = (vec![0.0f32; rows * cols], vec![0.0f32; rows]);
    let (px, pt, pp, pl) = (logits.data().as_ptr(), target.as_ptr(), probs.as_mut_ptr(), row_loss.as_mut_ptr());
    // SAFETY: logits and probs hold rows·cols floats, target and row_loss rows; one thread per
    // row; the kernel indexes a row only with a class inside it.
    #[allow(unsafe_code)]
    ops.grid(rows as u32, || unsafe { fwd(px, pt, pp, pl, rows as u32, cols as u32) });
    assert!(row_loss[0].is_finite());
    assert!(row_loss[1..].iter().all(|l| l.is_nan()), "{row_loss:?}");
}
