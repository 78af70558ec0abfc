//! `--init-params` and `--save-params`: the parameters file a model starts from (read when the
//! flag is parsed, so every process of a run reads it before anything is built) and the one it
//! is saved to after its last step.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use pipesched_stages::ParamsFile;

/// Where a model's parameters come from.
#[derive(Debug, Clone, Args)]
pub struct InitParamsArgs {
    /// Start from the parameters in FILE (one --save-params wrote: the safetensors layout, a
    /// tensor per parameter named layer{i}.{name}) instead of the seed's draws. Any partition,
    /// pipeline depth or schedule loads it; the seed still keys dropout and data.
    #[arg(long, value_name = "FILE", value_parser = params_file)]
    pub init_params: Option<Arc<ParamsFile>>,
}

/// Where a trained model's parameters go.
#[derive(Debug, Clone, Args)]
pub struct SaveParamsArgs {
    /// After the last step, write the parameters to FILE (safetensors layout; f32, or bf16/f16
    /// under mixed precision) for --init-params. Optimizer state is not saved.
    #[arg(long, value_name = "FILE")]
    pub save_params: Option<PathBuf>,
}

impl SaveParamsArgs {
    /// An error, before any step runs, if the file could not be written where it is asked for:
    /// its directory does not exist, or the path is a directory.
    pub fn check(&self) -> crate::Result<()> {
        let Some(path) = &self.save_params else { return Ok(()) };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if path.is_dir() || path.file_name().is_none() {
            return Err(crate::Error::Usage(format!(
                "--save-params {}: a directory; give a file name in it",
                path.display()
            )));
        }
        if !dir.is_dir() {
            return Err(crate::Error::Usage(format!(
                "--save-params {}: the directory {} does not exist; create it or give another path",
                path.display(),
                dir.display()
            )));
        }
        Ok(())
    }
}

/// `--init-params`: the file read and checked ([`ParamsFile::read`]).
fn params_file(path: &str) -> Result<Arc<ParamsFile>, String> {
    ParamsFile::read(std::path::Path::new(path)).map(Arc::new).map_err(|e| e.to_string())
}
