//! Every stage's parameters and gradients on rank 0, when ranks are processes: each process
//! holds only its own rank's stages, so before rank 0 can run the sequential reference of
//! `--verify` over the whole model, every process sends it its stages' parameters and
//! accumulated gradients (one gather). The other processes get nothing back.
//!
//! Rank 0 then holds the whole model twice over (plus the reference's own copy): checking a
//! step against the sequential run needs the whole model in one place.

use pipesched_stages::Tensor;

use crate::exec::{Transport, Wire};
use crate::model::Model;
use crate::{Error, Result};

/// Every model stage's parameters and gradients, in model order.
pub struct Collected {
    /// Parameters, per stage.
    pub params: Vec<Vec<Tensor>>,
    /// Accumulated gradients, per stage.
    pub grads: Vec<Vec<Tensor>>,
}

impl Collected {
    /// The gradients as [`Model::verify_grads`] takes them.
    pub fn grad_refs(&self) -> Vec<Vec<&Tensor>> {
        self.grads.iter().map(|g| g.iter().collect()).collect()
    }
}

/// Every model stage's parameters and gradients, on the root process ([`Transport::is_root`]);
/// `None` on the others. Every process must call it (with data parallelism, every process of
/// every replica: each pipeline gathers to its rank 0, the other replicas' with nothing in it).
pub fn to_root(model: &Model, transport: &Transport) -> Result<Option<Collected>> {
    let mut bytes = Vec::new();
    // With data parallelism the replicas' stages are equal after a step: the first one's go.
    let stages = if transport.replica() == 0 { &model.stages[..] } else { &[] };
    for rs in stages {
        let stage = rs.stage();
        bytes.extend_from_slice(&(stage.index() as u64).to_le_bytes());
        bytes.extend_from_slice(&(stage.params().len() as u64).to_le_bytes());
        for t in stage.params().into_iter().chain(stage.grads()) {
            put(&mut bytes, t)?;
        }
    }
    let parts = transport.gather(bytes)?;
    if !transport.is_root() {
        return Ok(None);
    }
    let n = model.specs.len();
    let mut got: Vec<Option<(Vec<Tensor>, Vec<Tensor>)>> = (0..n).map(|_| None).collect();
    for (rank, part) in parts.into_iter().enumerate() {
        let mut rest = part.as_slice();
        while !rest.is_empty() {
            let s = take_u64(&mut rest, rank)? as usize;
            let slot = got.get_mut(s).ok_or_else(|| bad(rank, "a stage out of range"))?;
            let count = take_u64(&mut rest, rank)? as usize;
            if count > rest.len() / 8 {
                return Err(bad(rank, "more tensors than bytes"));
            }
            let mut tensors = (0..2 * count).map(|_| get(&mut rest, rank)).collect::<Result<Vec<_>>>()?;
            let grads = tensors.split_off(count);
            *slot = Some((tensors, grads));
        }
    }
    let (mut params, mut grads) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (s, g) in got.into_iter().enumerate() {
        let (p, g) = g.ok_or_else(|| Error::Config(format!("no process sent stage {s}'s parameters")))?;
        params.push(p);
        grads.push(g);
    }
    Ok(Some(Collected { params, grads }))
}

fn bad(rank: usize, what: &str) -> Error {
    Error::Config(format!("rank {rank}'s stages cannot be read: {what}"))
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
