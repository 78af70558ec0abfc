//! Synthetic stages: `F`, `R`, `I`, `W` wait for given durations and keep given byte counts in
//! real buffers. They measure the scheduler itself — workers, links, ledger — at any p, even
//! beyond the core count, since a waiting stage uses no CPU.
//!
//! Spec syntax: `synthetic:F=2ms,I=2ms,W=1ms,R=2ms,mem=1MiB,wmem=256KiB,msg=64KiB` (times in
//! `us`, `ms` or `s`; `R` defaults to `F`; `mem` is kept by `F` per micro-batch, `wmem` kept from
//! `I` until `W`, `msg` the size of each activation or gradient sent). Times and bytes are per
//! rank: a schedule with `v` chunks per rank gives each chunk `1/v` of them ([`SyntheticSpec::split`]).
//! `fail=S/J` or `panic=S/J` makes the forward of micro-batch `J` on stage `S` return an error or
//! panic, in every step: how a failure ends a run, on threads or processes.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use pipesched_schedules::{CostModel, StageCost, StageCosts};

use crate::args::{pairs, ByteSize, Time, TimeUnit};
use crate::exec::StageWork;
use crate::{Error, Result};

/// Durations and byte counts of every synthetic stage.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Forward time.
    pub f: Duration,
    /// Input-gradient time.
    pub i: Duration,
    /// Weight-gradient time.
    pub w: Duration,
    /// Recompute time.
    pub r: Duration,
    /// Bytes `F` keeps per micro-batch.
    pub act_bytes: u64,
    /// Bytes kept from `I` until `W`.
    pub w_bytes: u64,
    /// Bytes of each message between stages.
    pub msg_bytes: u64,
    /// A forward that fails on purpose.
    pub fault: Option<Fault>,
}

/// A forward that fails on purpose: `F` of micro-batch `mb` on stage `stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// An error, or a panic.
    pub panics: bool,
    /// The model stage.
    pub stage: usize,
    /// The micro-batch.
    pub mb: usize,
}

/// `S/J` as (stage, micro-batch).
fn place(key: &str, text: &str) -> Result<(usize, usize)> {
    let parse = |t: &str| t.trim().parse::<usize>().ok();
    match text.split_once('/').map(|(s, j)| (parse(s), parse(j))) {
        Some((Some(s), Some(j))) => Ok((s, j)),
        _ => {
            Err(Error::Usage(format!("synthetic {key}={text}: give a stage and a micro-batch as S/J, e.g. {key}=1/2")))
        }
    }
}

/// A synthetic op's time: a [`Time`] with a unit (the stages wait for real time).
fn duration(key: &str, text: &str) -> Result<Duration> {
    let t: Time = text.parse().map_err(|e| Error::Usage(format!("synthetic {key}: {e}")))?;
    if t.unit.is_none() {
        return Err(Error::Usage(format!(
            "synthetic {key}={text}: give a unit, e.g. {key}=2ms, 500us or 0.1s (synthetic stages wait for real time)"
        )));
    }
    t.duration(TimeUnit::Ms).map_err(|e| Error::Usage(format!("synthetic {key}: {e}")))
}

impl FromStr for SyntheticSpec {
    type Err = Error;

    /// `F=..,I=..,W=..[,R=..][,mem=..][,wmem=..][,msg=..]`, with or without `synthetic:` in front.
    fn from_str(text: &str) -> Result<SyntheticSpec> {
        SyntheticSpec::parse(text)
    }
}

