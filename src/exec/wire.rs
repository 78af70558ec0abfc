//! Messages as bytes, for links that leave the process: the [`Wire`] encoding of a payload and
//! the [`Packet`] that carries one envelope to or from another rank.
//!
//! A packet is a fixed header — flow (1 byte: 0 activation, 1 gradient), producing stage,
//! consuming stage, micro-batch (little-endian `u32` each), the sender's send time (`f64`, ms
//! since its step started) — then the payload's own encoding. The receiver checks the header
//! against what it waits for, as it checks an in-process envelope.
//!
//! Invariant: `decode(encode(x))` gives `x` bit for bit (a tensor's values by their bits, from
//! whatever device holds it: the decoded tensor is on the host, and the consuming stage moves it
//! to its own device as it does any input).

use pipesched_schedules::deps::{Flow, Message};
use pipesched_stages::{Dtype, Format, Tensor};

use super::link::Envelope;

/// A payload that can cross a process boundary.
pub trait Wire: Sized {
    /// Appends the payload's bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String>;
    /// The payload `bytes` encode; an error saying what is wrong with them.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// No payload: the message alone (stages that model only the dependency).
impl Wire for () {
    fn encode(&self, _out: &mut Vec<u8>) -> Result<(), String> {
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.len() {
            0 => Ok(()),
            n => Err(format!("an empty payload came with {n} bytes")),
        }
    }
}

/// Synthetic stages' payloads: the bytes themselves.
impl Wire for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(self);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
}

/// Appends `values` as the wire writes `f32` values: every value's bits (`u32`,
/// little-endian).
pub fn put_f32s(out: &mut Vec<u8>, values: &[f32]) {
    out.reserve(4 * values.len());
    out.extend(values.iter().flat_map(|v| v.to_bits().to_le_bytes()));
}

/// The `f32` values [`put_f32s`] wrote into `bytes` (a trailing part of a value is left out).
pub fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.chunks_exact(4).map(|b| f32::from_bits(u32::from_le_bytes(b.try_into().expect("4 bytes"))))
}

/// Values without a shape ([`put_f32s`]) — gradients summed over replicas, parameter slices,
/// losses.
impl Wire for Vec<f32> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        put_f32s(out, self);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() % 4 != 0 {
            return Err(format!("{} bytes are not a whole number of 4-byte values", bytes.len()));
        }
        Ok(f32s(bytes).collect())
    }
}

/// A tensor: rows and columns (`u64` each), its element type (one byte: 0 `f32`, 1 `bf16`,
/// 2 `f16`), then every value's bits, little-endian: 4 bytes each for `f32`, and for a 16-bit
/// stage's tensors the 2 bytes it keeps, exactly, so they cross processes as they are held
/// (and count the same bytes there).
impl Wire for Tensor {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        if self.dtype() == Dtype::F64 {
            return Err("an f64 tensor (a gradient check's) does not cross processes".into());
        }
        out.extend_from_slice(&(self.rows() as u64).to_le_bytes());
        out.extend_from_slice(&(self.cols() as u64).to_le_bytes());
        match self.stored_bits() {
            Some((bits, format)) => {
                out.reserve(1 + 2 * bits.len());
                out.push(match format {
                    Format::Bf16 => 1,
                    Format::F16 => 2,
                });
                out.extend(bits.iter().flat_map(|b| b.to_le_bytes()));
            }
            None => {
                let values = self.values().map_err(|e| e.to_string())?;
                out.reserve(1 + 4 * values.len());
                out.push(0);
                out.extend(values.iter().flat_map(|v| v.to_bits().to_le_bytes()));
            }
        }
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (Some(head), Some(&tag), Some(body)) = (bytes.get(..16), bytes.get(16), bytes.get(17..)) else {
            return Err(format!("a tensor needs a 16-byte shape and a type byte; got {} bytes", bytes.len()));
        };
        let dim = |k: usize| u64::from_le_bytes(head[8 * k..8 * k + 8].try_into().expect("8 bytes"));
        let (rows, cols) = (dim(0), dim(1));
        let (format, width) = match tag {
            0 => (None, 4),
            1 => (Some(Format::Bf16), 2),
            2 => (Some(Format::F16), 2),
            t => return Err(format!("a tensor's type byte is {t}; known: 0 (f32), 1 (bf16), 2 (f16)")),
        };
        let n = rows.checked_mul(cols).and_then(|n| n.checked_mul(width));
        if n != Some(body.len() as u64) {
            return Err(format!(
                "a [{rows}, {cols}] tensor needs {rows}·{cols}·{width} bytes of values; got {}",
                body.len()
            ));
        }
        let (rows, cols) = (rows as usize, cols as usize);
        let tensor = match format {
            None => {
                let data = body.chunks_exact(4).map(|b| f32::from_bits(u32::from_le_bytes(b.try_into().expect("4"))));
                Tensor::new(rows, cols, data.collect())
            }
            Some(f) => {
                let bits = body.chunks_exact(2).map(|b| u16::from_le_bytes(b.try_into().expect("2 bytes")));
                Tensor::from_bits(rows, cols, bits.collect(), f)
            }
        };
        tensor.map_err(|e| e.to_string())
    }
}

/// Bytes of the packet header.
const HEADER: usize = 1 + 3 * 4 + 8;

/// One envelope on its way to or from another rank.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The other rank: where it goes when sent, where it came from when received.
    pub peer: usize,
    /// Header and payload.
    pub bytes: Vec<u8>,
}

