//! Activation offload on a stage: `offload` moves what a micro-batch's forward kept off the
//! device into host memory, `reload` brings it back, bit for bit, before its recompute or
//! backward.
//!
//! The host side is a [`HostStore`]: buffers of its own — a separate pool from the thread's
//! tensor pool ([`pool`](crate::pool)), so an offloaded micro-batch's values really live in other
//! memory — keyed by micro-batch. `offload` copies each kept tensor's values into a host buffer
//! and releases the device tensor (leaving an empty tensor of the same type in the slot, so the
//! slot keeps its shape); `reload` copies them into fresh device tensors, in the slot's own order
//! ([`Slot::tensors_mut`](crate::slot::Slot)).
//!
//! Invariants: an offloaded micro-batch holds 0 device bytes (`held_bytes_of`) and exactly its
//! former bytes in [`Stage::host_bytes`]; every op but `reload` refuses it
//! ([`Stage::ctx`](crate::Stage)); a reloaded micro-batch holds the very bits it held before.
//! Stages on a GPU refuse offload for now (the copy would need the stage's stream and pinned
//! host memory).

use std::collections::HashMap;

use crate::device::Device;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::precision::Format;
use crate::slot::Phase;
use crate::stage::Stage;
use crate::tensor::{Store, Tensor};

/// One tensor's values in host memory, with its shape.
#[derive(Debug)]
struct HostCopy {
    rows: usize,
    cols: usize,
    values: HostValues,
}

/// Host buffers, by element type.
#[derive(Debug)]
enum HostValues {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// The bits of a 16-bit storage format (mixed precision).
    Stored(Vec<u16>, Format),
}

impl HostValues {
    fn bytes(&self) -> u64 {
        match self {
            HostValues::F32(v) => (v.len() * 4) as u64,
            HostValues::F64(v) => (v.len() * 8) as u64,
            HostValues::Stored(v, _) => (v.len() * 2) as u64,
        }
    }
}

/// A stage's host memory: offloaded micro-batches, and the free host buffers they go back to.
#[derive(Debug, Default)]
pub(crate) struct HostStore {
    /// By micro-batch: its kept tensors' copies, in the slot's tensor order.
    offloaded: HashMap<usize, Vec<HostCopy>>,
    /// Free host buffers by length.
    free_f32: HashMap<usize, Vec<Vec<f32>>>,
    free_f64: HashMap<usize, Vec<Vec<f64>>>,
}

impl HostStore {
    /// Whether micro-batch `mb` is offloaded.
    pub(crate) fn holds(&self, mb: usize) -> bool {
        self.offloaded.contains_key(&mb)
    }

    /// Bytes of every offloaded micro-batch.
    pub(crate) fn bytes(&self) -> u64 {
        self.offloaded.values().flatten().map(|c| c.values.bytes()).sum()
    }

    /// Drops every offloaded micro-batch (a step abandoned), keeping the free buffers.
    pub(crate) fn clear(&mut self) {
        for (_, copies) in self.offloaded.drain() {
            for c in copies {
                match c.values {
                    HostValues::F32(v) => self.free_f32.entry(v.len()).or_default().push(v),
                    HostValues::F64(v) => self.free_f64.entry(v.len()).or_default().push(v),
                    HostValues::Stored(..) => {}
                }
            }
        }
    }

    /// A host copy of `t`'s values, in a buffer of this store.
    fn copy_out(&mut self, t: &Tensor) -> Result<HostCopy> {
        let values = match t.store() {
            Store::Host(v) => HostValues::F32(copy_into(&mut self.free_f32, v)),
            Store::HostF64(v) => HostValues::F64(copy_into(&mut self.free_f64, v)),
            Store::Stored(bits, format) => HostValues::Stored(bits.clone(), *format),
            Store::Cuda(_) => {
                return Err(Error::Dtype {
                    place: "offload".into(),
                    reason: "a tensor in GPU memory: offload runs on CPU stages only for now".into(),
                })
            }
        };
        Ok(HostCopy { rows: t.rows(), cols: t.cols(), values })
    }

    /// A device tensor with `copy`'s values; its host buffer goes back to the store.
    fn copy_in(&mut self, copy: HostCopy) -> Tensor {
        match copy.values {
            HostValues::F32(v) => {
                let t = restore(copy.rows, copy.cols, &v);
                self.free_f32.entry(v.len()).or_default().push(v);
                t
            }
            HostValues::F64(v) => {
                let t = restore(copy.rows, copy.cols, &v);
                self.free_f64.entry(v.len()).or_default().push(v);
                t
            }
            HostValues::Stored(bits, format) => Tensor::from_stored_bits(copy.rows, copy.cols, bits, format),
        }
    }
}

/// `values` copied into a free host buffer of their length (or a new one).
fn copy_into<E: Element>(free: &mut HashMap<usize, Vec<Vec<E>>>, values: &[E]) -> Vec<E> {
    let mut buf = free.get_mut(&values.len()).and_then(Vec::pop).unwrap_or_else(|| vec![E::ZERO; values.len()]);
    buf.copy_from_slice(values);
    buf
}

/// A `[rows, cols]` tensor of `values` in the stage's device memory (the thread's tensor pool).
fn restore<E: Element>(rows: usize, cols: usize, values: &[E]) -> Tensor {
    let mut t = Tensor::scratch_of::<E>(rows, cols);
    t.host_of_mut::<E>().copy_from_slice(values);
    t
}

