//! LoRA: low-rank adapters train, everything else is frozen. The bitwise contract and the byte
//! ledger hold under every schedule and recompute policy; the model states are counted by class
//! (frozen parameters as parameter bytes only); fresh adapters leave the model's output as it
//! was; training moves the adapters and nothing else; bad settings are clear errors.

mod common;

use std::process::Command;

use common::{check_step, deep_tiny, exec, model_of, schedule};
use pipesched::exec::Transport;
use pipesched_schedules::Kind;
use pipesched_stages::{Lora, LoraTarget, ModelSpec, ModelStates, OptimizerSpec, ParamCount, Precision};

fn with_lora(spec: ModelSpec, lora: Lora) -> ModelSpec {
    ModelSpec { lora: Some(lora), ..spec }
}

#[test]
fn lora_keeps_the_contract_and_the_ledger_under_every_schedule() {
    let mut checked = 0;
    let every_map = Lora { rank: 2, alpha: Some(4.0), targets: LoraTarget::ALL.to_vec() };
    for (spec, lora) in [(deep_tiny(), every_map), (ModelSpec::gpt_tiny(), Lora::new(2))] {
        let spec = with_lora(spec, lora);
        for kind in Kind::ALL {
            for policy in ["none", "full", "selective"] {
                let p = 2;
                let m = 2 * p + 1;
                if kind.generate(p, kind.default_chunks(), m).is_err() {
                    continue;
                }
                let mut model = model_of(spec.clone(), p * kind.default_chunks(), policy);
                check_step(&mut model, kind, p, m, &format!("{} {kind} {policy}", spec.name));
                checked += 1;
            }
        }
    }
    // And in mixed precision, the frozen base stored in 16 bits.
    let mixed = ModelSpec { precision: Precision::MixedBf16, ..with_lora(ModelSpec::gpt_tiny(), Lora::new(2)) };
    let mut model = model_of(mixed, 2, "none");
    check_step(&mut model, Kind::OneFOneB, 2, 4, "mixed-bf16 gpt-tiny 1f1b");
    assert!(checked >= 2 * 3 * 9, "{checked}");
}

#[test]
fn lora_keeps_the_contract_and_the_ledger_under_optimal_checkpointing() {
    // The program's time proxy counts the adapters' products, from shapes as from built layers,
    // so both pick the same plan: the ledger's prediction is what the stages hold.
    let target_sets: [&[LoraTarget]; 3] =
        [&[LoraTarget::Qkv], &[LoraTarget::Fc1, LoraTarget::Linear], &LoraTarget::ALL];
    for targets in target_sets {
        for rank in [1, 8] {
            let lora = Lora { rank, alpha: None, targets: targets.to_vec() };
            let spec = with_lora(ModelSpec::gpt_tiny(), lora);
            for kind in [Kind::OneFOneB, Kind::ZbH1] {
                let stages = 2 * kind.default_chunks();
                for budget in common::optimal_budgets(&spec, stages) {
                    let policy = format!("optimal:{budget}B");
                    let mut model = model_of(spec.clone(), stages, &policy);
                    let case = format!("gpt-tiny {targets:?} r={rank} {kind} {policy}");
                    let rows = spec.rows(spec.batch).unwrap();
                    for st in &model.stages {
                        let shapes = model.specs[st.stage().index()].predicted_bytes(&spec, rows);
                        assert_eq!(st.stage().predicted_bytes(rows), shapes, "{case}");
                    }
                    check_step(&mut model, kind, 2, 5, &case);
                }
            }
        }
    }
}