impl Packet {
    /// `env` encoded for rank `peer`.
    pub fn encode<P: Wire>(peer: usize, env: &Envelope<P>) -> Result<Packet, String> {
        let m = env.message;
        let mut bytes = Vec::with_capacity(HEADER);
        bytes.push(match m.flow {
            Flow::Activation => 0,
            Flow::Gradient => 1,
        });
        for v in [m.from, m.to, m.mb] {
            let v = u32::try_from(v).map_err(|_| format!("{m:?} has an index past 2³²"))?;
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(&env.sent.to_le_bytes());
        env.payload.encode(&mut bytes)?;
        Ok(Packet { peer, bytes })
    }

    /// The message this packet carries, from its header; an error for a packet too short or of
    /// an unknown flow.
    pub fn message(&self) -> Result<Message, String> {
        let h = self.bytes.get(..HEADER).ok_or_else(|| {
            format!(
                "a packet from rank {} of {} bytes is shorter than the {HEADER}-byte header",
                self.peer,
                self.bytes.len()
            )
        })?;
        let flow = match h[0] {
            0 => Flow::Activation,
            1 => Flow::Gradient,
            other => return Err(format!("a packet from rank {} has flow byte {other}, not 0 or 1", self.peer)),
        };
        let word = |k: usize| u32::from_le_bytes(h[1 + 4 * k..5 + 4 * k].try_into().expect("4 bytes")) as usize;
        Ok(Message { flow, from: word(0), to: word(1), mb: word(2) })
    }

    /// The envelope this packet carries.
    pub fn decode<P: Wire>(&self) -> Result<Envelope<P>, String> {
        let message = self.message()?;
        let sent = f64::from_le_bytes(self.bytes[HEADER - 8..HEADER].try_into().expect("8 bytes"));
        let payload =
            P::decode(&self.bytes[HEADER..]).map_err(|e| format!("{message:?} from rank {}: {e}", self.peer))?;
        Ok(Envelope { message, sent, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_bit_for_bit() {
        let t = Tensor::new(2, 3, vec![1.5, -0.0, f32::NAN, f32::MIN_POSITIVE / 4.0, 3e38, -7.25]).unwrap();
        let message = Message { flow: Flow::Gradient, from: 5, to: 4, mb: 70_000 };
        let env = Envelope { message, sent: 12.625, payload: t.clone() };
        let packet = Packet::encode(3, &env).unwrap();
        assert_eq!(packet.bytes.len(), HEADER + 17 + 6 * 4);
        assert_eq!(packet.message().unwrap(), message);
        let back: Envelope<Tensor> = packet.decode().unwrap();
        assert!(back.payload.bit_eq(&t));
        assert_eq!((back.message, back.sent), (message, 12.625));
        let raw = Envelope { message, sent: 0.0, payload: vec![1u8, 2, 3] };
        assert_eq!(Packet::encode(0, &raw).unwrap().decode::<Vec<u8>>().unwrap().payload, vec![1, 2, 3]);
    }

    #[test]
    fn values_round_trip_bit_for_bit() {
        let values = vec![1.5f32, -0.0, f32::NAN, f32::MIN_POSITIVE / 4.0, -3e38];
        let mut bytes = Vec::new();
        values.encode(&mut bytes).unwrap();
        assert_eq!(bytes.len(), 20);
        let back = Vec::<f32>::decode(&bytes).unwrap();
        assert!(back.iter().zip(&values).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(Vec::<f32>::decode(&bytes[..7]).unwrap_err().contains("not a whole number"));
    }

    #[test]
    fn damaged_packets_are_errors() {
        let short = Packet { peer: 1, bytes: vec![0; HEADER - 1] };
        assert!(short.message().unwrap_err().contains("shorter than the"));
        let mut bad = Packet { peer: 1, bytes: vec![0; HEADER + 17] };
        bad.bytes[0] = 7;
        assert!(bad.message().unwrap_err().contains("flow byte 7"));
        bad.bytes[0] = 0;
        bad.bytes[HEADER] = 2; // a [2, 0] tensor: fine, no values.
        assert!(bad.decode::<Tensor>().is_ok());
        bad.bytes[HEADER + 8] = 1; // [2, 1]: 8 bytes of values missing.
        assert!(bad.decode::<Tensor>().unwrap_err().contains("needs 2·1·4 bytes"));
        assert!(Tensor::decode(&[0; 16]).unwrap_err().contains("16-byte shape and a type byte"));
        bad.bytes[HEADER + 16] = 3;
        assert!(bad.decode::<Tensor>().unwrap_err().contains("type byte is 3"));
    }

    #[test]
    fn sixteen_bit_tensors_cross_as_they_are_kept() {
        let values = vec![1.5f32, -0.0, 65504.0, f32::INFINITY, -2.0f32.powi(-24), 3.0e38];
        for format in [Format::Bf16, Format::F16] {
            let t = Tensor::new(2, 3, values.clone()).unwrap().into_stored(format).unwrap();
            let mut bytes = Vec::new();
            t.encode(&mut bytes).unwrap();
            assert_eq!(bytes.len(), 17 + 6 * 2, "{format}: 2 bytes a value");
            let back = Tensor::decode(&bytes).unwrap();
            assert_eq!(back.dtype(), Dtype::Stored(format));
            assert!(back.bit_eq(&t), "{format}");
        }
        // Any 16 bits cross as they are, a NaN's payload too.
        let odd = Tensor::from_bits(1, 2, vec![0x7f81, 0xffff], Format::Bf16).unwrap();
        let mut bytes = Vec::new();
        odd.encode(&mut bytes).unwrap();
        assert_eq!(Tensor::decode(&bytes).unwrap().stored_bits(), Some((&[0x7f81u16, 0xffff][..], Format::Bf16)));
        assert!(Tensor::from_bits(2, 2, vec![0; 3], Format::F16).is_err());
        let wide = Tensor::new(1, 1, vec![1.0]).unwrap().to_f64().unwrap();
        assert!(wide.encode(&mut Vec::new()).unwrap_err().contains("f64"));
    }
}
