//! A per-thread pool of `f32` buffers, so tensors of the shapes a training step repeats are
//! recycled instead of freshly allocated (a fresh 1 MiB buffer costs ~15 µs in mmap/munmap).
//!
//! Invariant: a buffer in the pool is owned by nobody else; it comes back when a
//! [`Tensor`](crate::Tensor) drops and leaves when one is made. Buffers are keyed by exact
//! length, so a taken buffer always has the length asked for. The pool keeps at most
//! [`MAX_POOLED_BYTES`] per thread; past that, dropped buffers go back to the allocator.
//! Pooled bytes are free memory, never part of a stage's `held_bytes`.

use std::cell::RefCell;
use std::collections::HashMap;

/// Buffers shorter than this (in `f32`s) are not pooled: the allocator's own free lists serve
/// them well.
const MIN_POOLED_LEN: usize = 1024;

/// The most bytes one thread's pool keeps.
pub const MAX_POOLED_BYTES: usize = 256 << 20;

#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A buffer of exactly `len` floats with arbitrary (but initialised) contents.
pub(crate) fn take(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED_LEN {
        let reused = POOL
            .try_with(|p| {
                let mut p = p.borrow_mut();
                let v = p.free.get_mut(&len).and_then(Vec::pop);
                if v.is_some() {
                    p.bytes -= len * 4;
                }
                v
            })
            .ok()
            .flatten();
        if let Some(v) = reused {
            return v;
        }
    }
    vec![0.0; len]
}

/// A pooled copy of `v`.
pub(crate) fn copy(v: &[f32]) -> Vec<f32> {
    let mut out = take(v.len());
    out.copy_from_slice(v);
    out
}

/// Returns a buffer to this thread's pool (or to the allocator if the pool is full, the buffer
/// is small, or the thread is shutting down).
pub(crate) fn give(v: Vec<f32>) {
    let len = v.len();
    if len < MIN_POOLED_LEN || len != v.capacity() {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.bytes + len * 4 <= MAX_POOLED_BYTES {
            p.bytes += len * 4;
            p.free.entry(len).or_default().push(v);
        }
    });
}

/// Bytes currently parked in this thread's pool.
pub fn pooled_bytes() -> usize {
    POOL.try_with(|p| p.borrow().bytes).unwrap_or(0)
}

/// Empties this thread's pool, handing every buffer back to the allocator.
pub fn clear_pool() {
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        p.free.clear();
        p.bytes = 0;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_by_exact_length() {
        clear_pool();
        let mut v = take(4096);
        v[0] = 7.0;
        let ptr = v.as_ptr();
        give(v);
        assert_eq!(pooled_bytes(), 4096 * 4);
        let w = take(4096);
        assert_eq!(w.as_ptr(), ptr, "the same buffer comes back");
        assert_eq!(pooled_bytes(), 0);
        assert_eq!(take(4095).len(), 4095, "another length is a fresh buffer");
        give(vec![0.0; 10]);
        assert_eq!(pooled_bytes(), 0, "small buffers are not pooled");
        clear_pool();
    }
}
