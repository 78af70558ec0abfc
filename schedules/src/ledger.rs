//! `Ledger`: the byte rule of a rank, shared by the simulator (which predicts bytes from a cost
//! model) and the executor (which counts the bytes its stages really hold). One rule, so a
//! predicted and a measured memory curve mean the same thing.
//!
//! The rule:
//! 1. **Held bytes** — static bytes plus what the rank's stages keep for micro-batches in flight —
//!    change only through actions: bytes an action adds count from its start, bytes it frees
//!    from its end (an action that leaves the rank holding more grew at its start; one that leaves
//!    it holding less shrank at its end).
//!    An action may also hold **working bytes** only while it runs — from its start to its end,
//!    on top of the larger of what the rank held before and after it: a backward that
//!    recomputes inside itself (`optimal`) holds what it re-creates only while it runs; a forward-only pass keeps
//!    nothing for a backward: its forward holds its input and the output it computes into only
//!    while it runs ([`Schedule::is_forward_only`](crate::Schedule::is_forward_only)), so a rank
//!    holds at most two activations of its own at a time, the one it consumes and the one it
//!    produces.
//! 2. **Messages in flight** — an activation or gradient that has been sent and not yet consumed —
//!    count on the rank that will consume them (the one whose memory a device transport would
//!    receive them into), from the moment their producer ends until their consumer starts. This
//!    holds for messages between stages of one rank too.
//! 3. At one instant, messages arriving count and messages consumed no longer do before the
//!    rank's held samples at that instant are read (the in-flight count is right-continuous), so
//!    a payload is never counted twice — in flight and inside the stage that consumed it.
//!
//! 4. **Host bytes** — what offload actions moved into host memory — are a second count beside
//!    the device's, changed by the same rule 1 (growth from an action's start, release from its
//!    end): an offload holds both copies while it runs (the host's from its start, the device's
//!    until its end), and so does a reload. They never count in the device curve.
//!
//! Held bytes depend on a rank's own lane order alone, so a predicted held peak equals a measured
//! one to the byte. Messages in flight depend on when other ranks send, so their measured share
//! differs from the predicted one when a message's arrival and a rank's own release race.

use crate::trace::MemSample;

/// One message as the ledger sees it: when its producer ended, when its consumer started, and
/// its size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InFlight {
    /// When the producer ended (the payload was sent).
    pub sent: f64,
    /// When the consumer started (the payload was taken).
    pub consumed: f64,
    /// Bytes of the payload.
    pub bytes: u64,
}

/// One rank's bytes over a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    held: Vec<MemSample>,
    live: u64,
    messages: Vec<InFlight>,
    /// Host bytes over time (rule 4), empty until the first change.
    host: Vec<MemSample>,
    host_live: u64,
}

impl Ledger {
    /// A rank holding `static_bytes` from time 0.
    pub fn new(static_bytes: u64) -> Ledger {
        Ledger::with_capacity(static_bytes, 0, 0)
    }

    /// A rank holding `static_bytes` from time 0, with room for `changes` changes of its held
    /// bytes and `messages` messages, so recording them never reallocates.
    pub fn with_capacity(static_bytes: u64, changes: usize, messages: usize) -> Ledger {
        let mut held = Vec::with_capacity(changes.saturating_add(1));
        held.push(MemSample::new(0.0, static_bytes));
        Ledger { held, live: static_bytes, messages: Vec::with_capacity(messages), host: Vec::new(), host_live: 0 }
    }

    /// Bytes held now (static and kept by stages; messages in flight not included).
    pub fn held(&self) -> u64 {
        self.live
    }

    /// An action ran from `start` to `end` and left the rank holding `after` bytes (rule 1).
    pub fn action(&mut self, start: f64, end: f64, after: u64) {
        if after != self.live {
            let at = if after > self.live { start } else { end };
            self.live = after;
            self.held.push(MemSample::new(at, after));
        }
    }

