//! The benchmark's flags and its plan: which configurations (schedule × recompute policies) it
//! runs, and which it skips before running anything, with the reason.
//!
//! Invariant: every configuration in a [`Plan`]'s `runnable` list has a schedule that exists and
//! stages that can be built for it (as far as can be known without allocating them); a plan
//! with none is an error, reported once.

use clap::Parser;

use pipesched::args::{CostArgs, ModelArgs, OutArgs, ShapeArgs, StepArgs};
use pipesched::workload::Layout;
use pipesched::{Error, Result};
use pipesched_schedules::{Kind, Schedule};
use pipesched_stages::{Policies, RecomputePolicy};

/// Compare pipeline schedules × recompute policies on one model: step time, throughput, bubble
/// (measured and simulated), peak bytes per rank (measured and predicted), recompute share.
#[derive(Debug, Parser)]
#[command(name = "pipesched-bench", version, about, long_about = None, after_long_help = pipesched_stages::MODEL_FILE_HELP)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Schedules to compare: a comma list, or the flag repeated.
    #[arg(short = 's', long = "schedule", value_name = "NAME[,NAME..]", value_delimiter = ',',
          default_values_t = Kind::ALL.to_vec())]
    pub schedules: Vec<Kind>,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Recompute policies to compare, one configuration per flag: `--recompute none --recompute
    /// full`. Each value is `run`'s: one policy for every stage, or a comma list with one per stage.
    #[arg(long, value_name = "POLICY[,POLICY..]", default_values_t = [Policies::all(RecomputePolicy::None), Policies::all(RecomputePolicy::Selective), Policies::all(RecomputePolicy::Full)])]
    pub recompute: Vec<Policies>,
    #[command(flatten)]
    pub steps: StepArgs,
    /// A reduced sweep that finishes in well under a minute (a smoke test): 16 rows per
    /// micro-batch (one sequence for a model of sequences) unless --batch is given, one warm-up
    /// step, two measured steps, three profiling runs.
    #[arg(long, conflicts_with_all = ["steps", "warmup"])]
    pub quick: bool,
    /// No execution: simulate every configuration (costs from --costs/--mem, or the stages'
    /// profile and predicted bytes).
    #[arg(long)]
    pub simulate_only: bool,
    #[command(flatten)]
    pub costs: CostArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

/// One configuration of the sweep.
#[derive(Debug, Clone)]
pub struct Config {
    /// The schedule's kind.
    pub kind: Kind,
    /// Recompute policies (one for all stages or one per stage).
    pub policies: Policies,
    /// The schedule, before recompute is planned in.
    pub base: Schedule,
}

impl Config {
    /// `zb-h1 / full`.
    pub fn label(&self) -> String {
        label(self.kind, &self.policies)
    }

    /// Where its stages sit.
    pub fn layout(&self) -> Layout {
        Layout::from(&self.base)
    }
}

fn label(kind: Kind, policies: &Policies) -> String {
    format!("{kind} / {policies}")
}

/// What the benchmark will run, and what it cannot.
pub struct Plan {
    /// Configurations to run, in table order (schedule, then policy).
    pub runnable: Vec<Config>,
    /// Configurations that cannot exist, each with why.
    pub skipped: Vec<(String, String)>,
}

impl Args {
    /// Applies `--quick` and refuses flags that contradict each other.
    pub fn checked(mut self) -> Result<Args> {
        if self.quick {
            let quick = if self.model.model.seq() > 1 { 1 } else { 16 };
            self.model.batch = Some(self.model.batch.unwrap_or(quick));
            self.steps.steps = 2;
            self.steps.warmup = 1;
        }
        if self.steps.transport.data.dp > 1 {
            return Err(Error::Usage(
                "the benchmark compares schedules on one pipeline; for data-parallel replicas use `mpirun -n P·D pipesched run --transport mpi --dp D`".into(),
            ));
        }
        if self.costs.given() && !self.simulate_only {
            return Err(Error::Usage(
                "--costs, --mem and --bandwidth replace the profiled costs of --simulate-only; add --simulate-only, or drop them"
                    .into(),
            ));
        }
        if self.costs.given() {
            // Refused now rather than after the first configuration ran.
            self.costs.model()?;
        }
        if let Some(k) = self.schedules.iter().find(|k| k.is_forward_only()) {
            return Err(Error::Usage(format!(
                "-s {k} runs forwards only and trains nothing; the benchmark compares training schedules — measure a forward-only pass with `pipesched infer`"
            )));
        }
        if let Some(k) =
            self.schedules.iter().enumerate().find_map(|(i, k)| self.schedules[..i].contains(k).then_some(k))
        {
            return Err(Error::Usage(format!("-s {k} is given twice; name each schedule once")));
        }
        if let Some(p) =
            self.recompute.iter().enumerate().find_map(|(i, p)| self.recompute[..i].contains(p).then_some(p))
        {
            return Err(Error::Usage(format!("--recompute {p} is given twice; name each policy once")));
        }
        Ok(self)
    }

    /// Profiling runs per op (the median is kept).
    pub fn profile_reps(&self) -> usize {
        if self.quick {
            3
        } else {
            7
        }
    }

