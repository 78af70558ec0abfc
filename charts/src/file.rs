//! Putting a chart in a file: the format named by the extension (`.svg` or `.png`), and the
//! drawing of any [`Sheet`] into it.
//!
//! Invariant: a chart file appears under its final name complete or not at all. An SVG is drawn
//! into memory and written to a temporary file beside the target; a PNG is encoded into a
//! temporary file; either is then renamed onto the target, and a temporary left by a failure is
//! removed.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::font;
use crate::page::DrawResult;

/// A page that [`write()`] can put in a file: its size, and its drawing on any backend.
pub trait Sheet {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws the page on `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// The file formats charts are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

impl Format {
    /// The format named by `path`'s extension.
    fn of(path: &Path) -> Result<Format> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(Error::Format { path: path.to_path_buf() }),
        }
    }
}

/// Draws `sheet` into `path` (`.svg` or `.png`, by its extension), atomically.
///
/// # Errors
///
/// [`Error::Format`] for another extension, [`Error::Io`] when the file cannot be written,
/// [`Error::Draw`] when the font cannot be loaded or the backend fails.
pub fn write(sheet: &impl Sheet, path: &Path) -> Result<()> {
    let format = Format::of(path)?;
    let failed = |reason: String| Error::Draw { path: path.to_path_buf(), reason };
    font::ensure().map_err(failed)?;
    let size = sheet.size();
    let tmp = temp_path(path, format);
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    match format {
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                sheet.draw(&root).map_err(|e| failed(e.to_string()))?;
                root.present().map_err(|e| failed(e.to_string()))?;
            }
            std::fs::write(&tmp, svg.as_bytes()).map_err(io)?;
        }
        Format::Png => {
            // Creating the file first turns an unwritable directory into a plain I/O error.
            std::fs::File::create(&tmp).map_err(io)?;
            let drawn = {
                let root = BitMapBackend::new(&tmp, size).into_drawing_area();
                sheet.draw(&root).and_then(|()| root.present()).map_err(|e| failed(e.to_string()))
            };
            if let Err(e) = drawn {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
    }
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        io(source)
    })
}

/// The temporary name `path` is drawn under: hidden, with the process id, and ending in the
/// format's extension (the PNG encoder picks its format from it).
fn temp_path(path: &Path, format: Format) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = match format {
        Format::Svg => "svg",
        Format::Png => "png",
    };
    path.with_file_name(format!(".{name}.tmp-{}.{ext}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_extension_in_any_case() {
        assert_eq!(Format::of(Path::new("a.SVG")).unwrap(), Format::Svg);
        assert_eq!(Format::of(Path::new("dir.png/a.png")).unwrap(), Format::Png);
        for name in ["a.jpg", "a", "a.svg.txt", "svg"] {
            assert!(matches!(Format::of(Path::new(name)), Err(Error::Format { .. })), "{name}");
        }
        let tmp = temp_path(Path::new("out/chart.png"), Format::Png);
        assert_eq!(tmp.parent(), Some(Path::new("out")));
        assert!(tmp.file_name().unwrap().to_string_lossy().starts_with(".chart.png.tmp-"));
        assert_eq!(tmp.extension().unwrap(), "png");
    }
}
