//! One rank's worker: walks its lane in order, waits for inputs on its links, runs each action
//! on the stage it names, hands outputs on, and records spans, transfers and live bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pipesched_schedules::deps::{consumes, produces, Message};
use pipesched_schedules::{Action, GradientSum, Op, Schedule, Span, Transfer, Updates};

use super::board::{Board, Phase};
use super::link::{Envelope, Links, RecvError, Stash, Wait};
use super::work::StageWork;
use crate::error::Error;

/// What a rank recorded during the step. Times are milliseconds since the step's start.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RankRecord {
    /// Actions as they ran.
    pub spans: Vec<Span>,
    /// Bytes held (static + kept by its stages) before the first action.
    pub held_at_start: u64,
    /// Bytes held after each action, index for index with `spans`.
    pub held_after: Vec<u64>,
    /// Bytes each action held only while it ran ([`StageWork::working_bytes`]), index for
    /// index with `spans`.
    #[serde(default)]
    pub working: Vec<u64>,
    /// Bytes held in host memory (what offloads moved there) after each action, index for index
    /// with `spans`; empty if the rank's stages never held any.
    #[serde(default)]
    pub host_after: Vec<u64>,
    /// For each payload this rank consumed: the step that consumed it and its bytes.
    pub inbound: Vec<(usize, u64)>,
    /// Messages this rank received.
    pub received: Vec<Transfer>,
    /// Whether spans and memory samples are on a device's clock (see `DeviceClock`).
    pub device_timed: bool,
    /// With data parallelism: the sums of its stages' gradients over the replicas, in stage
    /// order, on the host clock.
    #[serde(default)]
    pub sums: Vec<GradientSum>,
}

impl RankRecord {
    /// Moves every time `dt` milliseconds later.
    pub fn shift(&mut self, dt: f64) {
        for s in &mut self.spans {
            s.start += dt;
            s.end += dt;
        }
        for t in &mut self.received {
            t.sent += dt;
            t.received += dt;
        }
        for s in &mut self.sums {
            s.start += dt;
            s.end += dt;
        }
    }
}

/// A stage's device clock while its rank runs.
struct ClockState {
    /// Host time (ms since the step's start) at which the clock was started.
    origin: f64,
    /// `(span index, mark before, mark after)` for each of the stage's actions.
    spans: Vec<(usize, usize, usize)>,
}

/// Everything a worker shares with the others.
pub struct Shared<'a, P> {
    /// The schedule being run.
    pub schedule: &'a Schedule,
    /// Cross-rank links.
    pub links: &'a Links<P>,
    /// Where every rank is.
    pub board: &'a Board,
    /// Set by the first rank that fails; the others stop.
    pub abort: &'a AtomicBool,
    /// Time zero of the step.
    pub t0: Instant,
    /// How long one wait may last.
    pub timeout: Duration,
    /// For every stage, whether its backward is split into `I` and `W`.
    pub splits: Vec<bool>,
    /// Where stages update their weights during the run.
    pub updates: Option<&'a Updates>,
}

/// How often a waiting worker checks whether another rank failed.
const ABORT_POLL: Duration = Duration::from_millis(20);

impl<P> Shared<'_, P> {
    fn ms(&self, t: Instant) -> f64 {
        t.duration_since(self.t0).as_secs_f64() * 1e3
    }
}

/// One rank's state while it runs.
pub struct Worker<'a, 's, S: StageWork> {
    rank: usize,
    shared: &'a Shared<'a, S::Payload>,
    /// The stages this rank holds, by model stage index.
    stages: HashMap<usize, &'s mut S>,
    /// Outputs handed to a stage on this same rank, not yet consumed.
    local: HashMap<Message, S::Payload>,
    stash: Stash<S::Payload>,
    record: RankRecord,
    /// Device clocks, by stage.
    clocks: HashMap<usize, ClockState>,
}

