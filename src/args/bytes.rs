//! Byte sizes as flags and specs write them: `512`, `64KiB`, `1.5GB` — the stages crate's
//! [`ByteSize`], which recompute policies (`optimal:4MiB`) read too.

pub use pipesched_stages::ByteSize;
