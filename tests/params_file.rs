//! `run --save-params` and `--init-params`, `infer --init-params` end to end: a model trained at
//! one pipeline depth is saved, loaded at others and gives the same parameters, losses and
//! validation, bit for bit; a damaged, truncated, misshapen, incomplete or foreign file is a
//! clear error.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{pipesched, pipesched_line, report, report_of};
use pipesched_stages::{ParamsFile, Tensor};

/// `run` of gpt-tiny through 1F1B at depth 2, 4 micro-batches a step: the start of most runs here.
const GPT_TINY: &str = "run --model gpt-tiny -s 1f1b -p 2 -m 4";

fn json(args: &[&str]) -> serde_json::Value {
    report_of(&pipesched(args), &format!("{args:?}"))
}

/// The error of `pipesched` with the words of `line` then `extra`, which must fail cleanly.
fn fails(line: &str, extra: &[&str]) -> String {
    let out = pipesched_line(line, extra);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{line} {extra:?} succeeded");
    assert!(err.starts_with("error:") && !err.contains("panicked"), "{line} {extra:?}: {err}");
    err
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pipesched-params-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `run` of gpt-tiny through 1F1B at depth `p`: 4 micro-batches a step, no warm-up, `steps`
/// steps, with `more` flags.
fn train(p: &str, steps: &str, more: &[&str]) -> serde_json::Value {
    let mut args =
        vec!["run", "--model", "gpt-tiny", "-s", "1f1b", "-p", p, "-m", "4", "--warmup", "0", "--steps", steps];
    args.extend(["--no-compare", "--json"]);
    args.extend(more);
    json(&args)
}

fn losses(v: &serde_json::Value) -> Vec<f64> {
    v["losses"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap()).collect()
}

/// The mean loss of `infer` over the 8 held-out micro-batches the validation uses.
fn held_out_loss(p: &str, more: &[&str]) -> f64 {
    let mut args = vec!["infer", "--model", "gpt-tiny", "-p", p, "-m", "8", "--json"];
    args.extend(more);
    json(&args)["mean_loss"].as_f64().unwrap()
}

/// Trained 3 steps at p = 2 and saved: at p = 1 and p = 4 the file gives the held-out loss the
/// training run measured after its last step (the same parameters, bit for bit); training on
/// from it goes the same way at every depth, bit for bit, and matches the sequential reference
/// started from the same loaded values; the files saved after are byte for byte the same.
#[test]
fn a_file_saved_at_one_depth_loads_at_every_other() {
    let dir = temp_dir("depths");
    let f3 = dir.join("f3.safetensors");
    let first = train("2", "3", &["--validate", "3", "--save-params", s(&f3)]);
    let validation = first["validation"][0]["validation"]["loss"].as_f64().unwrap();
    for p in ["1", "4"] {
        assert_eq!(held_out_loss(p, &["--init-params", s(&f3)]), validation, "p = {p}");
    }
    assert_ne!(held_out_loss("1", &[]), validation, "the seed's parameters give another loss");

    let fresh = losses(&train("2", "2", &[]));
    let mut resumed = Vec::new();
    for p in ["1", "2", "4"] {
        let out = dir.join(format!("f5-{p}.safetensors"));
        let v = train(p, "2", &["--init-params", s(&f3), "--save-params", s(&out), "--verify"]);
        assert_eq!(v["bitwise"], true, "p = {p}: the reference starts from the loaded parameters too");
        resumed.push((losses(&v), std::fs::read(&out).unwrap()));
    }
    // Step 0 of a resumed run sees step 0's data with the trained parameters: not the loss of
    // the seed's parameters on the same data.
    assert_ne!(resumed[0].0[0], fresh[0]);
    for (l, bytes) in &resumed[1..] {
        assert_eq!(l, &resumed[0].0);
        assert!(bytes == &resumed[0].1, "the same file, whatever the depth");
    }
    // Without a barrier, on the file as well.
    let nb = dir.join("nb.safetensors");
    let v = train("2", "2", &["--init-params", s(&f3), "--no-barrier", "--verify", "--save-params", s(&nb)]);
    assert_eq!(v["bitwise"], true);
    assert_eq!(losses(&v), resumed[0].0, "the same updates as with a barrier between steps");
    assert!(std::fs::read(&nb).unwrap() == resumed[0].1);
}

/// A file read and written again is the same bytes, and a run from either copy at another
/// depth gives the same losses. (A resumed run is not the run it continues: the file holds no
/// optimizer state, so Adam starts again from zero moments, and the resumed run's steps are
/// numbered from 0, so they see step 0's data and dropout again.)
#[test]
fn saving_and_loading_keeps_every_bit_of_the_parameters() {
    let dir = temp_dir("bits");
    let a = dir.join("a.safetensors");
    let b = dir.join("b.safetensors");
    train("2", "1", &["--save-params", s(&a)]);
    // One step from the file, then saved: loading `a` and saving it again after a step at
    // another depth matches doing the same from a reread copy of `a`.
    let copy = dir.join("copy.safetensors");
    let file = ParamsFile::read(&a).unwrap();
    let named: Vec<(String, &Tensor)> = file.names().map(|n| (n.to_string(), file.get(n).unwrap())).collect();
    ParamsFile::write(&copy, file.model().unwrap(), &named).unwrap();
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&a).unwrap(), "rewritten byte for byte");
    let x = train("4", "1", &["--init-params", s(&a), "--save-params", s(&b)]);
    let y = train("1", "1", &["--init-params", s(&copy)]);
    assert_eq!(losses(&x), losses(&y));
    assert!(std::fs::read(&b).unwrap() != std::fs::read(&a).unwrap(), "a step changed the parameters");
}