impl SyntheticSpec {
    /// Parses `synthetic:F=..,I=..,W=..[,R=..][,mem=..][,wmem=..][,msg=..]` (the prefix is
    /// optional).
    pub fn parse(text: &str) -> Result<SyntheticSpec> {
        let body = text.strip_prefix("synthetic:").unwrap_or(text);
        let mut spec = SyntheticSpec {
            f: Duration::from_millis(1),
            i: Duration::from_millis(1),
            w: Duration::from_millis(1),
            r: Duration::ZERO,
            act_bytes: 0,
            w_bytes: 0,
            msg_bytes: 0,
            fault: None,
        };
        let keys = [
            ("F", "forward time"),
            ("I", "input-gradient time"),
            ("W", "weight-gradient time"),
            ("R", "recompute time, default F"),
            ("mem", "bytes F keeps per micro-batch"),
            ("wmem", "bytes kept from I until W"),
            ("msg", "bytes of each message"),
            ("fail", "S/J: the forward of micro-batch J on stage S returns an error"),
            ("panic", "S/J: the forward of micro-batch J on stage S panics"),
        ];
        let mut r = None;
        for (k, v) in pairs(body, &keys).map_err(|e| Error::Usage(format!("synthetic: {e}")))? {
            let bytes =
                |v: &str| v.parse::<ByteSize>().map(|b| b.0).map_err(|e| Error::Usage(format!("synthetic {k}: {e}")));
            match k {
                "F" => spec.f = duration(k, v)?,
                "I" => spec.i = duration(k, v)?,
                "W" => spec.w = duration(k, v)?,
                "R" => r = Some(duration(k, v)?),
                "mem" => spec.act_bytes = bytes(v)?,
                "wmem" => spec.w_bytes = bytes(v)?,
                "fail" | "panic" => {
                    let (stage, mb) = place(k, v)?;
                    spec.fault = Some(Fault { panics: k == "panic", stage, mb });
                }
                _ => spec.msg_bytes = bytes(v)?,
            }
        }
        spec.r = r.unwrap_or(spec.f);
        if spec.w_bytes > spec.act_bytes {
            return Err(Error::Usage(format!(
                "synthetic: wmem ({}) cannot exceed mem ({}): W keeps part of what F kept",
                spec.w_bytes, spec.act_bytes
            )));
        }
        Ok(spec)
    }

    /// The spec of one of `v` chunks of a rank: like per-rank costs (DESIGN.md), the given times
    /// and bytes describe a rank's share of the model, which `v` chunks split evenly (bytes
    /// rounded down).
    pub fn split(&self, v: usize) -> SyntheticSpec {
        let v = v.max(1);
        // Divided as floats: any v, however large, gives a (possibly zero) duration.
        let part = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() / v as f64);
        SyntheticSpec {
            f: part(self.f),
            i: part(self.i),
            w: part(self.w),
            r: part(self.r),
            act_bytes: self.act_bytes / v as u64,
            w_bytes: self.w_bytes / v as u64,
            msg_bytes: self.msg_bytes,
            fault: self.fault,
        }
    }

    /// The cost model these stages follow, per model stage, in milliseconds.
    pub fn cost_model(&self, stages: usize) -> CostModel {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let cost = StageCost {
            f: ms(self.f),
            i: ms(self.i),
            w: ms(self.w),
            r: Some(ms(self.r)),
            act_bytes: self.act_bytes,
            recompute_bytes: 0,
            w_bytes: self.w_bytes,
            fwd_msg_bytes: self.msg_bytes,
            bwd_msg_bytes: self.msg_bytes,
        };
        CostModel {
            costs: StageCosts::Stages(vec![cost; stages]),
            latency: 0.0,
            bandwidth: None,
            static_bytes: vec![],
            host_link: None,
            time_unit: "ms".into(),
        }
    }
}

/// Waits until `deadline`: sleeps for most of it, then yields for the last stretch, so the
/// timer's wake-up slack does not lengthen every action.
fn wait_until(deadline: Instant) {
    const SPIN: Duration = Duration::from_micros(200);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::thread::yield_now();
        }
    }
}

/// Where a micro-batch is between its forward and its last backward.
enum Held {
    /// After `F` (and maybe `R`): everything the backward needs.
    Activations(Vec<u8>),
    /// After `I`: what `W` needs.
    ForW(Vec<u8>),
}

