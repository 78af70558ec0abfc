//! `Ready`: the ranks a walk can run next, taken in sweeps of increasing rank.
//!
//! The order changes no time a walk computes (each is a maximum over the times it depends on),
//! only where in memory the walk goes next. Taken in sweeps, a micro-batch's forward crosses
//! every stage in one sweep and its input gradient moves back one stage per sweep, so the
//! messages one sweep reads and writes lie side by side in the walk's table
//! ([`Message::index`](crate::deps::Message::index)): a walk of a large schedule, which moves to
//! another rank every few actions, then reads a few pages of that table per sweep rather than
//! one per rank. (Measured on 1F1B and ZB-H1 at p = 1024, m = 8192, against the last-in,
//! first-out order of ranks woken before: the walk runs in about 60% of the time.)
//!
//! Cost: a bit per rank and a bit per 64 ranks; taking the next rank reads a few words, and one
//! more per 4096 ranks it skips.

/// A set of ranks, taken from where the last one was taken, wrapping round.
pub(crate) struct Ready {
    /// Bit `r % 64` of word `r / 64`: rank `r` is ready.
    ranks: Vec<u64>,
    /// Bit `w % 64` of word `w / 64`: word `w` of `ranks` is not zero.
    words: Vec<u64>,
    /// The rank the last sweep took last: the next one taken is the first ready from here.
    at: usize,
}

impl Ready {
    /// Ranks `0..n`, all ready.
    pub(crate) fn all(n: usize) -> Ready {
        let mut ready = Ready { ranks: vec![0; n.div_ceil(64)], words: vec![0; n.div_ceil(64 * 64)], at: 0 };
        for r in 0..n {
            ready.insert(r);
        }
        ready
    }

    /// Rank `r` is ready.
    #[inline]
    pub(crate) fn insert(&mut self, r: usize) {
        self.ranks[r / 64] |= 1 << (r % 64);
        self.words[r / 4096] |= 1 << (r / 64 % 64);
    }

    /// Takes the first ready rank at or after the last one taken, else the first one: `None`
    /// when no rank is ready.
    #[inline]
    pub(crate) fn take(&mut self) -> Option<usize> {
        let r = self.first_from(self.at).or_else(|| self.first_from(0))?;
        let word = &mut self.ranks[r / 64];
        *word &= !(1 << (r % 64));
        if *word == 0 {
            self.words[r / 4096] &= !(1 << (r / 64 % 64));
        }
        self.at = r;
        Some(r)
    }

    /// The first ready rank at or after `from`.
    #[inline]
    fn first_from(&self, from: usize) -> Option<usize> {
        let w = from / 64;
        let here = *self.ranks.get(w)? & (!0 << (from % 64));
        if here != 0 {
            return Some(w * 64 + here.trailing_zeros() as usize);
        }
        // The first non-zero word after `w`, found through `words`.
        let after = w + 1;
        let mut s = after / 64;
        let mut bits = *self.words.get(s)? & (!0 << (after % 64));
        while bits == 0 {
            s += 1;
            bits = *self.words.get(s)?;
        }
        let w = s * 64 + bits.trailing_zeros() as usize;
        Some(w * 64 + self.ranks[w].trailing_zeros() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(ready: &mut Ready) -> Vec<usize> {
        std::iter::from_fn(|| ready.take()).collect()
    }

    #[test]
    fn takes_ranks_in_increasing_order() {
        for n in [0, 1, 5, 64, 65, 4096, 4097, 10_000] {
            assert_eq!(drain(&mut Ready::all(n)), (0..n).collect::<Vec<_>>(), "n={n}");
        }
    }

    #[test]
    fn a_rank_behind_the_sweep_waits_for_the_next_one() {
        let mut ready = Ready::all(9000);
        drain(&mut ready);
        for r in [4200, 70, 3] {
            ready.insert(r);
        }
        assert_eq!(ready.take(), Some(3));
        for r in [5000, 10, 1] {
            ready.insert(r);
        }
        assert_eq!(drain(&mut ready), [10, 70, 4200, 5000, 1]);
        assert_eq!(ready.take(), None);
    }
}