/// Under mixed-bf16 the file holds the 16-bit parameters (BF16); they load into a mixed-bf16
/// model at another depth bit for bit (the held-out loss after training, again) and into an f32
/// model, widened.
#[test]
fn mixed_precision_saves_its_16_bit_parameters() {
    let dir = temp_dir("mixed");
    let f = dir.join("bf16.safetensors");
    let mixed = ["--precision", "mixed-bf16"];
    let v = train("2", "2", &["--precision", "mixed-bf16", "--validate", "2", "--save-params", s(&f)]);
    let validation = v["validation"][0]["validation"]["loss"].as_f64().unwrap();
    let file = ParamsFile::read(&f).unwrap();
    assert_eq!(file.len(), 30);
    assert!(file.names().all(|n| file.get(n).unwrap().dtype().size() == 2), "every tensor in 16 bits");
    let bytes = std::fs::read(&f).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["layer6.weight"]["dtype"], "BF16");
    assert_eq!(held_out_loss("4", &[&mixed[..], &["--init-params", s(&f)]].concat()), validation);
    let wide = train("1", "1", &["--init-params", s(&f)]);
    assert!(losses(&wide)[0].is_finite());
}

/// What a file must be, and the errors that say so.
#[test]
fn bad_files_are_clear_errors() {
    let dir = temp_dir("bad");
    let good = dir.join("good.safetensors");
    train("2", "1", &["--save-params", s(&good)]);
    let bytes = std::fs::read(&good).unwrap();
    let run_from = |path: &Path| fails(GPT_TINY, &["--init-params", s(path)]);

    let corrupt = dir.join("corrupt.safetensors");
    let mut c = bytes.clone();
    c[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    std::fs::write(&corrupt, &c).unwrap();
    let e = run_from(&corrupt);
    assert!(
        e.contains(&format!(
            "parameters file {}: its first 8 bytes give a header of {} bytes",
            s(&corrupt),
            1u64 << 60
        )),
        "{e}"
    );
    assert!(e.contains("truncated or not a parameters file; write it again with --save-params"), "{e}");

    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let e = run_from(&truncated);
    assert!(e.contains(&format!("parameters file {}: tensor", s(&truncated))), "{e}");
    assert!(e.contains("outside the") && e.contains("the file is truncated or damaged"), "{e}");

    let file = ParamsFile::read(&good).unwrap();
    let write = |name: &str, tensors: Vec<(String, &Tensor)>| {
        let path = dir.join(name);
        ParamsFile::write(&path, "gpt-tiny", &tensors).unwrap();
        path
    };
    let all = || file.names().map(|n| (n.to_string(), file.get(n).unwrap())).collect::<Vec<_>>();

    let wrong = Tensor::zeros(32, 95);
    let shaped = write(
        "shape.safetensors",
        all().into_iter().map(|(n, t)| if n == "layer1.qkv.weight" { (n, &wrong) } else { (n, t) }).collect(),
    );
    let e = run_from(&shaped);
    assert!(e.contains("layer1.qkv.weight is [32, 95] in the file, but stage 0 (layers 0..3) has it [32, 96]"), "{e}");

    let missing = write("missing.safetensors", all().into_iter().filter(|(n, _)| n != "layer4.fc2.bias").collect());
    let e = run_from(&missing);
    assert!(e.contains("no tensor layer4.fc2.bias ([1, 32]), which stage 1 (layers 3..7) needs"), "{e}");
    assert!(e.contains("29 tensors of model gpt-tiny: give a file written for this model"), "{e}");

    let extra = Tensor::zeros(1, 4);
    let mut more = all();
    more.push(("layer7.weight".into(), &extra));
    more.push(("embed.weight".into(), &extra));
    let e = run_from(&write("extra.safetensors", more));
    assert!(e.contains("it holds layer7.weight, embed.weight, which no stage of gpt-tiny (7 layers) has"), "{e}");

    // A file of another model: the first tensor this one needs and lacks, and that model's name.
    let tiny = dir.join("tiny.safetensors");
    report("run --model tiny -s 1f1b -p 2 -m 4 --steps 1 --no-compare --json", &["--save-params", s(&tiny)]);
    let e = run_from(&tiny);
    assert!(e.contains("no tensor layer0.") && e.contains("of model tiny: give a file written for this model"), "{e}");

    let e = fails("run --model synthetic:F=1ms -s 1f1b -p 2 -m 4", &["--init-params", s(&good)]);
    assert!(e.contains("synthetic stages have no parameters"), "{e}");
    let e = fails(GPT_TINY, &["--save-params", "/nonexistent/dir/p.st"]);
    assert!(e.contains("--save-params /nonexistent/dir/p.st: the directory /nonexistent/dir does not exist"), "{e}");
}

/// LoRA: a file of the model trained without adapters starts their fine-tuning (the frozen base
/// from the file, the adapters from their draws, B = 0: step 0's loss is the one the base gives
/// alone), the sequential reference starting from the same; the file saved after holds the
/// base and the adapters and loads at any depth, and into a model without adapters it is a
/// foreign file.
#[test]
fn lora_fine_tunes_from_a_file_and_saves_its_adapters() {
    let dir = temp_dir("lora");
    let base = dir.join("base.safetensors");
    let tuned = dir.join("tuned.safetensors");
    train("2", "3", &["--save-params", s(&base)]);
    let plain = losses(&train("2", "1", &["--init-params", s(&base)]));
    let lora = train("2", "2", &["--lora", "4", "--init-params", s(&base), "--verify", "--save-params", s(&tuned)]);
    assert_eq!(lora["bitwise"], true, "the reference's frozen base comes from the file too");
    assert_eq!(losses(&lora)[0], plain[0], "B = 0: the adapters change nothing before their first update");
    let file = ParamsFile::read(&tuned).unwrap();
    assert_eq!(file.len(), 30 + 16, "the base and an A and B for each of the 8 adapted maps");
    assert!(file.get("layer1.qkv.lora_a").is_some() && file.get("layer1.qkv.weight").is_some());
    let at = |p: &str| losses(&train(p, "1", &["--lora", "4", "--init-params", s(&tuned)]));
    assert_eq!(at("1"), at("4"));
    assert_ne!(at("1")[0], plain[0], "the adapters were loaded");
    // The file records the adapters' setting, whose scale α/r the tensors do not show.
    let e = fails(GPT_TINY, &["--init-params", s(&tuned)]);
    assert!(
        e.contains(
            "its adapters were trained with LoRA rank 4, alpha 4, targets qkv, out, fc1, fc2 and this run's is none"
        ),
        "{e}"
    );
    let e = fails(GPT_TINY, &["--lora", "4", "--lora-alpha", "8", "--init-params", s(&tuned)]);
    assert!(e.contains("this run's is rank 4, alpha 8, targets qkv, out, fc1, fc2"), "{e}");
    let same = ["--lora", "4", "--lora-alpha", "4", "--lora-targets", "fc2,fc1,out,qkv", "--init-params", s(&tuned)];
    assert_eq!(losses(&train("2", "1", &same)), at("2"), "α = r and the targets in any order are the same adapters");
}
