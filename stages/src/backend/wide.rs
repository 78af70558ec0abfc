//! Element-wise host loops compiled twice: for the baseline x86-64 target (SSE2, 4 floats a
//! vector) and for AVX2 (8 floats), picked once per call from what the CPU reports.
//!
//! Invariant: both builds run the same IEEE operations on every element — AVX2 without FMA, so
//! no multiply and add is fused — and give the same bits; only the vector width differs. (The
//! CUDA kernels repeat these loops' arithmetic, also without fused multiply-add.)

/// `f()`, compiled with AVX2 enabled when the CPU has it.
#[allow(unsafe_code)]
#[inline(always)]
pub(crate) fn run<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU reported AVX2 just above, so the instructions `with_avx2` may use
            // exist; `f` itself is safe code.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}
