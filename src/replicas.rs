//! Every process's copy of a model's stages made equal, when ranks are processes: each process
//! trains only its own rank's stages, so the copies it holds of the others' fall behind; before
//! anything reads every stage (the sequential reference of `--verify`), each process sends its
//! own stages' parameters and accumulated gradients to every other (one all-gather), which
//! overwrite the copies there.
//!
//! Invariant: right after [`sync`], every process's stages hold the same bits. Each process
//! applies the optimizer only to the stages it runs, so its copies of the others stay at what
//! the last `sync` gave them (the parameters a verified step started from are those of the
//! step's start, which the next `sync` brings) — and never change without `--verify`: rank 0's
//! profile and byte predictions read copies whose values do not matter to them.

use pipesched_stages::Tensor;

use crate::exec::{Transport, Wire};
use crate::model::Model;
use crate::workload::Layout;
use crate::{Error, Result};

/// Makes every process's copy of `model` (placed as `layout` says) hold the parameters and
/// gradients of the process that runs each stage. Nothing to do in one process.
pub fn sync(model: &mut Model, layout: Layout, transport: &Transport) -> Result<()> {
    if matches!(transport, Transport::InProcess) {
        return Ok(());
    }
    let mut bytes = Vec::new();
    for (s, rs) in model.stages.iter().enumerate().filter(|(s, _)| transport.runs(layout.rank_of(*s))) {
        let stage = rs.stage();
        bytes.extend_from_slice(&(s as u64).to_le_bytes());
        for t in stage.params().into_iter().chain(stage.grads()) {
            put(&mut bytes, t)?;
        }
    }
    for (rank, part) in transport.all_gather(bytes)?.into_iter().enumerate() {
        let mut rest = part.as_slice();
        while !rest.is_empty() {
            let s = take_u64(&mut rest, rank)? as usize;
            let stage =
                model.stages.get_mut(s).map(|rs| rs.stage_mut()).ok_or_else(|| bad(rank, "a stage out of range"))?;
            let n = stage.params().len();
            let mut tensors = (0..2 * n).map(|_| get(&mut rest, rank)).collect::<Result<Vec<_>>>()?;
            let grads = tensors.split_off(n);
            if !transport.runs(layout.rank_of(s)) {
                stage.overwrite(tensors, grads)?;
            }
        }
    }
    Ok(())
}

fn bad(rank: usize, what: &str) -> Error {
    Error::Config(format!("rank {rank}'s copy of its stages cannot be read: {what}"))
}

/// Appends `t`'s encoding, preceded by its length.
fn put(out: &mut Vec<u8>, t: &Tensor) -> Result<()> {
    let mut enc = Vec::new();
    t.encode(&mut enc).map_err(Error::Config)?;
    out.extend_from_slice(&(enc.len() as u64).to_le_bytes());
    out.extend_from_slice(&enc);
    Ok(())
}

fn take_u64(rest: &mut &[u8], rank: usize) -> Result<u64> {
    let (head, tail) = rest.split_at_checked(8).ok_or_else(|| bad(rank, "it ends inside a length"))?;
    *rest = tail;
    Ok(u64::from_le_bytes(head.try_into().expect("8 bytes")))
}

/// The next tensor [`put`] wrote.
fn get(rest: &mut &[u8], rank: usize) -> Result<Tensor> {
    let len = take_u64(rest, rank)? as usize;
    let (enc, tail) = rest.split_at_checked(len).ok_or_else(|| bad(rank, "it ends inside a tensor"))?;
    *rest = tail;
    Tensor::decode(enc).map_err(|e| bad(rank, &e))
}
