//! A cache hint for the walk: a walk of a large schedule switches rank after every few actions,
//! so each rank's own streams (its lane, its trace) are read a few bytes at a time, a thousand
//! ranks apart — more streams than the hardware prefetcher follows. Asking for the next cache
//! lines of a stream while a rank is running makes them arrive before the rank runs again. (The
//! message table needs no hint: a sweep of the walk reads it along a few rows; see
//! [`Message::index`](crate::deps::Message::index).)

/// Asks the CPU to bring the cache line holding `ptr` closer. A hint only: it never faults and
/// changes no value, so any address may be given (one past the end of a buffer included). Does
/// nothing on targets without a stable prefetch instruction.
#[inline(always)]
pub(crate) fn prefetch<T>(ptr: *const T) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    // SAFETY: `prefetcht0` is a hint; it does not access memory architecturally and raises no
    // fault for any address; the `cfg` makes sure the `sse` it needs is there.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = ptr;
}
