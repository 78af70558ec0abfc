//! Stages on a CUDA GPU. Each test needs `cuda:0` with the driver, cuBLAS and NVRTC, so each is
//! `#[ignore]`d: a run without `--ignored` reports them as ignored, never as passed, and a run
//! with `--ignored` on a machine without a usable GPU fails with the reason (the CPU-checkable
//! parts of the backend — the cuBLAS argument mapping, the kernels' bits, the launch checks — are
//! unit tests of the stages crate). `scripts/gpu-check.sh` builds this file's binary where there
//! is no GPU and runs it with `--ignored` where there is one; run with `--nocapture` to see the
//! measured numbers.

mod common;

use std::sync::{Mutex, MutexGuard};

use common::{deep_tiny, exec, model_on, schedule};
use pipesched::exec::Transport;
use pipesched_schedules::{Kind, Stats};
use pipesched_stages::backend::{
    causal_dropout, causal_softmax, causal_softmax_backward, embedding, embedding_grads, gelu, gelu_backward,
};
use pipesched_stages::layers::{Ctx, Dropout, LayerNorm};
use pipesched_stages::{cuda, Device, LossKind, ModelSpec, Precision, Tensor};

/// `cuda:0`, with the GPU to this test alone (the tests read the driver's memory counters and
/// time the GPU, so they run one at a time whatever `--test-threads` says). Fails the test, with
/// the reason, where stages cannot run on `cuda:0`.
fn gpu(test: &str) -> (Device, MutexGuard<'static, ()>) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    if let Err(e) = cuda::check(0) {
        panic!("{test} needs a CUDA GPU: {e}");
    }
    (Device::Cuda(0), ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner()))
}