impl Held {
    fn len(&self) -> u64 {
        match self {
            Held::Activations(b) | Held::ForW(b) => b.len() as u64,
        }
    }
}

/// One synthetic stage: holds a real buffer per micro-batch in flight.
///
/// Buffers are recycled through a pool (as a caching allocator would), so after the first step
/// no action allocates, faults pages in or returns memory to the system: what the executor
/// measures is scheduling, not `mmap`. The ledger counts held buffers, not the pool.
///
/// Offload copies a micro-batch's activation buffer into a buffer of a second pool, the host's,
/// and hands the device buffer back to the first; reload copies it back. `host_bytes` counts the
/// host buffers holding offloaded micro-batches.
pub struct SyntheticStage {
    spec: SyntheticSpec,
    /// Its model stage (for [`Fault`]s).
    index: usize,
    held: HashMap<usize, Held>,
    /// Free buffers by length.
    pool: HashMap<usize, Vec<Vec<u8>>>,
    /// Offloaded micro-batches' activations, in host buffers.
    offloaded: HashMap<usize, Vec<u8>>,
    /// Free host buffers by length.
    host_pool: HashMap<usize, Vec<Vec<u8>>>,
}

impl SyntheticStage {
    /// A stage following `spec`.
    pub fn new(spec: SyntheticSpec) -> SyntheticStage {
        SyntheticStage {
            spec,
            index: 0,
            held: HashMap::new(),
            pool: HashMap::new(),
            offloaded: HashMap::new(),
            host_pool: HashMap::new(),
        }
    }

    /// This stage as model stage `index` (which a [`Fault`] names).
    pub fn at(self, index: usize) -> SyntheticStage {
        SyntheticStage { index, ..self }
    }

    /// A buffer of exactly `len` bytes, from the pool or freshly allocated with every page touched.
    fn take(&mut self, len: usize) -> Vec<u8> {
        self.pool.get_mut(&len).and_then(Vec::pop).unwrap_or_else(|| vec![1u8; len])
    }

    /// Returns a buffer to the pool.
    fn give(&mut self, buf: Vec<u8>) {
        if !buf.is_empty() {
            self.pool.entry(buf.len()).or_default().push(buf);
        }
    }

    fn give_held(&mut self, held: Option<Held>) {
        if let Some(Held::Activations(b) | Held::ForW(b)) = held {
            self.give(b);
        }
    }

    fn work(&self, d: Duration) {
        wait_until(Instant::now() + d);
    }

    fn message(&mut self) -> Vec<u8> {
        self.take(self.spec.msg_bytes as usize)
    }

    fn missing(&self, mb: usize, op: &str) -> String {
        format!("{op} of micro-batch {mb} without its forward (or after its backward)")
    }
}

impl StageWork for SyntheticStage {
    type Payload = Vec<u8>;
    type Error = String;

    fn forward(&mut self, mb: usize, input: Option<Vec<u8>>) -> std::result::Result<Option<Vec<u8>>, String> {
        if self.held.contains_key(&mb) {
            return Err(format!("forward of micro-batch {mb} twice"));
        }
        if let Some(f) = self.spec.fault.filter(|f| (f.stage, f.mb) == (self.index, mb)) {
            let what = format!("the injected fault of stage {} micro-batch {mb}", f.stage);
            if f.panics {
                panic!("{what}");
            }
            return Err(what);
        }
        if let Some(buf) = input {
            self.give(buf);
        }
        let kept = self.take(self.spec.act_bytes as usize);
        self.held.insert(mb, Held::Activations(kept));
        self.work(self.spec.f);
        Ok(Some(self.message()))
    }

    fn recompute(&mut self, mb: usize) -> std::result::Result<(), String> {
        if !matches!(self.held.get(&mb), Some(Held::Activations(_))) {
            return Err(self.missing(mb, "recompute"));
        }
        self.work(self.spec.r);
        Ok(())
    }