#[test]
fn model_states_count_frozen_parameters_as_parameters_only() {
    // gpt-tiny: width 32, ffn 64, 2 × (attention, block), vocabulary 256, seq 16.
    let spec = ModelSpec::gpt_tiny();
    let (w, f) = (32u64, 64u64);
    let r = 4u64;
    let lora = with_lora(spec.clone(), Lora::new(4));
    // Per (attention, block): qkv r(w + 3w), out r(2w), fc1 r(w + f), fc2 r(f + w).
    let adapters = 2 * r * ((w + 3 * w) + 2 * w + 2 * (w + f));
    let whole = lora.param_counts(&(0..lora.num_layers())).unwrap();
    assert_eq!(whole, ParamCount { trained: adapters, frozen: spec.param_count() as u64 });
    let adam = OptimizerSpec::adam(1e-2);
    for precision in [Precision::F32, Precision::MixedBf16] {
        let model = model_of(ModelSpec { precision, ..lora.clone() }, 2, "none");
        let stored = precision.stored_bytes();
        let mut trained = 0;
        for (st, opt) in model.stages.iter().zip(model.optimizers().unwrap()) {
            let stage = st.stage();
            let count = model.specs[stage.index()].param_counts(&model.spec);
            let n = stage.param_count() as u64;
            let frozen: u64 = stage.frozen().iter().map(|t| t.len() as u64).sum();
            assert_eq!(ParamCount { trained: n, frozen }, count, "{precision}");
            assert_eq!(stage.param_bytes(), stored * (n + frozen), "{precision}");
            assert_eq!(stage.grad_bytes(), stored * n, "{precision}: gradients of the adapters only");
            let master = if precision.is_mixed() { 4 * n } else { 0 };
            assert_eq!(opt.state_bytes(), master + 8 * n, "{precision}: Adam state of the adapters only");
            assert_eq!(
                ModelStates::of(count, &adam, precision).unwrap().total(),
                stage.static_bytes(&adam),
                "{precision}"
            );
            trained += n;
        }
        assert_eq!(trained, adapters);
    }
    // Without adapters: 16 bytes a parameter; with them: 4 a frozen one and 16 an adapter's.
    let full = ModelStates::of(ParamCount::trained(spec.param_count() as u64), &adam, Precision::F32).unwrap();
    let tuned = ModelStates::of(whole, &adam, Precision::F32).unwrap();
    assert_eq!(full.total(), 16 * spec.param_count() as u64);
    assert_eq!(tuned.total(), 4 * spec.param_count() as u64 + 16 * adapters);
}

#[test]
fn fresh_adapters_leave_the_loss_and_training_moves_only_them() {
    let spec = ModelSpec::gpt_tiny();
    let mut plain = model_of(spec.clone(), 2, "none");
    let mut tuned = model_of(with_lora(spec, Lora::new(2)), 2, "none");
    let s = schedule(Kind::OneFOneB, 2, 4, &plain);
    let a = plain.run_step(&s, 0, &exec()).unwrap();
    let b = tuned.run_step(&s, 0, &exec()).unwrap();
    assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "B = 0: the same function, the same bits");
    let frozen_before: Vec<Vec<f32>> =
        tuned.stages.iter().flat_map(|st| st.stage().frozen()).map(|t| t.values().unwrap()).collect();
    tuned.optimizer_step(&Transport::InProcess).unwrap();
    for step in 1..3 {
        tuned.run_step(&s, step, &exec()).unwrap();
        tuned.optimizer_step(&Transport::InProcess).unwrap();
    }
    let frozen_after: Vec<Vec<f32>> =
        tuned.stages.iter().flat_map(|st| st.stage().frozen()).map(|t| t.values().unwrap()).collect();
    assert_eq!(frozen_before.len(), 2 + 2 * (6 + 6) + 2 + 2, "embedding, layers, final norm, head");
    assert!(frozen_before
        .iter()
        .zip(&frozen_after)
        .all(|(x, y)| x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits())));
    // Every B has moved off zero.
    for st in &tuned.stages {
        let stage = st.stage();
        for (name, p) in stage.param_names().iter().zip(stage.params()) {
            if name.ends_with("lora_b") {
                assert!(p.values().unwrap().iter().any(|v| *v != 0.0), "{name} did not train");
            }
        }
    }
}

fn pipesched(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pipesched")).args(args).output().expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (out.status.success(), err)
}