fn probe(rows: usize, cols: usize, salt: u64) -> Tensor {
    let s = pipesched_stages::rng::Stream::new(&[salt]);
    Tensor::from_fn(rows, cols, |r, c| 3.0 * s.normal((r * cols + c) as u64))
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn element_wise_kernels_give_the_cpu_bits() {
    let (dev, _gpu) = gpu("element_wise_kernels_give_the_cpu_bits");
    let x = probe(37, 300, 1);
    let d = x.to_device(dev).unwrap();
    assert_eq!(d.device(), dev);
    assert!(gelu(&d).unwrap().bit_eq(&gelu(&x).unwrap()), "GELU");
    let g = probe(37, 300, 2);
    let want = gelu_backward(&x, g.clone()).unwrap();
    assert!(gelu_backward(&d, g.to_device(dev).unwrap()).unwrap().bit_eq(&want), "GELU backward");
    let (drop, ctx) = (Dropout { rate: 0.3 }, Ctx::new(7, 3, 2, 5));
    let (mut a, mut b) = (x.clone(), d.clone());
    drop.apply(&mut a, &ctx).unwrap();
    drop.apply(&mut b, &ctx).unwrap();
    assert!(a.bit_eq(&b), "dropout masks");
    let mut norm = LayerNorm::new(300);
    let (y, stats) = norm.forward(&x).unwrap();
    for p in norm.params_mut() {
        *p = p.to_device(dev).unwrap();
    }
    let (yd, stats_d) = norm.forward(&d).unwrap();
    assert!(yd.bit_eq(&y) && stats_d.xhat.bit_eq(&stats.xhat) && stats_d.rstd.bit_eq(&stats.rstd), "LayerNorm");
    let host_norm = LayerNorm::new(300);
    let dx = host_norm.backward_input(&stats, &g).unwrap();
    assert!(norm.backward_input(&stats_d, &g.to_device(dev).unwrap()).unwrap().bit_eq(&dx), "LayerNorm backward");
    let wg = host_norm.weight_grads(&stats.xhat, &g).unwrap();
    let wd = norm.weight_grads(&stats_d.xhat, &g.to_device(dev).unwrap()).unwrap();
    assert!(wd[0].bit_eq(&wg[0]) && wd[1].bit_eq(&wg[1]), "LayerNorm weight gradients");
    let target = Tensor::from_fn(37, 1, |r, _| (r % 300) as f32);
    for (kind, t) in [(LossKind::CrossEntropy, target), (LossKind::Mse, probe(37, 300, 3))] {
        let (lh, sh) = kind.forward(&x, &t).unwrap();
        let (ld, sd) = kind.forward(&d, &t).unwrap();
        // The row sums of the loss value go through libm's and CUDA's logarithm; the
        // gradient does not.
        assert!((lh - ld).abs() <= 1e-6 * lh.abs().max(1.0), "{kind:?} loss {lh} vs {ld}");
        let (gh, gd) = (LossKind::backward(sh, 4).unwrap(), LossKind::backward(sd, 4).unwrap());
        assert!(gd.bit_eq(&gh), "{kind:?} gradient");
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn matrix_products_match_the_cpu() {
    let (dev, _gpu) = gpu("matrix_products_match_the_cpu");
    for (m, k, n) in [(32, 256, 1024), (37, 53, 29), (1, 7, 1)] {
        let (a, b) = (probe(m, k, 4), probe(k, n, 5));
        let want = a.matmul(&b).unwrap();
        let got = a.to_device(dev).unwrap().matmul(&b.to_device(dev).unwrap()).unwrap();
        let diff = got.max_abs_diff(&want).unwrap();
        let scale = want.data().iter().fold(0.0f32, |s, v| s.max(v.abs()));
        assert!(diff <= 1e-5 * scale, "[{m},{k}]·[{k},{n}]: max diff {diff}, scale {scale}");
    }
}

/// Pipelined steps of `spec` on the GPU under every schedule and `policies`: bitwise against the
/// sequential step on the same GPU, and within `bound` (relative) of the CPU's gradients.
fn gradients_match(spec: &ModelSpec, policies: &[&str], bound: f32) {
    let p = 2;
    for kind in Kind::ALL {
        for policy in policies {
            let m = if kind == Kind::Interleaved { 4 } else { 5 };
            let mut model = model_on(spec.clone(), p * kind.default_chunks(), policy, Device::Cuda(0));
            let s = schedule(kind, p, m, &model);
            let before = model.params();
            let step = model.run_step(&s, 0, &exec()).unwrap();
            let v = model.verify(&before, 0, m, step.loss).unwrap();
            let rel = v.cpu_rel_diff.expect("stages are on a GPU");
            let name = format!("{} {} {kind} {policy}", spec.name, spec.precision);
            eprintln!("{name}: same-GPU reference bitwise={}, vs the CPU {rel:.2e}", v.bitwise);
            assert!(v.bitwise, "{name}: must match the sequential step on the same GPU: {v:?}");
            assert!(rel <= bound, "{name}: {rel}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gradients_on_the_gpu_match_the_cpu_for_every_schedule() {
    let _gpu = gpu("gradients_on_the_gpu_match_the_cpu_for_every_schedule");
    // f32: the bound to meet. bf16: products rounded to 8 significant bits and accumulated in
    // another order by cuBLAS than by the CPU, so single products can differ by an ulp of bf16.
    for (precision, bound) in [(Precision::F32, 1e-4), (Precision::Bf16, 5e-2)] {
        gradients_match(&ModelSpec { precision, ..deep_tiny() }, &["none", "full"], bound);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpt_gradients_on_the_gpu_match_the_cpu_for_every_schedule() {
    let _gpu = gpu("gpt_gradients_on_the_gpu_match_the_cpu_for_every_schedule");
    gradients_match(&ModelSpec::gpt_tiny(), &["none", "selective", "full"], 1e-4);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpt_kernels_give_the_cpu_bits() {
    let (dev, _gpu) = gpu("gpt_kernels_give_the_cpu_bits");
    let (seq, heads, rows) = (16, 4, 64);
    let scores = probe(rows, heads * seq, 7);
    let (mut p, mut pd) = (scores.clone(), scores.to_device(dev).unwrap());
    causal_softmax(&mut p, seq, 0.25).unwrap();
    causal_softmax(&mut pd, seq, 0.25).unwrap();
    assert!(pd.bit_eq(&p), "causal softmax");
    let g = probe(rows, heads * seq, 8);
    let (mut gh, mut gd) = (g.clone(), g.to_device(dev).unwrap());
    causal_softmax_backward(&p, &mut gh, seq, 0.25).unwrap();
    causal_softmax_backward(&pd, &mut gd, seq, 0.25).unwrap();
    assert!(gd.bit_eq(&gh), "causal softmax backward");
    let stream = pipesched_stages::rng::Stream::new(&[9, 1]);
    causal_dropout(&mut p, &stream, 0.2, seq).unwrap();
    causal_dropout(&mut pd, &stream, 0.2, seq).unwrap();
    assert!(pd.bit_eq(&p), "causal dropout");
    let (tokens, positions) = (probe(256, 32, 10), probe(seq, 32, 11));
    let ids = Tensor::from_fn(rows, 1, |r, _| ((r * 37) % 256) as f32);
    let on = |t: &Tensor| t.to_device(dev).unwrap();
    let y = embedding(&ids, &tokens, &positions).unwrap();
    assert!(embedding(&on(&ids), &on(&tokens), &on(&positions)).unwrap().bit_eq(&y), "embedding");
    let dy = probe(rows, 32, 12);
    let want = embedding_grads(&ids, &dy, &tokens, &positions).unwrap();
    let got = embedding_grads(&on(&ids), &on(&dy), &on(&tokens), &on(&positions)).unwrap();
    assert!(got[0].bit_eq(&want[0]) && got[1].bit_eq(&want[1]), "embedding gradients");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn the_ledger_matches_the_drivers_free_memory() {
    let (dev, _gpu) = gpu("the_ledger_matches_the_drivers_free_memory");
    // Open the GPU (context, kernels) and make one stream and cuBLAS handle before measuring.
    let _lane = cuda::Lane::new(0).unwrap();
    let before = cuda::used_bytes(0).unwrap();
    let model = model_on(ModelSpec::small(), 2, "none", dev);
    let after = cuda::used_bytes(0).unwrap();
    let ledger: u64 = model.stages.iter().map(pipesched::exec::StageWork::static_bytes).sum();
    let driver = after.saturating_sub(before);
    eprintln!(
        "static bytes of 2 stages: ledger {ledger}, driver {driver} (difference {})",
        driver as i64 - ledger as i64
    );
    // The driver counts in 2 MiB pages and adds each stage's stream and cuBLAS workspace (up to
    // 32 MiB per handle on recent GPUs).
    assert!(driver >= ledger, "the driver must see at least what the ledger counts");
    assert!(driver <= ledger + ledger / 4 + (128 << 20), "driver {driver} vs ledger {ledger}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn measured_on_the_gpu_vs_simulated() {
    let (dev, _gpu) = gpu("measured_on_the_gpu_vs_simulated");
    for kind in [Kind::OneFOneB, Kind::ZbH1] {
        let mut model = model_on(ModelSpec::small(), 2, "none", dev);
        let s = schedule(kind, 2, 8, &model);
        for step in 0..3 {
            model.run_step(&s, step, &exec()).unwrap();
            model.optimizer_step(&Transport::InProcess).unwrap();
        }
        let measured = model.run_step(&s, 3, &exec()).unwrap().trace;
        let costs = pipesched::workload::profile_model(&s, &mut model, 7, &Transport::InProcess).unwrap();
        let simulated = pipesched_schedules::simulate(&s, &costs).unwrap();
        let (a, b) = (Stats::of(&measured), Stats::of(&simulated));
        eprintln!(
            "{kind}: measured {:.3} ms (bubble {:.1} %), simulated {:.3} ms (bubble {:.1} %)",
            a.makespan,
            100.0 * a.bubble_rate,
            b.makespan,
            100.0 * b.bubble_rate
        );
        for (r, rank) in measured.ranks.iter().enumerate() {
            assert_eq!(rank.len(), s.lanes[r].len());
            assert!(rank.spans().all(|sp| sp.end >= sp.start));
        }
        assert!(a.makespan > 0.0 && b.makespan > 0.0);
    }
}
