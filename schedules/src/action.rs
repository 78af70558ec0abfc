//! `Action`: one unit of work in a schedule — `(stage, op, micro-batch)`.
//!
//! The text form is PyTorch pipelining's action string: `[stage][op][micro-batch]`, e.g. `2F0`,
//! `1I3`, `0W5`, `3B1`. `R` (recompute), `O` (offload) and `L` (reload) are pipesched's own.
//! `Display` and `FromStr` round-trip.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What an action does to its (stage, micro-batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Op {
    /// Forward through one stage.
    F,
    /// Full backward: input gradient and weight gradient (`B = I + W`).
    B,
    /// Backward for the input gradient only.
    I,
    /// Backward for the weight gradient only.
    W,
    /// Recompute: re-run the forward of a checkpointed micro-batch before its backward.
    R,
    /// Offload: move what `F` kept for the backward of a micro-batch off the device into host
    /// memory (PipeOffload, Wan et al. 2025).
    O,
    /// Reload: bring an offloaded micro-batch's kept bytes back onto the device before its
    /// recompute or backward.
    L,
}

impl Op {
    /// All ops, in a fixed order (used for legends).
    pub const ALL: [Op; 7] = [Op::F, Op::B, Op::I, Op::W, Op::R, Op::O, Op::L];

    /// The op's letter.
    pub fn letter(self) -> char {
        match self {
            Op::F => 'F',
            Op::B => 'B',
            Op::I => 'I',
            Op::W => 'W',
            Op::R => 'R',
            Op::O => 'O',
            Op::L => 'L',
        }
    }

    /// The op for a letter, if it is one of `F B I W R O L`.
    pub fn from_letter(c: char) -> Option<Op> {
        Some(match c {
            'F' => Op::F,
            'B' => Op::B,
            'I' => Op::I,
            'W' => Op::W,
            'R' => Op::R,
            'O' => Op::O,
            'L' => Op::L,
            _ => return None,
        })
    }

    /// Whether this op produces the input gradient of its stage (`B` or `I`).
    pub fn is_input_backward(self) -> bool {
        matches!(self, Op::B | Op::I)
    }

    /// Whether this op moves kept bytes between the device and host memory (`O` or `L`).
    pub fn is_transfer(self) -> bool {
        matches!(self, Op::O | Op::L)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// The most model stages a schedule can have (`p·v`): stage numbers are 16-bit, so an action
/// takes 8 bytes and a schedule of tens of millions of actions fits in memory.
pub const MAX_STAGES: usize = 1 << 16;

/// The most micro-batches a schedule can have: micro-batch numbers are 32-bit.
pub const MAX_MICROBATCHES: usize = 1 << 32;

/// One unit of work: `op` on model stage `stage` for micro-batch `microbatch`. 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Action {
    /// Model stage (0 … S−1, S = p·v ≤ [`MAX_STAGES`]).
    pub stage: u16,
    /// What is done.
    pub op: Op,
    /// Micro-batch (0 … m−1).
    pub microbatch: u32,
}

impl Action {
    /// `op` on `stage` for `microbatch`.
    ///
    /// # Panics
    ///
    /// If `stage ≥ MAX_STAGES` or `microbatch ≥ MAX_MICROBATCHES`: generators and parsers refuse
    /// such sizes before they build actions.
    pub fn new(stage: usize, op: Op, microbatch: usize) -> Action {
        let (Ok(stage), Ok(microbatch)) = (u16::try_from(stage), u32::try_from(microbatch)) else {
            panic!("action {stage}{op}{microbatch} is out of range: at most {MAX_STAGES} stages and {MAX_MICROBATCHES} micro-batches");
        };
        Action { stage, op, microbatch }
    }

    /// The stage as an index.
    pub fn stage(&self) -> usize {
        self.stage as usize
    }

    /// The micro-batch as an index.
    pub fn mb(&self) -> usize {
        self.microbatch as usize
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Padding (`{:<4}`) applies to the whole string, as grids need.
        f.pad(&format!("{}{}{}", self.stage, self.op, self.microbatch))
    }
}

impl FromStr for Action {
    type Err = Error;

    /// Parses `[stage][op][micro-batch]`, surrounding whitespace allowed.
    fn from_str(s: &str) -> Result<Action> {
        let text = s.trim();
        let bad = |reason: &str| Error::ParseAction { text: s.to_string(), reason: reason.to_string() };
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("it must start with the stage number"));
        }
        let stage: u16 = text[..digits].parse().map_err(|_| bad("the stage number is too large (at most 65535)"))?;
        let rest = &text[digits..];
        let mut chars = rest.chars();
        let letter = chars.next().ok_or_else(|| bad("the op letter is missing"))?;
        let op = Op::from_letter(letter).ok_or_else(|| {
            if rest.starts_with("SEND") || rest.starts_with("RECV") || rest.starts_with("UNSHARD") || rest.starts_with("RESHARD") {
                bad("communication and sharding actions are not compute actions; pipesched derives transfers from the compute actions, export the compute-only format")
            } else {
                bad("the op must be one of F, B, I, W, R, O, L")
            }
        })?;
        let mb_text = chars.as_str();
        if mb_text.is_empty() {
            return Err(bad("the micro-batch number is missing"));
        }
        if !mb_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the micro-batch must be a number"));
        }
        let microbatch: u32 =
            mb_text.parse().map_err(|_| bad("the micro-batch number is too large (at most 4294967295)"))?;
        Ok(Action { stage, op, microbatch })
    }
}

impl Serialize for Action {
    /// Serialises as the action string (`"2F0"`), so JSON schedules and traces read like the CSV.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Action, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_pytorch_strings() {
        for s in ["2F0", "1I3", "0W5", "3B1", "12R104", "1O2", "1L2"] {
            let a: Action = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        assert_eq!("2F0".parse::<Action>().unwrap(), Action::new(2, Op::F, 0));
        assert_eq!(" 1I3 ".parse::<Action>().unwrap(), Action::new(1, Op::I, 3));
    }

    #[test]
    fn rejects_malformed() {
        for s in ["", "F0", "2X0", "2F", "2Fa", "2F0x", "1SEND_F0", "-1F0", "65536F0", "0F4294967296"] {
            let e = s.parse::<Action>().unwrap_err();
            assert!(matches!(e, Error::ParseAction { .. }), "{s}: {e}");
        }
        let e = "1SEND_F0".parse::<Action>().unwrap_err().to_string();
        assert!(e.contains("compute-only"), "{e}");
    }

    #[test]
    fn is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Action>(), 8);
        assert_eq!("65535F4294967295".parse::<Action>().unwrap(), Action::new(65535, Op::F, 4294967295));
    }

    #[test]
    fn pads_as_a_whole() {
        assert_eq!(format!("[{:<5}]", Action::new(1, Op::F, 2)), "[1F2  ]");
    }
}
