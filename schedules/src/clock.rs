//! The unit clock: every action takes one tick and messages are free, so a schedule's idle
//! slots show as gaps. It places the actions of [`Schedule::grid`] (the picture in each
//! generator's doc comment) and the cells of the PyTorch CSV export.

use crate::deps::message_slots;
use crate::error::Result;
use crate::grid;
use crate::schedule::Schedule;
use crate::validate::validate;
use crate::walk::{walk, Times};

/// Validates `s` and returns, for every action, the tick it starts at on the unit clock:
/// `ticks[rank][step]`.
pub fn unit_clock(s: &Schedule) -> Result<Vec<Vec<usize>>> {
    validate(s)?;
    let mut ticks: Vec<Vec<usize>> = s.lanes.iter().map(|l| Vec::with_capacity(l.len())).collect();
    // Validated, so the walk finishes; ticks are small integers, exact in f64.
    let free = vec![[0.0; 2]; s.stages()];
    let mut post = Times::new(message_slots(s.stages(), s.m), &free);
    let _ = walk(s, &mut post, |_| 1.0, |ran| ticks[ran.rank].push(ran.start as usize));
    Ok(ticks)
}

impl Schedule {
    /// The schedule as a grid: one row per rank, one column per tick of the unit clock, so idle
    /// slots show as gaps — the picture in each generator's doc comment. A schedule that does
    /// not validate is drawn with its lanes packed.
    pub fn grid(&self) -> String {
        match unit_clock(self) {
            Ok(ticks) => grid::render(&grid::aligned_rows(&self.lanes, &ticks), &[]),
            Err(_) => grid::render_lanes(&self.lanes, &[]),
        }
    }
}
