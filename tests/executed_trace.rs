//! The executor's trace is honest: every action runs once, in lane order, never before its
//! inputs exist; the ledger's peak held bytes equal the simulator's prediction exactly (held
//! bytes are deterministic even where times are not), and messages in flight count on the rank
//! that consumes them.

use std::time::Duration;

use pipesched::exec::{execute, ExecOptions, Transport};
use pipesched::synthetic::{SyntheticSpec, SyntheticStage};
use pipesched_schedules::{simulate, Kind, Stats, Trace};

fn run(kind: Kind, p: usize, m: usize) -> (Trace, Trace) {
    let s = kind.generate(p, kind.default_chunks(), m).unwrap();
    let spec = SyntheticSpec::parse("F=200us,I=200us,W=100us,mem=64KiB,wmem=16KiB,msg=4KiB").unwrap();
    let mut stages: Vec<SyntheticStage> = (0..s.stages()).map(|_| SyntheticStage::new(spec.clone())).collect();
    let measured =
        execute(&s, &mut stages, &ExecOptions { timeout: Duration::from_secs(60), ..Default::default() }).unwrap();
    let simulated = simulate(&s, &spec.cost_model(s.stages())).unwrap();
    (measured, simulated)
}

#[test]
fn every_schedule_runs_in_order_with_the_predicted_peak_bytes() {
    for kind in Kind::ALL {
        for (p, m) in [(1, 2), (2, 4), (3, 6), (4, 8)] {
            let (measured, simulated) = run(kind, p, m);
            let s = kind.generate(p, kind.default_chunks(), m).unwrap();
            for (r, rank) in measured.ranks.iter().enumerate() {
                let ran: Vec<_> = rank.spans().map(|sp| sp.action).collect();
                assert_eq!(ran, s.lanes[r].to_vec(), "{kind} p={p} m={m} rank {r} ran out of order");
                for w in rank.spans().collect::<Vec<_>>().windows(2) {
                    assert!(w[0].end <= w[1].start, "{kind}: overlapping spans on rank {r}");
                }
            }
            for t in &measured.transfers() {
                let from_end = measured.ranks[t.from_rank].spans().find(|sp| sp.action == t.from).unwrap().end;
                let to_start = measured.ranks[t.to_rank].spans().find(|sp| sp.action == t.to).unwrap().start;
                assert!(
                    t.sent >= from_end - 1e-9 && to_start >= t.received - 1e-9 && t.received >= t.sent,
                    "{kind}: {t:?}"
                );
            }
            assert_eq!(
                Stats::of(&measured).peak_held_bytes,
                Stats::of(&simulated).peak_held_bytes,
                "{kind} p={p} m={m}"
            );
            let cross = simulated.transfers().len();
            assert_eq!(measured.transfers().len(), cross, "{kind} p={p} m={m}: one transfer per cross-rank edge");
        }
    }
}

#[test]
fn split_backward_schedules_hold_w_bytes_between_i_and_w() {
    let (measured, _) = run(Kind::ZbH1, 2, 4);
    // On rank 1 the first W is deferred by one micro-batch: after 1I0 the rank holds 16 KiB for
    // it until 1W0.
    // ZB-H1: (p − r)·M_act + r·M_w.
    assert_eq!(Stats::of(&measured).peak_held_bytes, vec![2 * 65536, 65536 + 16384]);
}

#[test]
fn the_profiled_cost_model_predicts_the_measured_peak_bytes() {
    use pipesched::profile::{profile, ProfileOptions};
    for kind in Kind::ALL {
        let s = kind.generate(2, kind.default_chunks(), 4).unwrap();
        let spec = SyntheticSpec::parse("F=100us,I=100us,W=50us,mem=48KiB,wmem=8KiB").unwrap();
        let mut stages: Vec<SyntheticStage> = (0..s.stages()).map(|_| SyntheticStage::new(spec.clone())).collect();
        let opts = ProfileOptions { warmup: 1, reps: 3, recompute: vec![false; s.stages()] };
        let costs = profile(&s, &mut stages, &opts, |_, _| Ok(()), &Transport::InProcess).unwrap();
        let measured =
            execute(&s, &mut stages, &ExecOptions { timeout: Duration::from_secs(60), ..Default::default() }).unwrap();
        let predicted = simulate(&s, &costs).unwrap();
        assert_eq!(Stats::of(&measured).peak_held_bytes, Stats::of(&predicted).peak_held_bytes, "{kind}");
    }
}

/// A stage whose ops return at once on the host while a pretend device takes `op_ms` for each:
/// what a GPU stream looks like to the executor.
struct Queued {
    op_ms: f64,
    held: u64,
    marks: usize,
}

impl pipesched::exec::DeviceClock for Queued {
    fn start(&mut self) -> Result<(), String> {
        self.marks = 0;
        Ok(())
    }

    fn mark(&mut self) -> Result<usize, String> {
        self.marks += 1;
        Ok(self.marks - 1)
    }

    /// Marks come in pairs around each op: op k runs from `k·op_ms` to `(k + 1)·op_ms`.
    fn read(&mut self) -> Result<Vec<f64>, String> {
        Ok((0..self.marks).map(|i| (i.div_ceil(2)) as f64 * self.op_ms).collect())
    }
}

impl pipesched::exec::StageWork for Queued {
    type Payload = ();
    type Error = String;

