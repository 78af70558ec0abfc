//! What every fuzz test of the workspace shares: the inputs ([`mutate`]: random text, and valid
//! examples with a few edits), the run settings ([`config`]) and a cap on any single allocation
//! ([`alloc_cap`]). The fuzz tests of the other crates include this folder by path, so there is
//! one definition of each.
//!
//! Invariant: a property run under [`config`] reports a panic, a hang or an allocation over the
//! cap as a failure with the input that caused it, shrunk to a small one.

#![allow(dead_code)]

pub mod alloc_cap;
pub mod costs;
pub mod mutate;

use proptest::test_runner::Config;

/// How long one case may run before it counts as a hang, in milliseconds. Generous: a debug
/// build on a busy machine; every case here takes well under a millisecond when nothing is wrong.
const HANG_MS: u32 = 20_000;

/// `cases` cases per property (or `PROPTEST_CASES` when set, for a longer search), run in a
/// child process (fork) with a time limit per case, so a case that aborts (an allocation over
/// the cap) or hangs is caught and shrunk like a panic.
pub fn config(cases: u32) -> Config {
    let default = Config::default(); // reads PROPTEST_CASES and the other PROPTEST_ variables
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() { default.cases } else { cases };
    Config { cases, fork: true, timeout: HANG_MS, ..default }
}