impl<'a, 's, S: StageWork> Worker<'a, 's, S> {
    /// A worker for `rank` owning `stages`.
    pub fn new(rank: usize, shared: &'a Shared<'a, S::Payload>, stages: Vec<(usize, &'s mut S)>) -> Self {
        let stages: HashMap<usize, &'s mut S> = stages.into_iter().collect();
        let live = stages.values().map(|s| s.static_bytes() + s.held_bytes()).sum();
        Worker {
            rank,
            shared,
            stages,
            local: HashMap::new(),
            stash: Stash::default(),
            record: RankRecord {
                spans: Vec::new(),
                held_at_start: live,
                held_after: Vec::new(),
                working: Vec::new(),
                host_after: Vec::new(),
                inbound: Vec::new(),
                received: Vec::new(),
                device_timed: false,
                sums: Vec::new(),
            },
            clocks: HashMap::new(),
        }
    }

    fn clock_error(&self, step: usize, stage: usize, message: String) -> Error {
        Error::Stage { rank: self.rank, step, action: format!("the device clock of stage {stage}"), message }
    }

    /// Starts the device clock of every stage that has one.
    fn start_clocks(&mut self) -> Result<(), Error> {
        let mut started = Vec::new();
        let mut failed = None;
        for (&s, stage) in self.stages.iter_mut() {
            if let Some(c) = stage.clock() {
                match c.start() {
                    Ok(()) => started.push(s),
                    Err(e) => failed = Some((s, e)),
                }
            }
        }
        if let Some((s, e)) = failed {
            return Err(self.clock_error(0, s, e));
        }
        for s in started {
            let origin = self.shared.ms(Instant::now());
            self.clocks.insert(s, ClockState { origin, spans: Vec::new() });
        }
        Ok(())
    }

    /// Places the spans of clocked stages at their device times.
    fn apply_device_times(&mut self) -> Result<(), Error> {
        let step = self.record.spans.len();
        for (&s, state) in &self.clocks {
            let Some(clock) = self.stages.get_mut(&s).and_then(|st| st.clock()) else { continue };
            let times = clock.read().map_err(|e| self.clock_error(step, s, e))?;
            for &(span, before, after) in &state.spans {
                let (Some(a), Some(b)) = (times.get(before), times.get(after)) else {
                    return Err(self.clock_error(step, s, format!("mark {after} was never recorded")));
                };
                self.record.spans[span].start = state.origin + a;
                self.record.spans[span].end = state.origin + b;
            }
        }
        // Stages of one rank have a stream each, so their GPU spans may overlap; a rank's
        // timeline runs its actions in lane order, so a span that starts before the previous one
        // ends is moved (not stretched) to start there.
        super::sequential(&mut self.record.spans);
        self.record.device_timed = true;
        Ok(())
    }

    /// Runs the lane to its end, or to the first error.
    pub fn run(mut self) -> Result<RankRecord, Error> {
        let lane = &self.shared.schedule.lanes[self.rank];
        self.start_clocks()?;
        for (step, &a) in lane.iter().enumerate() {
            if self.shared.abort.load(Ordering::Relaxed) {
                self.shared.board.set(self.rank, step, Phase::Stopped);
                return Err(Error::Aborted);
            }
            self.shared.board.set(self.rank, step, Phase::Running);
            self.run_action(step, a)?;
        }
        if !self.clocks.is_empty() {
            self.apply_device_times()?;
        }
        self.finish_sums(lane.len())?;
        self.shared.board.set(self.rank, lane.len(), Phase::Done);
        Ok(self.record)
    }

    /// Waits for the sums over replicas its stages started, in stage order, and records them.
    fn finish_sums(&mut self, steps: usize) -> Result<(), Error> {
        let mut held: Vec<usize> = self.stages.keys().copied().collect();
        held.sort_unstable();
        for s in held {
            let Some(stage) = self.stages.get_mut(&s) else { continue };
            let ran = match stage.finish_sum() {
                Ok(ran) => ran,
                // Another rank failed first: its report is the error, not this wait.
                Err(_) if self.shared.abort.load(Ordering::Relaxed) => {
                    self.shared.board.set(self.rank, steps, Phase::Stopped);
                    return Err(Error::Aborted);
                }
                Err(e) => {
                    return Err(Error::Stage {
                        rank: self.rank,
                        step: steps,
                        action: format!("the sum of stage {s}'s gradients over the replicas"),
                        message: e.to_string(),
                    })
                }
            };
            if let Some(ran) = ran {
                let (start, end) = (self.shared.ms(ran.start), self.shared.ms(ran.end));
                self.record.sums.push(GradientSum { stage: s, start, end: end.max(start), bytes: ran.bytes });
            }
        }
        Ok(())
    }

    fn run_action(&mut self, step: usize, a: Action) -> Result<(), Error> {
        let (s, mb) = (a.stage(), a.mb());
        let stages = self.shared.schedule.stages();
        let input = match consumes(a, stages) {
            Some(msg) => Some(self.take(step, a, msg)?),
            None => None,
        };
        let rank = self.rank;
        let Some(stage) = self.stages.get_mut(&s) else {
            return Err(Error::Schedule(pipesched_schedules::Error::Invalid {
                reason: format!("rank {rank}, step {step}: {a} names stage {s}, which this rank does not hold"),
                grid: String::new(),
            }));
        };
        let clock_err = |message: String| Error::Stage { rank, step, action: a.to_string(), message };
        let before = stage.clock().map(|c| c.mark()).transpose().map_err(clock_err)?;
        let start = Instant::now();
        let out = match a.op {
            Op::F => stage.forward(mb, input),
            Op::R => stage.recompute(mb).map(|()| None),
            Op::I => stage.backward_input(mb, input),
            Op::W => stage.backward_weight(mb).map(|()| None),
            Op::B => stage.backward(mb, input),
            Op::O => stage.offload(mb).map(|()| None),
            Op::L => stage.reload(mb).map(|()| None),
        };
        let end = Instant::now();
        let out = out.map_err(|e| Error::Stage { rank, step, action: a.to_string(), message: e.to_string() })?;
        let after = stage.clock().map(|c| c.mark()).transpose().map_err(clock_err)?;
        if let (Some(b), Some(e), Some(state)) = (before, after, self.clocks.get_mut(&s)) {
            state.spans.push((self.record.spans.len(), b, e));
        }
        let working = stage.working_bytes();
        let held: u64 = self.stages.values().map(|s| s.static_bytes() + s.held_bytes()).sum();
        let (t_start, t_end) = (self.shared.ms(start), self.shared.ms(end));
        self.record.held_after.push(held);
        self.record.working.push(working);
        let host: u64 = self.stages.values().map(|s| s.host_bytes()).sum();
        if host > 0 || !self.record.host_after.is_empty() {
            // Zeros for the actions before the first offload, so the list stays index for index.
            self.record.host_after.resize(self.record.spans.len(), 0);
            self.record.host_after.push(host);
        }
        self.record.spans.push(Span { action: a, start: t_start, end: t_end });
        match (produces(a, stages), out) {
            (Some(msg), Some(payload)) => self.deliver(step, a, msg, payload, t_end)?,
            (None, _) => {}
            (Some(_), None) => {
                return Err(Error::Stage {
                    rank,
                    step,
                    action: a.to_string(),
                    message: "the stage returned no output for the next stage".into(),
                })
            }
        }
        // The update is the stage's, after its output has left and before the rank's next
        // action: outside both spans.
        if let (true, Some(stage)) = (self.shared.updates.is_some_and(|u| u.after(rank, step)), self.stages.get_mut(&s))
        {
            stage.update().map_err(|e| Error::Stage {
                rank,
                step,
                action: format!("the optimizer update after {a}"),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// The payload of `msg`, which `a` consumes: from this rank's own hand-over, or from the link.
    fn take(&mut self, step: usize, a: Action, msg: Message) -> Result<S::Payload, Error> {
        let sched = self.shared.schedule;
        let from_rank = sched.rank_of(msg.from);
        let need = msg.producer(&self.shared.splits);
        let payload = if from_rank == self.rank {
            self.local.remove(&msg).ok_or_else(|| Error::Stage {
                rank: self.rank,
                step,
                action: a.to_string(),
                message: format!(
                    "needs the output of {need}, which runs on this same rank but has not run before step {step}; \
                     move {need} earlier in rank {}'s lane",
                    self.rank
                ),
            })?
        } else {
            self.receive(step, a, msg, need, from_rank)?
        };
        self.record.inbound.push((step, S::payload_bytes(&payload)));
        Ok(payload)
    }

    /// Waits for `msg` on its link, with the hang diagnostics of the shutdown protocol.
    fn receive(
        &mut self,
        step: usize,
        a: Action,
        msg: Message,
        need: Action,
        from_rank: usize,
    ) -> Result<S::Payload, Error> {
        let sched = self.shared.schedule;
        let link = self.shared.links.rx(&msg).expect("a link exists for every cross-rank edge into this rank");
        self.shared.board.set(self.rank, step, Phase::Waiting { need, from_rank });
        let abort = self.shared.abort;
        let wait = Wait {
            deadline: Instant::now() + self.shared.timeout,
            poll: ABORT_POLL,
            aborted: || abort.load(Ordering::Relaxed),
        };
        let env = match self.stash.recv(link, msg, wait) {
            Ok(env) => env,
            Err(RecvError::Timeout) => {
                return Err(Error::Hang {
                    rank: self.rank,
                    timeout: self.shared.timeout,
                    report: self.shared.board.report(sched),
                })
            }
            Err(RecvError::Aborted) => {
                self.shared.board.set(self.rank, step, Phase::Stopped);
                return Err(Error::Aborted);
            }
            Err(RecvError::Disconnected) => {
                return Err(Error::Stage {
                    rank: self.rank,
                    step,
                    action: a.to_string(),
                    message: format!("the link from rank {from_rank} closed before {need}'s output came"),
                })
            }
            Err(RecvError::Mismatch(why)) => {
                return Err(Error::Stage { rank: self.rank, step, action: a.to_string(), message: why })
            }
        };
        self.shared.board.set(self.rank, step, Phase::Running);
        let received = self.shared.ms(Instant::now());
        self.record.received.push(Transfer {
            from: need,
            to: a,
            from_rank,
            to_rank: self.rank,
            sent: env.sent,
            received,
        });
        Ok(env.payload)
    }

    /// Hands `payload` (the message `msg`, from `a`) on: directly if its consumer is on this
    /// rank, else over the link.
    fn deliver(&mut self, step: usize, a: Action, msg: Message, payload: S::Payload, sent: f64) -> Result<(), Error> {
        if self.shared.schedule.rank_of(msg.to) == self.rank {
            self.local.insert(msg, payload);
            return Ok(());
        }
        self.shared.links.send(Envelope { message: msg, sent, payload }).map_err(|message| Error::Stage {
            rank: self.rank,
            step,
            action: a.to_string(),
            message,
        })
    }
}