    /// An action ran from `start` to `end`, holding `working` bytes while it ran, and left the
    /// rank holding `after` bytes (rule 1). `working = 0` is [`action`](Ledger::action).
    pub fn action_holding(&mut self, start: f64, end: f64, working: u64, after: u64) {
        if working == 0 {
            return self.action(start, end, after);
        }
        let during = self.live.max(after).saturating_add(working);
        self.held.push(MemSample::new(start, during));
        self.held.push(MemSample::new(end, after));
        self.live = after;
    }

    /// An action ran from `start` to `end` and left the rank holding `after` bytes in host
    /// memory (rule 4).
    pub fn host(&mut self, start: f64, end: f64, after: u64) {
        if after != self.host_live {
            if self.host.is_empty() {
                self.host.push(MemSample::new(0.0, 0));
            }
            let at = if after > self.host_live { start } else { end };
            self.host_live = after;
            self.host.push(MemSample::new(at, after));
        }
    }

    /// Host bytes held now (rule 4).
    pub fn host_held(&self) -> u64 {
        self.host_live
    }

    /// The host curve (rule 4), taken out of the ledger: empty if the rank never offloaded.
    pub fn take_host(&mut self) -> Vec<MemSample> {
        std::mem::take(&mut self.host)
    }

    /// A message of `bytes` sent at `sent` and taken at `consumed` (rule 2). Zero-byte messages
    /// are ignored; a consumption stamped before its send (clocks of two threads) counts as
    /// taken when sent.
    pub fn message(&mut self, sent: f64, consumed: f64, bytes: u64) {
        if bytes > 0 {
            self.messages.push(InFlight { sent, consumed: consumed.max(sent), bytes });
        }
    }

    /// The rank's memory curve: held bytes plus messages in flight (rule 3), each sample saying
    /// how much of it is in flight.
    pub fn finish(self) -> Vec<MemSample> {
        if self.messages.is_empty() {
            return self.held;
        }
        let mut out = Vec::with_capacity(self.held.len() + 2 * self.messages.len());
        self.merge(|s| out.push(s));
        out
    }

    /// The peaks of [`finish`](Ledger::finish)'s curve — (live bytes, held bytes) — without
    /// keeping the curve.
    pub fn peaks(self) -> (u64, u64) {
        let mut peaks = (0, 0);
        self.merge(|s| peaks = (peaks.0.max(s.bytes), peaks.1.max(s.held())));
        peaks
    }

