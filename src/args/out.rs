//! `--out DIR`: the one folder every command writes its files into (cost files, charts, traces,
//! benchmark results), `results/` unless given — a folder git ignores.
//!
//! Invariant: [`OutArgs::prepare`] runs before any work, so a folder that cannot be written is
//! refused before a step is run or a stage is built.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::{Error, Result};

/// Where output files go.
#[derive(Debug, Clone, Args)]
pub struct OutArgs {
    /// Folder for the files this command writes (created if missing).
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,
}

impl OutArgs {
    /// Creates the folder and checks a file can be written there; call it before any work.
    pub fn prepare(&self) -> Result<&Path> {
        let dir = self.out.as_path();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "cannot create the output folder",
            path: dir.to_path_buf(),
            source,
        })?;
        let probe = dir.join(format!(".pipesched-probe-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|source| Error::Io {
            action: "cannot write into the output folder",
            path: dir.to_path_buf(),
            source,
        })?;
        let _ = std::fs::remove_file(&probe);
        Ok(dir)
    }

    /// The path of `name` in the folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_folder_that_cannot_be_made() {
        let dir = std::env::temp_dir().join(format!("pipesched-out-args-{}", std::process::id()));
        let ok = OutArgs { out: dir.join("a/b") };
        assert_eq!(ok.prepare().unwrap(), dir.join("a/b"));
        assert_eq!(std::fs::read_dir(dir.join("a/b")).unwrap().count(), 0, "the probe is removed");
        std::fs::write(dir.join("file"), b"").unwrap();
        let e = OutArgs { out: dir.join("file/sub") }.prepare().unwrap_err().to_string();
        assert!(e.contains("cannot create the output folder"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
