//! Per-layer costs from the profiler: composed for the partition and recompute policies a model
//! was profiled under, they give the stage profile's bytes exactly (and its static bytes), after
//! a round trip through the cost file; composed for another model they are refused; and a cost
//! file of the format before them still reads and simulates.

mod common;

use common::model_of;
use pipesched::cost_file::CostFile;
use pipesched::exec::Transport;
use pipesched::workload::{profile_model_layers, Layout};
use pipesched_schedules::{simulate, Kind, StageCosts};
use pipesched_stages::ModelSpec;

/// Profiles `spec` split in two under `policy`, and its layers; the cost file it makes.
fn profiled(spec: ModelSpec, policy: &str) -> (CostFile, pipesched::model::Model) {
    let mut model = model_of(spec, 2, policy);
    let layout = Layout::looped(2, 1);
    let (costs, layers) = profile_model_layers(layout, &mut model, 1, &Transport::InProcess).unwrap();
    let policies = model.specs.iter().map(|s| s.policy).collect();
    let file = CostFile { model: costs, layout: Some(layout), recompute: Some(policies), layers, grad_bytes: None };
    (CostFile::from_json(&file.to_json()).unwrap(), model)
}

#[test]
fn composed_bytes_equal_the_stage_profiles() {
    for spec in [ModelSpec::tiny(), ModelSpec::gpt_tiny()] {
        for policy in ["none", "full", "every:2", "sqrt", "selective", "full,none"] {
            let (file, model) = profiled(spec.clone(), policy);
            let layers = file.layers.as_ref().expect("a real model's profile has per-layer costs");
            assert_eq!(layers.layers.len(), spec.num_layers());
            assert_eq!(layers.rows, model.batch);
            let composed = file.compose(&spec, &model.specs, Layout::looped(2, 1)).unwrap();
            let (StageCosts::Stages(want), StageCosts::Stages(got)) = (&file.model.costs, &composed.costs) else {
                unreachable!("both are per stage")
            };
            for (s, (w, g)) in want.iter().zip(got).enumerate() {
                let bytes = |c: &pipesched_schedules::StageCost| {
                    (c.act_bytes, c.recompute_bytes, c.w_bytes, c.fwd_msg_bytes, c.bwd_msg_bytes)
                };
                assert_eq!(bytes(g), bytes(w), "{} {policy} stage {s}", spec.name);
                let times = [g.f, g.i, g.w, g.t_r()];
                assert!(times.iter().all(|t| t.is_finite() && *t >= 0.0), "{} {policy} stage {s}: {g:?}", spec.name);
            }
            assert_eq!(composed.static_bytes, file.model.static_bytes, "{} {policy}", spec.name);
        }
    }
}

#[test]
fn another_models_layer_costs_are_refused() {
    let (file, _) = profiled(ModelSpec::tiny(), "none");
    let gpt = ModelSpec::gpt_tiny();
    let specs = gpt.stage_specs(2, &pipesched_stages::Partition::Even, &"none".parse().unwrap()).unwrap();
    let e = file.compose(&gpt, &specs, Layout::looped(2, 1)).unwrap_err().to_string();
    assert!(e.contains("profiled for model \"tiny\"") && e.contains("profile gpt-tiny"), "{e}");
    let deeper = ModelSpec::tiny().with_mlp(|s| s.blocks += 1).unwrap();
    let specs = deeper.stage_specs(2, &pipesched_stages::Partition::Even, &"none".parse().unwrap()).unwrap();
    let e = file.compose(&deeper, &specs, Layout::looped(2, 1)).unwrap_err().to_string();
    assert!(e.contains("layers and"), "{e}");
}

#[test]
fn a_file_of_the_first_format_still_reads_and_simulates() {
    let text = r#"{"stages": [{"f": 0.81, "i": 0.93, "w": 0.62, "r": 0.8, "act_bytes": 139264,
                               "recompute_bytes": 1507328, "w_bytes": 1179648},
                              {"f": 0.8, "i": 0.9, "w": 0.6, "act_bytes": 139264,
                               "recompute_bytes": 1507328, "w_bytes": 1179648}],
                   "latency": 0.004, "static_bytes": [33636352, 33636352], "time_unit": "ms",
                   "layout": {"p": 2, "v": 1, "placement": "loop"}, "recompute": ["full", "full"]}"#;
    let file = CostFile::from_json(text).unwrap();
    assert!(file.layers.is_none());
    let schedule = file.plan(&Kind::OneFOneB.generate(2, 1, 4).unwrap(), None).unwrap();
    assert!(simulate(&schedule, &file.model).is_ok());
    let e = file.compose(&ModelSpec::tiny(), &[], Layout::looped(2, 1)).unwrap_err().to_string();
    assert!(e.contains("no per-layer costs"), "{e}");
    // Through the command line, as `simulate --costs-file` reads it.
    let dir = std::env::temp_dir().join(format!("pipesched-format1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("costs.json");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipesched"))
        .args(["simulate", "-s", "1f1b", "-p", "2", "-m", "4", "--costs-file", path.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schedule"], "1f1b+recompute");
    std::fs::remove_dir_all(&dir).unwrap();
}
