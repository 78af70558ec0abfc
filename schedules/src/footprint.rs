//! `Footprint`: how much memory a schedule, its validation and its simulation take, estimated
//! from its size alone — before anything is generated — so a request that cannot fit is refused
//! up front instead of ending in an out-of-memory abort. Every count is checked: a size that
//! overflows 64 bits comes back as `None`.
//!
//! The numbers follow the data structures, rounded up: 8 bytes per action in the lanes; for
//! validation one byte per (stage, micro-batch) and a bit per message (counted as two bytes and
//! 8-byte times per message, what the unit clock of a grid or CSV export takes); for a simulation
//! the walk's 8-byte time per message; for a kept trace 16 bytes per action more (start and
//! end); and, when the cost model has bytes, 8 bytes per (stage, micro-batch) held, the ledgers'
//! records (every rank keeps them until the walk ends), the in-flight changes a ledger sorts —
//! one rank's at a time, which with one rank are the whole schedule's — and, for a trace, the
//! memory curves (see the constants below); the stats alone need no curve. V-Half and V-Min build
//! their lanes on a grid of time slots first, and `auto` searches over copies of its lanes; both
//! free that before the lanes are validated.

use crate::action::Action;
use crate::generate::Kind;

/// Bytes per action of the ledgers' records: a 24-byte held sample and a 24-byte message.
const LEDGER: u64 = 48;
/// Bytes per action of the in-flight changes a ledger sorts: two changes per message, each a time
/// and a signed 128-bit size (32 bytes with its alignment).
const CHANGES: u64 = 2 * std::mem::size_of::<(f64, i128)>() as u64;
/// Bytes per action of a memory curve: up to three 24-byte samples (a held change, and a
/// message's arrival and consumption).
const CURVE: u64 = 72;
/// The slot grid V-Half and V-Min are built on, per (stage, micro-batch): three slots of a
/// 24-byte cell and count each, and the 8-byte slot of each of its three passes — rounded up.
const GRID_PER_PAIR: u64 = 128;
/// The slot grid's rows are longer than the work by up to `6p` slots per rank: bytes per
/// (rank, rank), rounded up.
const GRID_PER_RANK_SQUARED: u64 = 256;
/// What each row of the slot grid keeps besides its slots, rounded up.
const GRID_PER_RANK: u64 = 1024;

/// What a simulation keeps, besides the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Simulation {
    /// Its whole trace ([`simulate`](crate::simulate)), or only its stats
    /// ([`simulate_stats`](crate::simulate_stats)).
    pub trace: bool,
    /// The cost model has bytes: memory curves are kept while simulating.
    pub with_bytes: bool,
}

/// The size of a schedule: its actions, stages and micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Actions over all lanes.
    pub actions: u64,
    /// Model stages, `p·v`.
    pub stages: u64,
    /// Micro-batches.
    pub m: u64,
    /// Bytes the generator uses besides the lanes while it builds them, freed before they are
    /// validated (0 for the generators that write their lanes directly, and for a schedule read
    /// from a file).
    pub build: u64,
}

impl Footprint {
    /// The size of `kind`'s schedule for (p, v, m), with `planned` more actions per micro-batch
    /// over all stages (one `R` per recomputing stage, an `O` and an `L` per offloading stage).
    /// `None` if a count overflows.
    pub fn of(kind: Kind, p: usize, v: usize, m: usize, planned: usize) -> Option<Footprint> {
        let stages = (p as u64).checked_mul(v as u64)?;
        let per_pair = kind.actions_per_microbatch() as u64;
        let pairs = stages.checked_mul(m as u64)?;
        let actions = pairs.checked_mul(per_pair)?.checked_add((planned as u64).checked_mul(m as u64)?)?;
        let build = match kind {
            Kind::VHalf | Kind::VMin => {
                let p = p as u64;
                let rows =
                    p.checked_mul(p)?.checked_mul(GRID_PER_RANK_SQUARED)?.checked_add(p.checked_mul(GRID_PER_RANK)?)?;
                pairs.checked_mul(GRID_PER_PAIR)?.checked_add(rows)?
            }
            // The search holds the best lanes, a candidate's and a copy to simulate, and two end
            // times per (stage, micro-batch).
            Kind::Auto => {
                actions.checked_mul(3 * std::mem::size_of::<Action>() as u64)?.checked_add(pairs.checked_mul(16)?)?
            }
            _ => 0,
        };
        Some(Footprint { actions, stages, m: m as u64, build })
    }

