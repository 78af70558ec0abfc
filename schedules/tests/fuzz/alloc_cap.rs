//! The fuzz tests' global allocator: the system allocator with a cap on the heap a test process
//! may hold ([`CAP`]), through the `cap` crate. A parser that sizes a table from a number in its
//! input then aborts the case at once ("memory allocation of N bytes failed") instead of
//! exhausting the machine; run under `fuzz::config`, the abort is reported and shrunk like a
//! panic.
//!
//! Invariant: below the cap, allocations behave exactly as the system allocator's.

use std::alloc::System;

use cap::Cap;

/// The most heap a fuzz case's process may hold. Every input here is a few kilobytes, and what is
/// built from it stays within a few times that; an allocation that reaches this comes from a size
/// read out of the input and not checked.
pub const CAP: usize = 256 << 20;

/// The capped allocator.
pub type Capped = Cap<System>;

/// The allocator a fuzz test installs: `#[global_allocator] static ALLOC: Capped = capped();`.
pub const fn capped() -> Capped {
    Cap::new(System, CAP)
}
