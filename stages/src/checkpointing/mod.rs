//! Activation checkpointing of one chain of layers, as pure algorithms: which activations a
//! back-propagation keeps, which it recomputes, and what that costs in time and bytes.
//!
//! - [`Chain`] (`chain.rs`): per-layer times and bytes, by hand or from a model.
//! - [`Sequence`] (`sequence.rs`): the steps `F∅`, `Fck`, `Fall`, `B`, the memory model they
//!   run in, and [`Sequence::replay`], which checks a sequence and measures its time and peak.
//! - [`solve`] (`rotor.rs`): the optimal sequence under a byte budget (the dynamic program of
//!   Beaumont et al., `rotor`).
//! - [`revolve_forwards`] (`revolve.rs`): Griewank and Walther's counts for homogeneous chains,
//!   which the program reproduces.
//! - [`compare`] (`strategies.rs`): the usual fixed strategies (store all, recompute all,
//!   every K-th, √n, two levels) against the optimum, as rows of a table.
//!
//! Invariant: every strategy here is a [`Sequence`], and every time and peak reported is the
//! one its replay measures; nothing here runs a layer or touches the stages' own
//! [`RecomputePolicy`](crate::RecomputePolicy).

mod chain;
#[cfg(test)]
mod exhaustive;
mod revolve;
mod rotor;
mod sequence;
mod strategies;

pub use chain::{Chain, ChainLayer};
pub use revolve::{revolve_chain, revolve_forwards};
pub use rotor::{min_budget, solve, Solution};
pub use sequence::{Replay, Sequence, Step};
pub use strategies::{compare, recompute_all, segmented, Row};