    /// (Stage, micro-batch) pairs.
    fn pairs(&self) -> Option<u64> {
        self.stages.checked_mul(self.m)
    }

    /// Bytes of the walk's table: one time per message (two per pair).
    fn walk_bytes(&self) -> Option<u64> {
        self.pairs()?.checked_mul(16)
    }

    /// Bytes to build the schedule, hold it and validate it.
    pub fn schedule_bytes(&self) -> Option<u64> {
        let lanes = self.actions.checked_mul(std::mem::size_of::<Action>() as u64)?;
        let check = self.pairs()?.checked_mul(2)?.checked_add(self.walk_bytes()?)?;
        lanes.checked_add(check.max(self.build))
    }

    /// Bytes to hold the schedule and simulate it, keeping what `sim` says.
    pub fn simulation_bytes(&self, sim: Simulation) -> Option<u64> {
        let spans = if sim.trace { self.actions.checked_mul(16)? } else { 0 };
        let memory = if sim.with_bytes {
            let per_action = LEDGER + CHANGES + if sim.trace { CURVE } else { 0 };
            self.actions.checked_mul(per_action)?.checked_add(self.pairs()?.checked_mul(8)?)?
        } else {
            0
        };
        self.schedule_bytes()?.checked_add(spans)?.checked_add(memory)?.checked_add(self.walk_bytes()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_action() {
        for kind in Kind::ALL {
            for (p, m) in [(1, 2), (2, 4), (4, 8)] {
                let v = kind.default_chunks();
                let s = kind.generate(p, v, m).unwrap();
                let f = Footprint::of(kind, p, v, m, 0).unwrap();
                assert_eq!(f.actions, s.num_actions() as u64, "{kind} p={p} m={m}");
                let r = crate::with_recompute(&s, &vec![true; s.stages()]).unwrap();
                assert_eq!(Footprint::of(kind, p, v, m, s.stages()).unwrap().actions, r.num_actions() as u64);
                let o = crate::with_offload(&r, &crate::Offload::All).unwrap();
                assert_eq!(Footprint::of(kind, p, v, m, 3 * s.stages()).unwrap().actions, o.num_actions() as u64);
            }
        }
    }

    #[test]
    fn the_slot_grid_is_counted_while_it_is_built() {
        let f = Footprint::of(Kind::VHalf, 4, 2, 8, 0).unwrap();
        assert_eq!(f.build, 64 * GRID_PER_PAIR + 16 * GRID_PER_RANK_SQUARED + 4 * GRID_PER_RANK);
        assert_eq!(f.schedule_bytes(), Some(f.actions * 8 + f.build));
        assert_eq!(Footprint::of(Kind::ZbV, 4, 2, 8, 0).unwrap().build, 0);
        // auto's copies of its 96 lanes' actions, and two times per (stage, micro-batch).
        assert_eq!(Footprint::of(Kind::Auto, 4, 1, 8, 0).unwrap().build, 96 * 24 + 32 * 16);
        assert!(Footprint::of(Kind::VMin, 1 << 40, 2, 2, 0).is_none());
    }

    #[test]
    fn the_large_cases_are_counted_not_overflowed() {
        let f = Footprint::of(Kind::ZbH1, 1024, 1, 8192, 0).unwrap();
        assert_eq!(f.actions, 3 * 1024 * 8192);
        // 8 B per action, plus 18 B per (stage, micro-batch) to validate.
        assert_eq!(f.schedule_bytes(), Some(3 * 1024 * 8192 * 8 + 1024 * 8192 * 18));
        assert!(Footprint::of(Kind::OneFOneB, 4, 1, 1 << 60, 0).unwrap().schedule_bytes().is_none());
        assert!(Footprint::of(Kind::OneFOneB, 4, 1, usize::MAX, 0).is_none());
        assert!(Footprint::of(Kind::OneFOneB, usize::MAX, 2, 2, 0).is_none());
    }
}