impl Stage {
    /// Offload (`O`): moves what the forward of `mb` kept into host memory. An error on a GPU
    /// stage, for a micro-batch whose forward has not run or whose backward has, one already
    /// offloaded, or one that keeps nothing.
    pub fn offload(&mut self, mb: usize) -> Result<()> {
        self.op_working = 0;
        self.ctx("offload", mb)?;
        self.check_host_side("offload", mb)?;
        let phase = self.slots[mb].phase();
        if !matches!(phase, Phase::Checkpointed | Phase::Saved) {
            return Err(Error::Order {
                place: self.place("offload", Some(mb)),
                reason: format!(
                    "the micro-batch is {phase:?}: offload moves what its forward kept, so it comes after F and before R, I or B"
                ),
            });
        }
        if self.slots[mb].bytes() == 0 {
            return Err(Error::Order {
                place: self.place("offload", Some(mb)),
                reason: "the stage keeps nothing for this micro-batch's backward, so there is nothing to move; leave the stage out of --offload".into(),
            });
        }
        let mut copies = Vec::new();
        for t in self.slots[mb].tensors_mut() {
            copies.push(self.host.copy_out(t)?);
            // The device tensor goes back to the pool; an empty one of its type keeps its place.
            *t = t.scratch_like(0, 0)?;
        }
        self.host.offloaded.insert(mb, copies);
        Ok(())
    }

    /// Reload (`L`): moves `mb`'s offloaded tensors back onto the stage's device, bit for bit.
    /// An error if `mb` is not offloaded.
    pub fn reload(&mut self, mb: usize) -> Result<()> {
        self.op_working = 0;
        let place = self.place("reload", Some(mb));
        let m = self.slots.len();
        let Some(copies) = self.host.offloaded.remove(&mb).filter(|_| mb < m) else {
            return Err(Error::Order {
                place,
                reason: "the micro-batch is not offloaded; reload follows its offload (O)".into(),
            });
        };
        let slot = &mut self.slots[mb];
        let mut targets = slot.tensors_mut();
        if targets.len() != copies.len() {
            return Err(Error::Order {
                place,
                reason: format!(
                    "the micro-batch offloaded {} tensors but its state now has {}; nothing may change an offloaded micro-batch",
                    copies.len(),
                    targets.len()
                ),
            });
        }
        for (t, copy) in targets.iter_mut().zip(copies) {
            **t = self.host.copy_in(copy);
        }
        Ok(())
    }

    /// Bytes held in host memory: every offloaded micro-batch.
    pub fn host_bytes(&self) -> u64 {
        self.host.bytes()
    }

    /// Refuses offload on a GPU stage.
    fn check_host_side(&self, op: &str, mb: usize) -> Result<()> {
        if let Device::Cuda(k) = self.spec.device {
            return Err(Error::Device {
                device: format!("cuda:{k}"),
                reason: format!(
                    "{}: activation offload runs on CPU stages only for now; put the stage on the CPU, or drop --offload",
                    self.place(op, Some(mb))
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{ModelSpec, Partition, Policies, Stage, Task};

    fn stages(model: &ModelSpec, policy: &str) -> Vec<Stage> {
        let specs = model.stage_specs(2, &Partition::Even, &policy.parse::<Policies>().unwrap()).unwrap();
        let mut st = Stage::build_all(model, &specs).unwrap();
        for s in &mut st {
            s.begin_step(3, 2).unwrap();
        }
        st
    }

    #[test]
    fn offload_moves_the_kept_bytes_to_the_host_and_reload_brings_back_the_bits() {
        for model in [ModelSpec::tiny(), ModelSpec::gpt_tiny()] {
            let task = Task::new(&model, 2);
            let rows = if model.seq() > 1 { 2 * model.seq() } else { 6 };
            for policy in ["none", "full", "selective"] {
                let mut st = stages(&model, policy);
                let (mut x, t) = task.batch(3, 0, rows);
                x = st[0].forward(0, x, None).unwrap();
                st[1].forward(0, x, Some(&t)).unwrap();
                for s in &mut st {
                    let kept = s.held_bytes();
                    let before: Vec<_> = s.slots[0].tensors().into_iter().cloned().collect();
                    s.offload(0).unwrap();
                    assert_eq!((s.held_bytes(), s.host_bytes()), (0, kept), "{policy}");
                    let e = s.backward_input(0, None).unwrap_err().to_string();
                    assert!(e.contains("offloaded to host memory; reload it (L)"), "{e}");
                    assert!(s.offload(0).is_err());
                    s.reload(0).unwrap();
                    assert_eq!((s.held_bytes(), s.host_bytes()), (kept, 0), "{policy}");
                    let after = s.slots[0].tensors();
                    assert!(after.iter().zip(&before).all(|(a, b)| a.bit_eq(b)), "{policy}");
                    assert!(s.reload(0).unwrap_err().to_string().contains("not offloaded"));
                }
            }
        }
    }

    #[test]
    fn offload_needs_a_forward_before_it() {
        let mut st = stages(&ModelSpec::tiny(), "none");
        let e = st[0].offload(1).unwrap_err().to_string();
        assert!(e.contains("Idle") && e.contains("comes after F"), "{e}");
        assert!(st[0].offload(7).is_err());
    }
}
