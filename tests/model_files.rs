//! The model files in `models/`: every one loads, round-trips through TOML and JSON, builds,
//! runs a training step, and is estimated byte for byte by its footprint; the presets written
//! out are the presets; the README and the `--help` text document every field and every
//! example; a misspelt field is refused naming the file, the field and the fields there are.

use std::path::{Path, PathBuf};

use pipesched::budget::{self, Available};
use pipesched_schedules::one_f_one_b;
use pipesched_stages::{
    microbatches_in_flight, reference_step, Load, ModelSpec, OptimizerSpec, Partition, Policies, Stage, Task,
    MODEL_FIELDS, MODEL_FILE_EXAMPLE, MODEL_FILE_HELP,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file in `models/`, sorted.
fn model_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(root().join("models")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn load(path: &Path) -> ModelSpec {
    ModelSpec::load(path.to_str().unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn there_are_toml_and_json_examples() {
    let names: Vec<String> =
        model_files().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["deep-bf16.json", "gpt-24.toml", "gpt-small.toml", "small.toml", "tiny.json", "wide.toml"]);
}

#[test]
fn every_model_file_loads_round_trips_builds_and_trains_a_step() {
    let adam = OptimizerSpec::adam(3e-4);
    for path in model_files() {
        let spec = load(&path);
        assert_eq!(ModelSpec::from_toml(&spec.to_toml().unwrap()).unwrap(), spec, "{}", path.display());
        assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec, "{}", path.display());
        let (p, m) = (2, 4);
        let rows = spec.rows(spec.batch).unwrap();
        let specs = spec.stage_specs(p, &Partition::Balanced, &"full,none".parse::<Policies>().unwrap()).unwrap();
        let load =
            Load { batch: rows, microbatches: m, in_flight: microbatches_in_flight(&one_f_one_b(p, m).unwrap()) };
        let footprint = spec.footprint(&specs, &adam, &load).unwrap();
        let stages = Stage::build_all(&spec, &specs).unwrap();
        for (stage, f) in stages.iter().zip(&footprint.stages) {
            assert_eq!(stage.static_bytes(&adam), f.params + f.grads + f.optimizer, "{}", path.display());
            assert_eq!(stage.predicted_bytes(rows), f.per_microbatch, "{}", path.display());
        }
        let estimate = budget::Estimate::of_model(&spec, &load, &footprint);
        budget::check(&estimate, Some(&Available { bytes: 1 << 30, source: "test".into() }))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (out, grads) = reference_step(&spec, &specs, &Task::new(&spec, 0), 0, m, rows).unwrap();
        assert!(out.loss.is_finite() && out.loss > 0.0, "{}: loss {}", path.display(), out.loss);
        assert!(grads.iter().flatten().any(|g| g.values().unwrap().iter().any(|v| *v != 0.0)));
    }
}

#[test]
fn the_presets_written_out_are_the_presets() {
    assert_eq!(load(&root().join("models/small.toml")), ModelSpec::small());
    assert_eq!(load(&root().join("models/tiny.json")), ModelSpec::tiny());
    assert_eq!(load(&root().join("models/gpt-small.toml")), ModelSpec::gpt_small());
}

#[test]
fn the_help_example_is_models_wide_toml() {
    assert!(MODEL_FILE_HELP.contains(MODEL_FILE_EXAMPLE));
    assert_eq!(ModelSpec::from_toml(MODEL_FILE_EXAMPLE).unwrap(), load(&root().join("models/wide.toml")));
}

#[test]
fn the_readme_documents_every_field_and_every_example() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split("### Model files").nth(1).expect("README has a Model files section");
    let section = section.split("\n## ").next().unwrap();
    for (field, required, _) in MODEL_FIELDS {
        let row = format!("| `{field}` | {} |", if required { "yes" } else { "no" });
        assert!(section.contains(&row), "README: no row {row}");
    }
    for path in model_files() {
        let name = format!("`models/{}`", path.file_name().unwrap().to_string_lossy());
        assert!(section.contains(&name), "README does not list {name}");
    }
}

#[test]
fn a_misspelt_field_is_refused_naming_the_file_and_the_fields() {
    let dir = std::env::temp_dir().join(format!("pipesched-model-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wide.toml");
    let text = std::fs::read_to_string(root().join("models/wide.toml")).unwrap().replace("hidden", "hiden");
    std::fs::write(&path, text).unwrap();
    let e = ModelSpec::load(path.to_str().unwrap()).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        e,
        format!(
            "model spec: {}: unknown field `hiden` (did you mean `hidden`?); a model file has the fields `loss`, \
             `batch` (required), `layers` or all of `input`, `hidden`, `ffn`, `blocks`, `output` (the layers), and \
             `name`, `dropout`, `seed`, `precision`, `lora` (optional)",
            path.display()
        )
    );
}
