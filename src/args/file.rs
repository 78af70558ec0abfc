//! Reading a file a flag names (`--from-csv`, `--costs-file`) with a size limit, so a huge file
//! or a device that never ends (`/dev/zero`) is refused instead of read until memory runs out.
//!
//! Invariant: at most `max + 1` bytes are ever read, whatever the file claims its size is.

use std::io::Read;
use std::path::Path;

use crate::units;
use crate::{Error, Result};

/// The text of `path`, refused if it holds more than `max` bytes. `action` says what failed when
/// the file cannot be read (`cannot read the CSV schedule`); its last words name the file in the
/// other messages.
pub fn read_text(path: &Path, max: u64, action: &'static str) -> Result<String> {
    let io = |source| Error::Io { action, path: path.to_path_buf(), source };
    let what = action.strip_prefix("cannot read ").unwrap_or("the file");
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(Error::Usage(format!(
            "{}: {what} is larger than {} ({max} bytes), more than this command reads; give a smaller file",
            path.display(),
            units::bytes(max)
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::Usage(format!("{}: {what} is not UTF-8 text (byte {})", path.display(), e.utf8_error().valid_up_to()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_too_long_and_reads_the_rest() {
        let dir = std::env::temp_dir().join(format!("pipesched-read-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.csv");
        std::fs::write(&path, "0F0,0B0\n").unwrap();
        assert_eq!(read_text(&path, 8, "cannot read the CSV schedule").unwrap(), "0F0,0B0\n");
        let e = read_text(&path, 7, "cannot read the CSV schedule").unwrap_err().to_string();
        assert!(e.contains("larger than 7 B"), "{e}");
        if Path::new("/dev/zero").exists() {
            let e = read_text(Path::new("/dev/zero"), 1 << 20, "cannot read the cost model").unwrap_err().to_string();
            assert!(e.contains("larger than 1.00 MiB"), "{e}");
        }
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(read_text(&path, 8, "cannot read the CSV schedule").unwrap_err().to_string().contains("not UTF-8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
