//! Prints, for chains made from the built-in presets, the time and peak bytes of the usual
//! checkpointing strategies beside the optimum at the same budgets:
//!
//! ```text
//! cargo run -p pipesched-stages --release --example checkpointing [PRESET ...] [--slots N]
//! ```
//!
//! Times are FLOPs of the matrix products (no measured times): a proxy, so a norm or an
//! embedding costs nothing. Bytes are those of one micro-batch at the preset's batch, `f32`.
//! The default 65,536 slots make the program exact for these presets (every size is a multiple
//! of the slot).

use pipesched_stages::checkpointing::{compare, Chain};
use pipesched_stages::ModelSpec;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut presets = Vec::new();
    let mut slots = 1 << 16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--slots" {
            slots = args.next().ok_or("--slots needs a number")?.parse()?;
        } else {
            presets.push(a);
        }
    }
    if presets.is_empty() {
        presets = ["medium", "gpt-small", "gpt-medium"].map(String::from).to_vec();
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for name in presets {
        let model = ModelSpec::preset(&name)?;
        let chain = Chain::from_model(&model)?;
        let rows = compare(&chain, slots)?;
        let base = rows[0].time;
        println!("\n{name}: {} layers, batch {}, {slots} slots; time in GFLOP", chain.len(), model.batch);
        println!("| strategy | budget (MiB) | slot (B) | time (GFLOP) | time / store all | peak (MiB) | forwards |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in rows {
            let budget = r.budget.map_or("".into(), |b| format!("{:.2}", mib(b)));
            let slot = r.slot_bytes.map_or("".into(), |b| b.to_string());
            println!(
                "| {} | {budget} | {slot} | {:.3} | {:.3} | {:.2} | {} |",
                r.strategy,
                r.time / 1e9,
                r.time / base,
                mib(r.peak_bytes),
                r.forwards
            );
        }
    }
    Ok(())
}
