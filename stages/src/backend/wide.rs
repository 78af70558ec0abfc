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

/// Defines `fn $name<E: Element>(args) -> ret` that runs `$inner::<E>(args)` — an
/// `#[inline(always)]` function holding the loops — compiled with AVX2 when the CPU has it. The
/// form of [`run`] for bodies too large for the compiler to inline into a closure call (a closure
/// that is not inlined keeps the baseline target and its 4-float vectors).
macro_rules! twin {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $inner:ident) => {
        $(#[$meta])*
        #[allow(unsafe_code)]
        $vis fn $name<E: Element>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<E: Element>($($arg: $ty),*) $(-> $ret)? {
                    $inner::<E>($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU reported AVX2 just above, so the instructions `avx2` may
                    // use exist; its body is safe code.
                    return unsafe { avx2::<E>($($arg),*) };
                }
            }
            $inner::<E>($($arg),*)
        }
    };
}
pub(crate) use twin;
