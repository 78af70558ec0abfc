//! Choosing a schedule on the command line: a generator (`--schedule NAME -p P -m M
//! [--chunks V]`) or a PyTorch-compatible CSV file (`--from-csv FILE`).

use std::path::PathBuf;

use clap::Args;

use pipesched::{Error, Result};
use pipesched_schedules::{from_csv, Kind, Schedule};

/// Which schedule to use.
#[derive(Debug, Args)]
pub struct Pick {
    /// Schedule: gpipe, 1f1b, interleaved, zb-h1, zb-h2.
    #[arg(long, short = 's', value_name = "NAME")]
    pub schedule: Option<String>,
    /// Number of ranks (devices).
    #[arg(short = 'p', long = "ranks", value_name = "P")]
    pub p: Option<usize>,
    /// Number of micro-batches.
    #[arg(short = 'm', long = "microbatches", value_name = "M")]
    pub m: Option<usize>,
    /// Model chunks per rank (interleaved only; default 2 there).
    #[arg(long, short = 'v', value_name = "V")]
    pub chunks: Option<usize>,
    /// Read the schedule from a PyTorch-compatible CSV file (one line per rank) instead.
    #[arg(long, value_name = "FILE")]
    pub from_csv: Option<PathBuf>,
}

impl Pick {
    /// Generates or reads the schedule; every path goes through `validate`.
    pub fn schedule(&self) -> Result<Schedule> {
        if let Some(path) = &self.from_csv {
            if self.schedule.is_some() || self.p.is_some() || self.m.is_some() || self.chunks.is_some() {
                return Err(Error::Usage(
                    "--from-csv reads the ranks, stages and micro-batches from the file; drop --schedule, -p, -m and --chunks"
                        .into(),
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                action: "cannot read the CSV schedule",
                path: path.clone(),
                source,
            })?;
            let name = path.file_stem().map_or_else(|| "csv".into(), |s| s.to_string_lossy().into_owned());
            return from_csv(&text, &name).map_err(|e| Error::Usage(format!("{}: {e}", path.display())));
        }
        let Some(name) = &self.schedule else {
            return Err(Error::Usage(format!(
                "no schedule given: pass --schedule NAME with -p P -m M (names: {}), or --from-csv FILE",
                Kind::ALL.map(Kind::name).join(", ")
            )));
        };
        let kind: Kind = name.parse()?;
        let (Some(p), Some(m)) = (self.p, self.m) else {
            return Err(Error::Usage(format!(
                "--schedule {name} needs the number of ranks and micro-batches: add -p P -m M (e.g. -p 4 -m 8)"
            )));
        };
        if p == 0 || m == 0 || self.chunks == Some(0) {
            return Err(Error::Usage(format!(
                "-p (ranks), -m (micro-batches) and --chunks must be at least 1; got p={p}, m={m}{}",
                self.chunks.map_or(String::new(), |v| format!(", chunks={v}"))
            )));
        }
        Ok(kind.generate(p, self.chunks.unwrap_or(kind.default_chunks()), m)?)
    }
}
