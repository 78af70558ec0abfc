//! The one font of every chart: DejaVu Sans (regular and bold), compiled into the binary and registered with
//! plotters under the family name `sans-serif`, so no system font is ever looked up.
//!
//! Invariant: registration happens at most once per process (a `std::sync::Once`), before any
//! text is measured or drawn; its outcome is remembered so every later chart reports the same.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use plotters::style::{register_font, FontStyle};

/// The family name every text style of the charts uses.
pub const FAMILY: &str = "sans-serif";

static REGISTER: Once = Once::new();
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Registers the embedded font (the first time) and says whether it is available.
pub fn ensure() -> Result<(), String> {
    REGISTER.call_once(|| {
        let ok = register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FAMILY, FontStyle::Bold, dejavu::sans::bold()).is_ok();
        REGISTERED.store(ok, Ordering::Release);
    });
    if REGISTERED.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font could not be loaded".into())
    }
}