#[test]
fn bad_lora_settings_are_clear_errors() {
    let run = ["run", "--model", "gpt-tiny", "-s", "1f1b", "-p", "2", "-m", "2", "--steps", "1", "--no-compare"];
    let fails = |extra: &[&str], want: &str| {
        let args: Vec<&str> = run.iter().chain(extra).copied().collect();
        let (ok, err) = pipesched(&args);
        assert!(!ok && err.starts_with("error:") && err.contains(want), "{extra:?}: {err}");
    };
    fails(&["--lora", "0"], "rank 0 adapts nothing");
    fails(&["--lora", "64"], "give a rank of at most 32");
    fails(&["--lora", "2", "--lora-targets", "wq"], "one of qkv, out, fc1, fc2, linear");
    fails(&["--lora-alpha", "2"], "--lora");
    fails(&["--lora", "2", "--lora-alpha", "0"], "alpha");
    let (ok, err) = pipesched(&[
        "run",
        "--model",
        "tiny",
        "-s",
        "1f1b",
        "-p",
        "2",
        "-m",
        "2",
        "--lora",
        "2",
        "--lora-targets",
        "qkv",
    ]);
    assert!(!ok && err.contains("match no map of this model"), "{err}");
    let (ok, err) = pipesched(&[
        "run",
        "--model",
        "synthetic:F=1ms,I=1ms,W=1ms",
        "-s",
        "1f1b",
        "-p",
        "2",
        "-m",
        "2",
        "--lora",
        "2",
    ]);
    assert!(!ok && err.contains("synthetic stages have no parameters to adapt"), "{err}");
    // The memory report counts what trains.
    let out = Command::new(env!("CARGO_BIN_EXE_pipesched"))
        .args(["memory", "--model", "gpt-tiny", "-s", "1f1b", "-p", "2", "-m", "4", "--lora", "4", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (w, f) = (32, 64);
    assert_eq!(report["trained_parameter_count"], 2 * 4 * ((w + 3 * w) + 2 * w + 2 * (w + f)));
    assert_eq!(
        report["parameter_count"],
        ModelSpec::gpt_tiny().param_count() as u64 + 2 * 4 * (4 * w + 2 * w + 2 * (w + f))
    );
}

#[test]
fn frozen_layers_keep_only_what_a_trained_part_reads_and_shapes_predict_it() {
    // What built stages keep per micro-batch (their layers' counts, which the ledger test holds
    // to the tensors) equals what the model's shapes predict, for every target set and policy.
    let target_sets: [&[LoraTarget]; 4] = [
        &[LoraTarget::Qkv],
        &[LoraTarget::Out, LoraTarget::Fc2],
        &[LoraTarget::Fc1, LoraTarget::Linear],
        &LoraTarget::ALL,
    ];
    for spec in [ModelSpec::gpt_tiny(), deep_tiny()] {
        for targets in target_sets {
            let lora = Lora { rank: 2, alpha: None, targets: targets.to_vec() };
            let tuned = with_lora(spec.clone(), lora);
            if tuned.validate().is_err() {
                continue; // an MLP has no attention to adapt
            }
            for precision in [Precision::F32, Precision::MixedBf16] {
                let tuned = ModelSpec { precision, ..tuned.clone() };
                for policy in ["none", "full", "every:2", "selective"] {
                    let model = model_of(tuned.clone(), 2, policy);
                    for st in &model.stages {
                        let stage = st.stage();
                        let rows = tuned.rows(tuned.batch).unwrap();
                        let built = stage.predicted_bytes(rows);
                        let shapes = model.specs[stage.index()].predicted_bytes(&tuned, rows);
                        assert_eq!(built, shapes, "{} {targets:?} {precision} {policy}", spec.name);
                    }
                }
            }
        }
    }
    // Adapting qkv only, a GPT's I keeps for W only what qkv's adapter reads: per transformer
    // layer y and dqkv (4 floats a width), where training everything keeps 8 + 4 + 2·ffn/width.
    let gpt = ModelSpec::gpt_tiny();
    let rows = gpt.rows(gpt.batch).unwrap();
    let qkv = with_lora(gpt.clone(), Lora { rank: 2, alpha: None, targets: vec![LoraTarget::Qkv] });
    let specs = gpt.stage_specs(1, &pipesched_stages::Partition::Even, &"none".parse().unwrap()).unwrap();
    let w_bytes = |m: &ModelSpec| specs[0].predicted_bytes(m, rows).w_bytes;
    assert_eq!(w_bytes(&qkv), 2 * (4 * 32) * rows as u64 * 4);
    let everything = (32 + 1) + 2 * (8 * 32 + 4 * 32 + 2 * 64) + 2 * 32 + (32 + 256);
    assert_eq!(w_bytes(&gpt), everything as u64 * rows as u64 * 4);
}

#[test]
fn a_stage_lists_the_products_its_ops_run() {
    // gpt-tiny's one stage: W runs xᵀ·dy for every trained map; with adapters on qkv only, just
    // qkv's four thin products per attention layer (s·x·A, s·dy·Bᵀ, dA, dB), in every precision.
    let gpt = ModelSpec::gpt_tiny();
    let rows = gpt.rows(gpt.batch).unwrap();
    for precision in [Precision::F32, Precision::MixedBf16] {
        let plain = model_of(ModelSpec { precision, ..gpt.clone() }, 1, "none");
        let [_, _, w] = plain.stages[0].stage().products(rows);
        // Per layer qkv, out, fc1, fc2, then the head.
        assert_eq!(w.len(), 2 * 4 + 1, "{precision}");
        let lora = Lora { rank: 2, alpha: None, targets: vec![LoraTarget::Qkv] };
        let tuned = model_of(ModelSpec { precision, ..with_lora(gpt.clone(), lora) }, 1, "none");
        let [f, _, w] = tuned.stages[0].stage().products(rows);
        let shape = |m, k, n, trans_a, trans_b| pipesched_stages::GemmShape { m, k, n, trans_a, trans_b };
        let qkv = [
            shape(rows, 32, 2, false, false),
            shape(rows, 96, 2, false, true),
            shape(32, rows, 2, true, false),
            shape(2, rows, 96, true, false),
        ];
        assert_eq!(w, [qkv, qkv].concat(), "{precision}");
        assert_eq!(
            f.len(),
            plain.stages[0].stage().products(rows)[0].len() + 2 * 2,
            "the adapters' two forward products"
        );
    }
}