    fn backward_input(&mut self, mb: usize, grad: Option<Vec<u8>>) -> std::result::Result<Option<Vec<u8>>, String> {
        if !matches!(self.held.get(&mb), Some(Held::Activations(_))) {
            return Err(self.missing(mb, "input-gradient backward"));
        }
        if let Some(buf) = grad {
            self.give(buf);
        }
        self.work(self.spec.i);
        // What W still needs: a buffer of exactly w_bytes, so the count is its length.
        let for_w = self.take(self.spec.w_bytes as usize);
        let old = self.held.insert(mb, Held::ForW(for_w));
        self.give_held(old);
        Ok(Some(self.message()))
    }

    fn backward_weight(&mut self, mb: usize) -> std::result::Result<(), String> {
        if !matches!(self.held.get(&mb), Some(Held::ForW(_))) {
            return Err(format!("weight-gradient backward of micro-batch {mb} without its input-gradient backward"));
        }
        let old = self.held.remove(&mb);
        self.give_held(old);
        self.work(self.spec.w);
        Ok(())
    }

    fn backward(&mut self, mb: usize, grad: Option<Vec<u8>>) -> std::result::Result<Option<Vec<u8>>, String> {
        if !matches!(self.held.get(&mb), Some(Held::Activations(_))) {
            return Err(self.missing(mb, "backward"));
        }
        if let Some(buf) = grad {
            self.give(buf);
        }
        let old = self.held.remove(&mb);
        self.give_held(old);
        self.work(self.spec.i + self.spec.w);
        Ok(Some(self.message()))
    }

    fn offload(&mut self, mb: usize) -> std::result::Result<(), String> {
        if self.spec.act_bytes == 0 {
            return Err(format!(
                "offload of micro-batch {mb}: stage {} keeps nothing for its backward (act=0), so there is nothing to move; leave it out of --offload",
                self.index
            ));
        }
        let Some(Held::Activations(buf)) = self.held.remove(&mb) else {
            return Err(self.missing(mb, "offload"));
        };
        let mut host = self.host_pool.get_mut(&buf.len()).and_then(Vec::pop).unwrap_or_else(|| vec![0u8; buf.len()]);
        host.copy_from_slice(&buf);
        self.give(buf);
        self.offloaded.insert(mb, host);
        Ok(())
    }

    fn reload(&mut self, mb: usize) -> std::result::Result<(), String> {
        let Some(host) = self.offloaded.remove(&mb) else {
            return Err(format!("reload of micro-batch {mb}, which is not offloaded"));
        };
        let mut buf = self.take(host.len());
        buf.copy_from_slice(&host);
        self.host_pool.entry(host.len()).or_default().push(host);
        self.held.insert(mb, Held::Activations(buf));
        Ok(())
    }

    fn host_bytes(&self) -> u64 {
        self.offloaded.values().map(|b| b.len() as u64).sum()
    }

    fn held_bytes(&self) -> u64 {
        self.held.values().map(Held::len).sum()
    }

    fn static_bytes(&self) -> u64 {
        0
    }

    fn payload_bytes(payload: &Vec<u8>) -> u64 {
        payload.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s = SyntheticSpec::parse("synthetic:F=2ms,I=1.5ms,W=500us,mem=1MiB,wmem=1KiB").unwrap();
        assert_eq!(s.f, Duration::from_millis(2));
        assert_eq!(s.r, s.f);
        assert_eq!(s.w, Duration::from_micros(500));
        assert_eq!((s.act_bytes, s.w_bytes), (1 << 20, 1024));
        for (bad, needle) in [
            ("F=2", "give a unit"),
            ("F=-2ms", "negative"),
            ("mem=-1MiB", "synthetic mem: `-1MiB` is negative"),
            ("X=1ms", "unknown key"),
            ("F", "KEY=VALUE"),
            ("mem=1KiB,wmem=2KiB", "cannot exceed"),
        ] {
            let e = SyntheticSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