    /// Hands `emit` the samples of the rank's curve, in order: the one rule behind
    /// [`finish`](Ledger::finish) and [`peaks`](Ledger::peaks).
    fn merge(self, mut emit: impl FnMut(MemSample)) {
        if self.messages.is_empty() {
            self.held.into_iter().for_each(emit);
            return;
        }
        // In-flight changes: +bytes at `sent`, −bytes at `consumed`, summed per instant.
        let mut changes: Vec<(f64, i128)> = Vec::with_capacity(2 * self.messages.len());
        for m in &self.messages {
            changes.push((m.sent, i128::from(m.bytes)));
            changes.push((m.consumed, -i128::from(m.bytes)));
        }
        changes.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut in_flight, mut held) = (0i128, 0u64);
        let (mut c, mut h) = (0, 0);
        while c < changes.len() || h < self.held.len() {
            let next_change = changes.get(c).map_or(f64::INFINITY, |x| x.0);
            let next_held = self.held.get(h).map_or(f64::INFINITY, |x| x.time);
            let t = next_change.min(next_held);
            let before = in_flight;
            while c < changes.len() && changes[c].0 <= t {
                in_flight += changes[c].1;
                c += 1;
            }
            // Never negative: each message's consumption comes at or after its send.
            let flying = u64::try_from(in_flight.max(0)).unwrap_or(u64::MAX);
            if h < self.held.len() && self.held[h].time <= t {
                while h < self.held.len() && self.held[h].time <= t {
                    held = self.held[h].bytes;
                    emit(MemSample { time: t, bytes: held.saturating_add(flying), in_flight: flying });
                    h += 1;
                }
            } else if in_flight != before {
                emit(MemSample { time: t, bytes: held.saturating_add(flying), in_flight: flying });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(l: Ledger) -> Vec<(f64, u64, u64)> {
        l.finish().into_iter().map(|s| (s.time, s.bytes, s.in_flight)).collect()
    }

    #[test]
    fn growth_counts_from_the_start_and_release_from_the_end() {
        let mut l = Ledger::new(100);
        l.action(1.0, 2.0, 150); // F keeps 50
        l.action(2.0, 3.0, 150); // holds the same: no sample
        l.action(3.0, 4.0, 100); // B frees 50
        assert_eq!(curve(l), vec![(0.0, 100, 0), (1.0, 150, 0), (4.0, 100, 0)]);
    }

    #[test]
    fn working_bytes_count_from_the_start_to_the_end_only() {
        let mut l = Ledger::new(100);
        l.action_holding(1.0, 2.0, 30, 100);
        l.action_holding(2.0, 3.0, 0, 100);
        l.action_holding(3.0, 4.0, 20, 150); // keeps 50 and works on 20 more
        l.action_holding(4.0, 5.0, 10, 100); // frees the 50 at its end
        assert_eq!(
            curve(l),
            vec![
                (0.0, 100, 0),
                (1.0, 130, 0),
                (2.0, 100, 0),
                (3.0, 170, 0),
                (4.0, 150, 0),
                (4.0, 160, 0),
                (5.0, 100, 0)
            ]
        );
        let mut m = Ledger::new(7);
        m.action_holding(1.0, 2.0, 5, 7);
        assert_eq!(m.peaks(), (12, 12));
    }

    #[test]
    fn messages_count_on_the_consumer_between_send_and_take() {
        let mut l = Ledger::new(100);
        l.message(0.5, 2.0, 30);
        l.action(2.0, 3.0, 140); // the consumer keeps its 30-byte input and 10 more
        assert_eq!(curve(l), vec![(0.0, 100, 0), (0.5, 130, 30), (2.0, 140, 0)]);
    }

    #[test]
    fn a_message_taken_as_it_arrives_is_never_counted() {
        let mut l = Ledger::new(0);
        l.message(1.0, 1.0, 30);
        l.action(1.0, 2.0, 30);
        assert_eq!(curve(l), vec![(0.0, 0, 0), (1.0, 30, 0)]);
    }

    #[test]
    fn peaks_are_those_of_the_curve() {
        let make = || {
            let mut l = Ledger::new(5);
            l.message(1.0, 4.0, 10);
            l.action(2.0, 3.0, 25);
            l.message(2.0, 3.0, 20);
            l.action(3.0, 5.0, 5);
            l
        };
        let curve = make().finish();
        let peak = curve.iter().map(|s| s.bytes).max().unwrap();
        let held = curve.iter().map(MemSample::held).max().unwrap();
        assert_eq!(make().peaks(), (peak, held));
        assert_eq!((peak, held), (55, 25));
        assert_eq!(Ledger::new(7).peaks(), (7, 7));
    }

    #[test]
    fn host_bytes_are_their_own_curve() {
        let mut l = Ledger::new(100);
        l.action(1.0, 2.0, 150); // F keeps 50
        l.host(2.0, 3.0, 50); // O: the host copy from its start…
        l.action(2.0, 3.0, 100); // …the device's freed at its end
        l.action(4.0, 5.0, 150); // L: back on the device from its start…
        l.host(4.0, 5.0, 0); // …off the host at its end
        assert_eq!(l.take_host(), vec![MemSample::new(0.0, 0), MemSample::new(2.0, 50), MemSample::new(5.0, 0)]);
        assert_eq!(curve(l), vec![(0.0, 100, 0), (1.0, 150, 0), (3.0, 100, 0), (4.0, 150, 0)]);
        assert!(Ledger::new(1).take_host().is_empty());
    }

    #[test]
    fn overlapping_messages_add_up() {
        let mut l = Ledger::new(0);
        l.message(1.0, 4.0, 10);
        l.message(2.0, 3.0, 20);
        l.message(2.0, 5.0, 0);
        assert_eq!(curve(l), vec![(0.0, 0, 0), (1.0, 10, 10), (2.0, 30, 30), (3.0, 10, 10), (4.0, 0, 0)]);
    }
}
