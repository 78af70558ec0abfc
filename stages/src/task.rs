//! A synthetic task that ships with the code: learn a fixed random teacher network.
//!
//! Inputs are standard normal; the teacher is `tanh(x·A)·B` with `A`, `B` drawn from the task
//! seed. For cross-entropy the target is the index of the teacher's largest output (first on
//! ties); for MSE it is the teacher's output. Invariant: `batch(step, mb, rows)` is a pure
//! function of `(seed, step, mb, rows)`, so a pipelined step and the sequential reference see
//! the same data.

use crate::loss::LossKind;
use crate::matmul::{matmul_into, Trans};
use crate::precision::Precision;
use crate::rng::{tag, Stream};
use crate::spec::ModelSpec;
use crate::tensor::Tensor;

/// Hidden width of the teacher.
pub const TEACHER_WIDTH: usize = 64;

/// A deterministic supervised task shaped for a model spec.
#[derive(Debug, Clone)]
pub struct Task {
    seed: u64,
    loss: LossKind,
    /// `[input, TEACHER_WIDTH]`.
    a: Tensor,
    /// `[TEACHER_WIDTH, output]`.
    b: Tensor,
}

impl Task {
    /// The task for `spec`'s input width, output width and loss, with teacher drawn from `seed`.
    pub fn new(spec: &ModelSpec, seed: u64) -> Task {
        Task::for_widths(spec.input, spec.output, spec.loss, seed)
    }

    /// The task for any model taking rows of `input` floats and ending in `loss` over `output`
    /// columns (classes for cross-entropy), with teacher drawn from `seed`.
    pub fn for_widths(input: usize, output: usize, loss: LossKind, seed: u64) -> Task {
        let (input, output) = (input.max(1), output.max(1));
        let sa = Stream::new(&[tag::TEACHER, seed, 0]);
        let sb = Stream::new(&[tag::TEACHER, seed, 1]);
        let ga = 1.0 / (input as f32).sqrt();
        let gb = 3.0 / (TEACHER_WIDTH as f32).sqrt();
        Task {
            seed,
            loss,
            a: Tensor::from_fn(input, TEACHER_WIDTH, |r, c| ga * sa.normal((r * TEACHER_WIDTH + c) as u64)),
            b: Tensor::from_fn(TEACHER_WIDTH, output, |r, c| gb * sb.normal((r * output + c) as u64)),
        }
    }

    /// Width of the inputs.
    pub fn input_width(&self) -> usize {
        self.a.rows()
    }

    /// Width of the targets: 1 (class index) for cross-entropy, the output width for MSE.
    pub fn target_width(&self) -> usize {
        self.loss.target_width(self.b.cols())
    }

    /// Micro-batch `mb` of step `step`: `rows` inputs and their targets.
    pub fn batch(&self, step: u64, mb: usize, rows: usize) -> (Tensor, Tensor) {
        let s = Stream::new(&[tag::TASK_INPUT, self.seed, step, mb as u64]);
        let cols = self.input_width();
        let x = Tensor::from_fn(rows, cols, |r, c| s.normal((r * cols + c) as u64));
        let mut h = Tensor::zeros(rows, TEACHER_WIDTH);
        let mut y = Tensor::zeros(rows, self.b.cols());
        // Shapes are fixed by construction, so these products cannot fail.
        let ok = matmul_into(&mut h, &x, Trans::No, &self.a, Trans::No, Precision::F32).is_ok();
        for v in h.data_mut() {
            *v = v.tanh();
        }
        let ok = ok && matmul_into(&mut y, &h, Trans::No, &self.b, Trans::No, Precision::F32).is_ok();
        debug_assert!(ok);
        let target = match self.loss {
            LossKind::Mse => y,
            LossKind::CrossEntropy => Tensor::from_fn(rows, 1, |r, _| {
                let row = y.row(r);
                let best = row.iter().enumerate().fold(0, |b, (k, v)| if *v > row[b] { k } else { b });
                best as f32
            }),
        };
        (x, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_deterministic_and_shaped() {
        let spec = ModelSpec::tiny();
        let task = Task::new(&spec, 3);
        let (x, t) = task.batch(2, 1, 8);
        let (x2, t2) = Task::new(&spec, 3).batch(2, 1, 8);
        assert!(x.bit_eq(&x2) && t.bit_eq(&t2));
        assert_eq!((x.shape(), t.shape()), ([8, 16], [8, 1]));
        assert!(!x.bit_eq(&task.batch(2, 2, 8).0), "micro-batches differ");
        assert!(!x.bit_eq(&task.batch(3, 1, 8).0), "steps differ");
        spec.loss.check_target(8, spec.output, &t).unwrap();
        let (_, big) = task.batch(0, 0, 400);
        let classes: std::collections::BTreeSet<u32> = big.data().iter().map(|v| *v as u32).collect();
        assert!(classes.len() >= 3, "the teacher uses several classes: {classes:?}");
        let mse = ModelSpec { loss: LossKind::Mse, ..spec };
        assert_eq!(Task::new(&mse, 3).batch(0, 0, 4).1.shape(), [4, 5]);
    }
}
