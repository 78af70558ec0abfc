//! `Capped`: the system allocator, refusing any single allocation larger than [`CAP`]. A fuzz
//! test installs it as its global allocator, so a parser that sizes a table from a number in its
//! input aborts the case at once ("memory allocation of N bytes failed") instead of exhausting
//! the machine; run under `fuzz::config`, the abort is reported and shrunk like a panic.
//!
//! Invariant: every allocation of at most `CAP` bytes behaves exactly as the system allocator's.

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a fuzz case may make. Every input here is a few kilobytes, and
/// what is built from it stays within a few times that; a request near this size comes from a
/// size read out of the input and not checked.
pub const CAP: usize = 256 << 20;

/// The capped allocator.
pub struct Capped;

// SAFETY: every call is forwarded unchanged to `System`, except that requests over `CAP` get a
// null pointer, which `GlobalAlloc` allows as the report of a failed allocation.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract for `layout` is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this `layout` (only `System` hands out pointers).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` and `layout` are the caller's, from `System`; `new_size` is checked.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
