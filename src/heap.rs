//! How the process's heap treats freed memory. A pipeline frees and reallocates the same
//! activation-sized buffers op after op: each stage holds a varying number of micro-batches,
//! so the heap's top grows and shrinks within every step. glibc's defaults hand such memory
//! back to the system — buffers from 128 KiB up (the threshold adapts, but only after a free)
//! are mapped and unmapped on every allocation, and a heap top with over 128 KiB free is
//! trimmed — so the next op that needs it takes a page fault for every 4 KiB it touches.
//! On gpt-small at p = 2 that made ops 20–60 % slower inside the pipeline than in the
//! profile, where the same op runs again and again.
//!
//! [`keep_freed_memory`] makes the heap keep what it frees for reuse, as the caching
//! allocators of GPU frameworks do: buffers up to glibc's largest mapping threshold (32 MiB)
//! come from the heap, and the heap is not trimmed below 2 GiB of free memory. The bytes the
//! stages hold, and so every peak pipesched predicts and measures, are unchanged: the ledger
//! counts tensors, not the heap; only the process's resident size can stay at its peak.

/// Makes the heap keep freed memory for reuse (see the module docs); `true` where it was set.
/// The binaries call it first thing, before any thread starts; a program built on the library
/// may do the same. Where the C library is not glibc it does nothing and returns `false`.
pub fn keep_freed_memory() -> bool {
    imp::keep_freed_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::os::raw::c_int;

    // glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    /// The largest mapping threshold glibc accepts (HEAP_MAX_SIZE / 2): 32 MiB on a 64-bit
    /// system, 16 MiB on a 32-bit one (where 32 MiB is refused and `false` returned).
    const MMAP_THRESHOLD_MAX: c_int = 32 << 20;
    /// Free bytes at the heap's top before it is trimmed.
    const TRIM_THRESHOLD: c_int = c_int::MAX;

    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub fn keep_freed_memory() -> bool {
        // SAFETY: mallopt only sets the allocator's tunables (under the main arena's lock;
        // other threads' allocations read them unlocked, hence: call it before threads start)
        // and returns 0 when it refuses a value.
        let (mmap, trim) =
            unsafe { (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) };
        mmap == 1 && trim == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn keep_freed_memory() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    fn glibc_takes_both_settings() {
        assert!(super::keep_freed_memory());
    }
}
