//! The status board: where every rank is in its lane, and what it waits for — read when a wait
//! times out to explain the hang on the schedule grid.

use std::sync::Mutex;

use pipesched_schedules::{grid, Action, Schedule};

/// What a rank is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Running the action at its step.
    Running,
    /// Waiting for `need`'s output from `from_rank` before it can run the action at its step.
    Waiting {
        /// The action whose output is needed.
        need: Action,
        /// The rank that runs it.
        from_rank: usize,
    },
    /// Finished its lane.
    Done,
    /// Stopped because it failed or another rank did.
    Stopped,
    /// Run by another process, whose own board says where it is.
    Elsewhere,
}

/// One rank's position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Index of the action in the rank's lane.
    pub step: usize,
    /// What it is doing there.
    pub phase: Phase,
}

/// Positions of all ranks, updated by the workers.
pub struct Board {
    ranks: Vec<Mutex<Position>>,
}

impl Board {
    /// Every rank at step 0, running.
    pub fn new(p: usize) -> Board {
        Board { ranks: (0..p).map(|_| Mutex::new(Position { step: 0, phase: Phase::Running })).collect() }
    }

    /// Records rank `r`'s position.
    pub fn set(&self, r: usize, step: usize, phase: Phase) {
        // A poisoned lock only means another worker panicked mid-update; the value is still a
        // plain position, so keep using it.
        let mut pos = self.ranks[r].lock().unwrap_or_else(|e| e.into_inner());
        *pos = Position { step, phase };
    }

    /// A snapshot of every rank's position.
    pub fn snapshot(&self) -> Vec<Position> {
        self.ranks.iter().map(|m| *m.lock().unwrap_or_else(|e| e.into_inner())).collect()
    }

    /// One line per rank (the action it is on, what it waits for and from which rank) and the
    /// schedule grid with each rank's current step marked.
    pub fn report(&self, schedule: &Schedule) -> String {
        let positions = self.snapshot();
        let mut lines = String::new();
        let mut marks = Vec::new();
        for (r, pos) in positions.iter().enumerate() {
            let lane = &schedule.lanes[r];
            let here = lane.get(pos.step).map_or_else(|| "end of lane".to_string(), |a| a.to_string());
            let what = match pos.phase {
                Phase::Running => format!("running {here}"),
                Phase::Waiting { need, from_rank } => {
                    let where_ = match schedule.lanes[from_rank].iter().position(|&a| a == need) {
                        Some(k) if positions[from_rank].phase == Phase::Elsewhere => {
                            format!("its step {k}; rank {from_rank} is another process")
                        }
                        Some(k) => {
                            let other = positions[from_rank].step;
                            if k > other || (k == other && positions[from_rank].phase != Phase::Running) {
                                format!("its step {k}, not reached: rank {from_rank} is at step {other}")
                            } else {
                                format!("its step {k}")
                            }
                        }
                        None => format!("not in rank {from_rank}'s lane: it will never be sent"),
                    };
                    format!("waiting to run {here}: needs {need} from rank {from_rank} ({where_})")
                }
                Phase::Done => "finished its lane".to_string(),
                Phase::Stopped => format!("stopped at {here}"),
                Phase::Elsewhere => "in another process (its own report says where)".to_string(),
            };
            if pos.step < lane.len() && !matches!(pos.phase, Phase::Done | Phase::Elsewhere) {
                marks.push((r, pos.step));
            }
            if pos.phase == Phase::Elsewhere {
                lines.push_str(&format!("  rank {r}: {what}\n"));
            } else {
                lines.push_str(&format!("  rank {r}, step {}: {what}\n", pos.step));
            }
        }
        format!("{lines}{}", grid::render_lanes(&schedule.lanes, &marks))
    }
}
