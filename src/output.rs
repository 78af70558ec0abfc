//! Writing results: files atomically — write a temporary file beside the target, then rename,
//! so an interrupted run never leaves a half-written file under the final name — and reports to
//! standard output, where a reader that has gone (`| head`) is not an error.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary name used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(|source| Error::Io {
        action: "cannot write",
        path: path.to_path_buf(),
        source,
    })?;
    finish_atomic(&tmp, path)
}

/// Renames a finished temporary file onto `path` (removing the temporary on failure).
pub fn finish_atomic(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        Error::Io { action: "cannot write", path: path.to_path_buf(), source }
    })
}

/// Writes `text` to standard output. A closed pipe (the reader has gone, as with `| head`) is
/// not an error: the rest of the report is dropped and the command goes on (its files are still
/// written); any other failure is.
pub fn say(text: std::fmt::Arguments<'_>) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::Io { action: "cannot write to", path: "standard output".into(), source: e })
        }
        _ => Ok(()),
    }
}

/// `println!` through [`say`]: a closed pipe is not an error. Returns `Result<()>`.
#[macro_export]
macro_rules! sayln {
    ($($arg:tt)*) => { $crate::output::say(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Writes `error: {e}` on stderr: how every command reports a failure.
pub fn report_error(e: &impl std::fmt::Display) {
    eprintln!("error: {e}");
}

/// Writes `warning: {w}` on stderr: a risk the command runs anyway.
pub fn warn(w: &impl std::fmt::Display) {
    eprintln!("warning: {w}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_through_a_temporary() {
        let dir = std::env::temp_dir().join(format!("pipesched-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("a.json");
        write_atomic(&target, b"{}").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");
        assert!(!temp_path(&target).exists());
        let e = write_atomic(&dir.join("missing/b.json"), b"x").unwrap_err().to_string();
        assert!(e.contains("cannot write") && e.contains("missing/b.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