    fn forward(&mut self, _: usize, _: Option<()>) -> Result<Option<()>, String> {
        self.held += 100;
        Ok(Some(()))
    }
    fn recompute(&mut self, _: usize) -> Result<(), String> {
        Ok(())
    }
    fn backward_input(&mut self, _: usize, _: Option<()>) -> Result<Option<()>, String> {
        Ok(Some(()))
    }
    fn backward_weight(&mut self, _: usize) -> Result<(), String> {
        self.held -= 100;
        Ok(())
    }
    fn backward(&mut self, mb: usize, g: Option<()>) -> Result<Option<()>, String> {
        let out = self.backward_input(mb, g)?;
        self.backward_weight(mb)?;
        Ok(out)
    }
    fn offload(&mut self, _: usize) -> Result<(), String> {
        Err("no offload here".into())
    }
    fn reload(&mut self, _: usize) -> Result<(), String> {
        Err("no reload here".into())
    }
    fn held_bytes(&self) -> u64 {
        self.held
    }
    fn static_bytes(&self) -> u64 {
        0
    }
    fn payload_bytes(_: &()) -> u64 {
        0
    }
    fn clock(&mut self) -> Option<&mut dyn pipesched::exec::DeviceClock> {
        Some(self)
    }
}

#[test]
fn device_clocks_place_spans_and_memory_at_device_times() {
    let s = Kind::GPipe.generate(1, 1, 3).unwrap();
    let mut stages = vec![Queued { op_ms: 5.0, held: 0, marks: 0 }];
    let t = execute(&s, &mut stages, &ExecOptions::default()).unwrap();
    // Device times are placed at the clock's host start plus device time, then the step's host
    // origin is taken off again: exact up to the last bit of that round trip, so compare in ns.
    let ns = |t: f64| (t * 1e6).round() / 1e6;
    let spans: Vec<_> = t.ranks[0].spans().collect();
    assert_eq!(spans.len(), 6);
    for (k, sp) in spans.iter().enumerate() {
        assert_eq!((ns(sp.start), ns(sp.end)), (5.0 * k as f64, 5.0 * (k + 1) as f64), "span {k}: {sp:?}");
    }
    // F0 F1 F2 B0 B1 B2: bytes rise at each F's start and fall at each B's end, on device time.
    let mem: Vec<(f64, u64)> = t.ranks[0].memory.iter().map(|m| (ns(m.time), m.bytes)).collect();
    assert_eq!(mem, vec![(0.0, 0), (0.0, 100), (5.0, 200), (10.0, 300), (20.0, 200), (25.0, 100), (30.0, 0)]);
    assert_eq!(ns(Stats::of(&t).makespan), 30.0);
}

#[test]
fn device_timed_transfers_never_run_backwards() {
    for kind in [Kind::GPipe, Kind::ZbH1] {
        check_device_timed(kind);
    }
}

fn check_device_timed(kind: Kind) {
    let s = kind.generate(3, 1, 6).unwrap();
    let mut stages: Vec<Queued> = (0..3).map(|_| Queued { op_ms: 2.0, held: 0, marks: 0 }).collect();
    let t = execute(&s, &mut stages, &ExecOptions::default()).unwrap();
    assert_eq!(t.transfers().len(), 2 * 2 * 6);
    for tr in &t.transfers() {
        let end = t.ranks[tr.from_rank].spans().find(|sp| sp.action == tr.from).unwrap().end;
        let start = t.ranks[tr.to_rank].spans().find(|sp| sp.action == tr.to).unwrap().start;
        if tr.from.op == pipesched_schedules::Op::B {
            // A B's gradient leaves when its I part is done, before the B ends.
            assert!(tr.sent <= end && tr.sent <= tr.received && tr.received <= start + 1e-9, "{tr:?}");
        } else {
            assert!(end <= start + 1e-9, "{} ends at {end}, {} starts at {start}", tr.from, tr.to);
            assert!(tr.sent == end && tr.sent <= tr.received && tr.received <= start + 1e-9, "{tr:?}");
        }
    }
    for r in &t.ranks {
        assert!(r.memory.windows(2).all(|w| w[0].time <= w[1].time));
        assert!(
            r.spans().collect::<Vec<_>>().windows(2).all(|w| w[0].end <= w[1].start),
            "a rank runs one action at a time"
        );
    }
}

#[test]
fn messages_in_flight_count_on_their_consumer() {
    // 1F1B, p = 2: rank 0 sends 0F1's activation at t = 2 units, but rank 1 is busy with 1B0
    // (I + W = 2 units) until t = 4: the activation waits on rank 1, on top of micro-batch 0's
    // kept bytes, for two units — far longer than any scheduling jitter.
    let s = Kind::OneFOneB.generate(2, 1, 4).unwrap();
    let spec = SyntheticSpec::parse("F=4ms,I=4ms,W=4ms,mem=64KiB,msg=16KiB").unwrap();
    let mut stages: Vec<SyntheticStage> = (0..2).map(|_| SyntheticStage::new(spec.clone())).collect();
    let measured =
        execute(&s, &mut stages, &ExecOptions { timeout: Duration::from_secs(60), ..Default::default() }).unwrap();
    let simulated = simulate(&s, &spec.cost_model(2)).unwrap();
    for t in [&measured, &simulated] {
        let st = Stats::of(t);
        assert_eq!(st.peak_held_bytes[1], 65536, "{:?}", t.source);
        assert_eq!(st.peak_bytes[1], 65536 + 16384, "{:?}", t.source);
        assert_eq!(t.ranks[1].memory.iter().map(|m| m.in_flight).max(), Some(16384), "{:?}", t.source);
    }
}