    /// Decides, before anything runs, which configurations can run: the devices are checked once,
    /// and a configuration whose schedule does not exist for this p, m and v, or whose stages
    /// cannot be built for it, is skipped with the reason. Fails if none can run.
    pub fn plan(&self) -> Result<Plan> {
        self.model.devices.resolve(self.shape.layout.p)?;
        let spec = self.model.spec()?;
        let mut plan = Plan { runnable: Vec::new(), skipped: Vec::new() };
        for &kind in &self.schedules {
            let base = match self.shape.generate(kind) {
                Ok(s) => s,
                Err(e) if e.rules_out_configuration() => {
                    plan.skipped.extend(self.recompute.iter().map(|p| (label(kind, p), e.to_string())));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for policies in &self.recompute {
                match spec.check(&Layout::from(&base), policies) {
                    Ok(()) => plan.runnable.push(Config { kind, policies: policies.clone(), base: base.clone() }),
                    Err(e) if e.rules_out_configuration() => plan.skipped.push((label(kind, policies), e.to_string())),
                    Err(e) => return Err(e),
                }
            }
        }
        if plan.runnable.is_empty() {
            return Err(Error::Config(format!(
                "none of the {} configurations can run with {} at p={}, m={}:\n{}",
                plan.skipped.len(),
                self.model.model,
                self.shape.layout.p,
                self.shape.m,
                grouped(&plan.skipped)
            )));
        }
        Ok(plan)
    }

    /// "synthetic stages" or the model's name, with the devices and precision when not the default.
    pub fn model_label(&self) -> String {
        let mut model =
            if self.model.model.is_synthetic() { "synthetic stages".to_string() } else { self.model.model.to_string() };
        if !self.model.devices.all_cpu() {
            model.push_str(&format!(" on {}", self.model.devices));
        }
        if let Some(p) = self.model.precision {
            model.push_str(&format!(", {p} products"));
        }
        model
    }

    /// What a step's throughput counts: rows of data, or micro-batches for synthetic stages.
    pub fn unit(&self) -> &'static str {
        if self.model.model.is_synthetic() {
            "micro-batches"
        } else {
            "samples"
        }
    }
}

/// Each distinct reason once, after the configurations it applies to.
pub fn grouped(skipped: &[(String, String)]) -> String {
    let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
    for (config, why) in skipped {
        match reasons.iter_mut().find(|(r, _)| *r == why.as_str()) {
            Some((_, configs)) => configs.push(config),
            None => reasons.push((why, vec![config])),
        }
    }
    reasons.iter().map(|(why, configs)| format!("  {}: {why}", configs.join(", "))).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from([&["pipesched-bench"][..], extra].concat()).unwrap()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn skips_what_cannot_exist_and_runs_the_rest() {
        let plan = args(&["--model", "tiny", "-p", "4", "-m", "6", "--recompute", "none", "--recompute", "full"])
            .checked()
            .unwrap()
            .plan()
            .unwrap();
        let labels: Vec<String> = plan.runnable.iter().map(Config::label).collect();
        assert_eq!(
            labels,
            ["gpipe / none", "gpipe / full", "1f1b / none", "1f1b / full", "zb-h1 / none", "zb-h1 / full"]
        );
        let skipped: Vec<&str> = plan.skipped.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            skipped,
            [
                "interleaved / none",
                "interleaved / full",
                "zb-h2 / none",
                "zb-h2 / full",
                "zb-v / none",
                "zb-v / full",
                "looped-bfs / none",
                "looped-bfs / full",
                "interleaved-zb / none",
                "interleaved-zb / full",
                "v-half / none",
                "v-half / full",
                "v-min / none",
                "v-min / full",
                "dualpipev / none",
                "dualpipev / full"
            ]
        );
        assert!(plan.skipped[2].1.contains("m ≥ 2p"), "{}", plan.skipped[2].1);
    }

    #[test]
    fn nothing_to_run_is_one_error() {
        let e = args(&["-p", "50"]).checked().unwrap().plan().err().unwrap().to_string();
        assert!(e.starts_with("none of the 33 configurations can run with gpt-small at p=50, m=8:"), "{e}");
        assert!(e.contains("gpipe / none, gpipe / selective, gpipe / full, 1f1b / none"), "{e}");
        assert_eq!(e.matches("50 stages").count(), 1, "each reason once: {e}");
    }

    #[test]
    fn contradictions_are_refused() {
        assert!(args(&["-s", "1f1b,zb-h1,1f1b"]).checked().err().unwrap().to_string().contains("given twice"));
        assert!(args(&["--recompute", "full", "--recompute", "full"]).checked().is_err());
        assert!(args(&["--costs", "F=1"]).checked().err().unwrap().to_string().contains("--simulate-only"));
        assert!(Args::try_parse_from(["pipesched-bench", "--quick", "--steps", "3"]).is_err());
        let a = args(&["--quick", "--batch", "4"]).checked().unwrap();
        assert_eq!((a.model.batch, a.steps.steps, a.steps.warmup), (Some(4), 2, 1));
    }
}
