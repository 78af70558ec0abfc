//! Byte-level text for training small GPT-style models, with no download: tokens are bytes
//! (vocabulary 256), from a generated corpus or from any file.
//!
//! # The generated corpus and its exact entropy
//!
//! [`Corpus::markov`] runs a Markov chain of order 1 or 2 over the first `alphabet` symbols of
//! `etaoinshrdlucmfwypvbgkqjxz .,;'-`. Each context — the previous symbol, or the previous two —
//! has `K = 4` distinct successors, drawn from the alphabet by a seeded partial Fisher–Yates
//! shuffle, taking probabilities `P = [0.5, 0.25, 0.15, 0.10]` in that order. Token `i` is
//! drawn from the top 24 bits of draw `i` of a [`Stream`] against the integer thresholds
//! `round(cum_p · 2²⁴)`, so the probabilities the chain realises are those 24-bit fractions
//! (within 3·10⁻⁸ of `P`). An order-1 chain is learnt from the current token alone; an order-2
//! chain needs the token before it too, which a transformer finds through attention.
//!
//! Every context's next-token distribution is a permutation of the same probabilities, so the
//! conditional entropy of each token given its past is the same `H = −Σ p ln p` whatever the
//! context. The entropy rate `Σ_ctx π(ctx)·H` is therefore exactly `H` for any stationary (or
//! starting) distribution `π`: no need to know which contexts the chain visits. With the
//! realised fractions, `H ≈ 1.2080` nats per token, which [`Corpus::entropy`] returns; a model's
//! validation loss can approach it but, in expectation, not go below it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::rng::{tag, Stream};

/// The printable symbols of the generated corpus, most frequent English letters first.
const SYMBOLS: &[u8; 32] = b"etaoinshrdlucmfwypvbgkqjxz .,;'-";
/// Successors per context.
const K: usize = 4;
/// The successors' probabilities, in the order they are assigned.
const P: [f64; K] = [0.5, 0.25, 0.15, 0.10];
/// Bits of a draw compared against the thresholds.
const DRAW_BITS: u32 = 24;
/// Largest file [`Corpus::from_file`] reads.
const MAX_FILE: u64 = 1 << 30;
/// Shortest generated corpus.
const MIN_LEN: usize = 64;

/// Byte-level text: a training split and a validation split, and the entropy rate when known.
#[derive(Clone)]
pub struct Corpus {
    name: String,
    bytes: Vec<u8>,
    split: usize,
    entropy: Option<f64>,
    /// The entropy of a token given only the one before it, where known: what the first target
    /// of a window, which sees one token of context, cannot go below.
    first_entropy: Option<f64>,
}

/// Cumulative thresholds `round(cum_p · 2²⁴)`; a draw `u < t[j]` (first such `j`) picks
/// successor `j`. The last is exactly `2²⁴`.
fn thresholds() -> [u64; K] {
    let scale = (1u64 << DRAW_BITS) as f64;
    let mut cum = 0.0;
    P.map(|p| {
        cum += p;
        (cum * scale).round() as u64
    })
}

/// The entropy in nats of the probabilities the thresholds realise.
fn realised_entropy() -> f64 {
    let scale = (1u64 << DRAW_BITS) as f64;
    let mut prev = 0;
    thresholds()
        .iter()
        .map(|&t| {
            let p = (t - prev) as f64 / scale;
            prev = t;
            -p * p.ln()
        })
        .sum()
}

/// The name and sizes, not the bytes (up to a GiB).
impl std::fmt::Debug for Corpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Corpus")
            .field("name", &self.name)
            .field("bytes", &self.bytes.len())
            .field("split", &self.split)
            .field("entropy", &self.entropy)
            .field("first_entropy", &self.first_entropy)
            .finish()
    }
}

/// The entropy in nats of a token given only the token before it, for the chain of `successors`
/// (drawn with the cumulative thresholds `t`) started at context `start`: `H` itself for order
/// 1; for order 2, the stationary distribution of the pairs the chain visits from `start` is found
/// by iterating the lazy chain from there (the same distribution, and no oscillation) until it
/// moves by less than 1e-13, and the next-token distribution given the last symbol mixes its
/// contexts' distributions.
fn first_entropy(successors: &[[usize; K]], order: usize, alphabet: usize, t: &[u64; K], start: usize) -> f64 {
    let scale = (1u64 << DRAW_BITS) as f64;
    let p: Vec<f64> = (0..K).map(|j| (t[j] - if j == 0 { 0 } else { t[j - 1] }) as f64 / scale).collect();
    if order == 1 {
        return p.iter().map(|p| -p * p.ln()).sum();
    }
    let contexts = successors.len();
    let mut pi = vec![0.0; contexts];
    pi[start % contexts] = 1.0;
    for _ in 0..20_000 {
        let mut next = vec![0.0; contexts];
        for (ctx, succ) in successors.iter().enumerate() {
            next[ctx] += 0.5 * pi[ctx];
            for (j, &c) in succ.iter().enumerate() {
                next[(ctx * alphabet + c) % contexts] += 0.5 * pi[ctx] * p[j];
            }
        }
        let moved = next.iter().zip(&pi).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        pi = next;
        if moved < 1e-13 {
            break;
        }
    }
    // For each last symbol b: the distribution of the next symbol, Σ_a π(a, b)·P(·|a, b).
    let mut joint = vec![0.0; alphabet * alphabet];
    for (ctx, succ) in successors.iter().enumerate() {
        let b = ctx % alphabet;
        for (j, &c) in succ.iter().enumerate() {
            joint[b * alphabet + c] += pi[ctx] * p[j];
        }
    }
    joint
        .chunks(alphabet)
        .map(|row| {
            let q: f64 = row.iter().sum();
            row.iter().filter(|&&x| x > 0.0).map(|&x| -x * (x / q).ln()).sum::<f64>()
        })
        .sum()
}

impl Corpus {
    /// Vocabulary of byte-level tokens.
    pub const VOCAB: usize = 256;
    /// Default length of the generated corpus, in tokens.
    pub const DEFAULT_LEN: usize = 1 << 20;
    /// Order of the default generated corpus: how many previous symbols the next depends on.
    pub const DEFAULT_ORDER: usize = 2;

    /// The generated Markov corpus of `len` tokens over `alphabet` symbols whose next symbol
    /// depends on the previous `order`, from `seed` (see the module doc). Errors if `alphabet` is
    /// outside `4..=32`, `order` outside `1..=2`, or `len < 64`.
    pub fn markov(seed: u64, order: usize, alphabet: usize, len: usize) -> Result<Corpus> {
        if !(1..=2).contains(&order) {
            return Err(Error::Data(format!("a Markov corpus of order {order}: use order 1 or 2")));
        }
        if !(K..=SYMBOLS.len()).contains(&alphabet) {
            return Err(Error::Data(format!(
                "a Markov corpus over {alphabet} symbols cannot give each context {K} distinct \
                 successors: use an alphabet of {K} to {} symbols",
                SYMBOLS.len()
            )));
        }
        if len < MIN_LEN {
            return Err(Error::Data(format!(
                "a Markov corpus of {len} tokens is too short to split into training and \
                 validation: use at least {MIN_LEN} tokens"
            )));
        }
        Ok(Corpus::chain(seed, order, alphabet, len))
    }

    /// The default generated corpus for `seed`: `markov(seed, DEFAULT_ORDER, 32, DEFAULT_LEN)`.
    pub fn generated(seed: u64) -> Corpus {
        Corpus::chain(seed, Corpus::DEFAULT_ORDER, SYMBOLS.len(), Corpus::DEFAULT_LEN)
    }

    /// The chain itself, for arguments already checked (`1 ≤ order ≤ 2`, `K ≤ alphabet ≤ 32`,
    /// `len ≥ 64`).
    fn chain(seed: u64, order: usize, alphabet: usize, len: usize) -> Corpus {
        let key = if order == 2 { alphabet as u64 } else { (order as u64) << 32 | alphabet as u64 };
        let stream = |part: u64| Stream::new(&[tag::CORPUS, seed, key, part]);
        let (table, draws, start) = (stream(0), stream(1), stream(2));
        let contexts = alphabet.pow(order as u32);
        // Successors (symbol indices) of each context: the previous `order` symbols, the oldest
        // first, as a number in base `alphabet`.
        let successors: Vec<[usize; K]> = (0..contexts)
            .map(|ctx| {
                let mut perm: Vec<usize> = (0..alphabet).collect();
                for j in 0..K {
                    let r = j + (table.bits((ctx * K + j) as u64) % (alphabet - j) as u64) as usize;
                    perm.swap(j, r);
                }
                [perm[0], perm[1], perm[2], perm[3]]
            })
            .collect();
        let t = thresholds();
        let mut ctx = (0..order as u64).fold(0, |c, k| c * alphabet + (start.bits(k) % alphabet as u64) as usize);
        let first = first_entropy(&successors, order, alphabet, &t, ctx);
        let bytes = (0..len as u64)
            .map(|i| {
                let u = draws.bits(i) >> (64 - DRAW_BITS);
                let j = t.iter().position(|&tj| u < tj).unwrap_or(K - 1);
                let c = successors[ctx][j];
                ctx = (ctx * alphabet + c) % contexts;
                SYMBOLS[c]
            })
            .collect();
        Corpus {
            name: format!("markov(seed {seed}, order {order}, alphabet {alphabet}, {len} tokens)"),
            bytes,
            split: len * 9 / 10,
            entropy: Some(realised_entropy()),
            first_entropy: Some(first),
        }
    }

    /// Any file's bytes, split 90 % / 10 % (validation is the last tenth). Errors if the file is
    /// missing or unreadable, empty, larger than 1 GiB, or too short for one window of `seq + 1`
    /// bytes in each split, or if `seq` is 0.
    pub fn from_file(path: &Path, seq: usize) -> Result<Corpus> {
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Data(format!("cannot read {shown}: {e}; pass an existing text file")))?;
        if !meta.is_file() {
            return Err(Error::Data(format!("{shown} is not a file; pass a text file")));
        }
        if meta.len() > MAX_FILE {
            return Err(Error::Data(format!(
                "{shown} has {} bytes, more than the {MAX_FILE} (1 GiB) read into memory: use a \
                 shorter file",
                meta.len()
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Data(format!("cannot read {shown}: {e}; pass a readable text file")))?;
        Corpus::from_bytes(&shown.to_string(), bytes, seq)
    }

    /// The same from bytes in memory, with a name for messages.
    pub fn from_bytes(name: &str, bytes: Vec<u8>, seq: usize) -> Result<Corpus> {
        if bytes.is_empty() {
            return Err(Error::Data(format!("{name} is empty: use a file with text in it")));
        }
        let split = bytes.len() * 9 / 10;
        let corpus = Corpus { name: name.to_string(), bytes, split, entropy: None, first_entropy: None };
        corpus.check_seq(seq)?;
        Ok(corpus)
    }

    /// An error unless both splits hold a window of `seq + 1` bytes (`seq` inputs and the byte
    /// after each), and `seq` is at least 1.
    pub fn check_seq(&self, seq: usize) -> Result<()> {
        let name = &self.name;
        if seq == 0 {
            return Err(Error::Data(format!(
                "{name}: a sequence of 0 tokens has nothing to predict; use a sequence length of \
                 at least 1"
            )));
        }
        let n = self.bytes.len();
        // The training split (⌊0.9 n⌋) is never shorter than the validation tenth (⌈0.1 n⌉).
        let val = self.val().len();
        if val < seq.saturating_add(1) {
            return Err(Error::Data(format!(
                "{name} has {n} bytes; its validation tenth ({val} bytes) is shorter than one \
                 sequence of seq+1 = {} bytes: use a longer file or a shorter sequence",
                seq.saturating_add(1)
            )));
        }
        Ok(())
    }

    /// The corpus's name: the file's path, or the generator and its settings.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entropy rate in nats per token, where known (the generated corpus).
    pub fn entropy(&self) -> Option<f64> {
        self.entropy
    }

    /// The least mean loss a model can reach on windows of `seq` targets, where known: every
    /// target has its full context in the window but the first, which sees one token (so an
    /// order-2 chain's first target is predicted from one symbol, not two):
    /// `((seq − 1)·H + H₁) / seq`, with `H₁` the entropy of a token given the one before it.
    pub fn floor(&self, seq: usize) -> Option<f64> {
        let (h, h1) = (self.entropy?, self.first_entropy?);
        let n = seq.max(1) as f64;
        Some(((n - 1.0) * h + h1) / n)
    }

    /// The training split: the first nine tenths.
    pub fn train(&self) -> &[u8] {
        &self.bytes[..self.split]
    }

    /// The validation split: the last tenth.
    pub fn val(&self) -> &[u8] {
        &self.bytes[self.split..]
    }

    /// Training window `k` of draw stream `stream`: `seq + 1` consecutive bytes of the training
    /// split starting at a position drawn as `stream.bits(k) % (train.len() - seq)`. (The whole
    /// split, if it is shorter than `seq + 1` bytes.)
    pub fn train_window(&self, stream: &Stream, k: u64, seq: usize) -> &[u8] {
        let train = self.train();
        match train.len().checked_sub(seq) {
            Some(starts) if starts > 0 => {
                let p = (stream.bits(k) % starts as u64) as usize;
                &train[p..p + seq + 1]
            }
            _ => train,
        }
    }

    /// Validation window `k` (deterministic, no randomness): the k-th of the non-overlapping
    /// windows of `seq + 1` bytes (stride `seq`) of the validation split, wrapping around modulo
    /// their count. (The whole split, if it holds no window.)
    pub fn val_window(&self, k: usize, seq: usize) -> &[u8] {
        let val = self.val();
        match self.val_windows(seq) {
            0 => val,
            n => {
                let p = (k % n) * seq;
                &val[p..p + seq + 1]
            }
        }
    }

    /// Number of non-overlapping validation windows of `seq` targets (0 for `seq == 0`).
    pub fn val_windows(&self, seq: usize) -> usize {
        match seq {
            0 => 0,
            _ => self.val().len().saturating_sub(1) / seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_is_that_of_the_realised_probabilities() {
        let c = Corpus::generated(1);
        let h = c.entropy().expect("the generated corpus knows its entropy");
        let t = thresholds();
        assert_eq!(t, [1 << 23, 3 << 22, 15_099_494, 1 << 24]);
        let q = [1u64 << 23, 1 << 22, 15_099_494 - (3 << 22), (1 << 24) - 15_099_494];
        let want: f64 = q.iter().map(|&n| n as f64 / (1u64 << 24) as f64).map(|p| -p * p.ln()).sum();
        assert_eq!(h, want);
        let exact = -(0.5f64 * 0.5f64.ln() + 0.25 * 0.25f64.ln() + 0.15 * 0.15f64.ln() + 0.1 * 0.1f64.ln());
        assert!((h - exact).abs() < 1e-6, "{h} vs {exact}");
        assert!((h - 1.2080).abs() < 1e-4, "{h}");
    }

    /// The empirical entropy of the next symbol given the previous `order`, in nats (checking
    /// that each context has at most `K` successors when `order` is the chain's).
    fn empirical_entropy(c: &Corpus, order: usize) -> f64 {
        let chain_order = if c.name.contains("order 1") { 1 } else { 2 };
        let bytes = [c.train(), c.val()].concat();
        let index = |x: u8| SYMBOLS.iter().position(|&s| s == x).expect("only alphabet bytes occur");
        let ids: Vec<usize> = bytes.iter().map(|&x| index(x)).collect();
        let mut counts = vec![0u64; 32usize.pow(order as u32 + 1)];
        for w in ids.windows(order + 1) {
            counts[w.iter().fold(0, |c, &x| c * 32 + x)] += 1;
        }
        let n = (ids.len() - order) as f64;
        let mut h = 0.0;
        for ctx in counts.chunks(32) {
            let total: u64 = ctx.iter().sum();
            assert!(order != chain_order || ctx.iter().filter(|&&x| x > 0).count() <= K);
            h += ctx.iter().filter(|&&x| x > 0).map(|&x| x as f64 * -(x as f64 / total as f64).ln()).sum::<f64>();
        }
        h / n
    }

    #[test]
    fn generated_corpora_reach_their_entropy_empirically() {
        for order in [1, 2] {
            let c = Corpus::markov(7, order, 32, Corpus::DEFAULT_LEN).expect("valid");
            assert_eq!(c.train().len() + c.val().len(), Corpus::DEFAULT_LEN);
            let (h, want) = (empirical_entropy(&c, order), c.entropy().expect("known"));
            assert!((h - want).abs() < 0.01, "order {order}: empirical {h} vs {want}");
            // The first target of a window sees one symbol: its entropy is the chain's order-1
            // conditional entropy, computed from the stationary distribution.
            let first = c.first_entropy.expect("known");
            let h1 = empirical_entropy(&c, 1);
            assert!((h1 - first).abs() < 0.01, "order {order}: empirical {h1} vs {first}");
            let floor = c.floor(64).expect("known");
            assert!((floor - ((63.0 * want + first) / 64.0)).abs() < 1e-12 && floor >= want);
        }
        let c = Corpus::generated(1);
        let (h, floor) = (c.entropy().unwrap(), c.floor(64).unwrap());
        assert!(floor > h + 0.01, "an order-2 chain's first target costs more: {floor} vs {h}");
    }

    #[test]
    fn generation_is_a_pure_function_of_the_seed() {
        let a = Corpus::markov(3, 2, 8, 5000).expect("valid");
        assert_eq!(a.train(), Corpus::markov(3, 2, 8, 5000).expect("valid").train());
        assert_ne!(a.train(), Corpus::markov(4, 2, 8, 5000).expect("valid").train());
        assert!(a.train().iter().chain(a.val()).all(|b| SYMBOLS[..8].contains(b)));
        assert_eq!(
            Corpus::generated(5).train(),
            Corpus::markov(5, Corpus::DEFAULT_ORDER, 32, Corpus::DEFAULT_LEN).expect("valid").train()
        );
        let e = Corpus::markov(1, 2, 3, 5000).expect_err("alphabet below K").to_string();
        assert!(e.contains("use an alphabet of 4 to 32"), "{e}");
        let e = Corpus::markov(1, 2, 33, 5000).expect_err("alphabet above 32").to_string();
        assert!(e.contains("33 symbols"), "{e}");
        let e = Corpus::markov(1, 2, 8, 63).expect_err("too short").to_string();
        assert!(e.contains("use at least 64 tokens"), "{e}");
    }

    #[test]
    fn splits_and_windows() {
        let c = Corpus::markov(2, 2, 32, 1000).expect("valid");
        assert_eq!((c.train().len(), c.val().len()), (900, 100));
        let s = Stream::new(&[9]);
        for k in 0..200 {
            let w = c.train_window(&s, k, 16);
            assert_eq!(w.len(), 17);
            assert_eq!(w, c.train_window(&s, k, 16));
            let p = (s.bits(k) % (900 - 16)) as usize;
            assert_eq!(w, &c.train()[p..p + 17]);
        }
        assert_eq!(c.val_windows(16), 6); // windows start at 0, 16, ..., 80: 80 + 17 ≤ 100
        assert_eq!(c.val_windows(99), 1);
        assert_eq!(c.val_windows(100), 0);
        for k in 0..12 {
            let w = c.val_window(k, 16);
            assert_eq!(w, &c.val()[(k % 6) * 16..(k % 6) * 16 + 17]);
        }
        assert_eq!(c.val_window(7, 16), c.val_window(1, 16));
        assert_eq!(c.name(), "markov(seed 2, order 2, alphabet 32, 1000 tokens)");
        let e = Corpus::markov(1, 3, 8, 5000).expect_err("order 3").to_string();
        assert!(e.contains("use order 1 or 2"), "{e}");
    }

    #[test]
    fn from_bytes_refuses_what_cannot_be_used() {
        let e = Corpus::from_bytes("empty.txt", vec![], 8).expect_err("empty").to_string();
        assert!(e.contains("empty.txt is empty"), "{e}");
        let e = Corpus::from_bytes("short.txt", vec![b'a'; 50], 8).expect_err("short").to_string();
        assert!(
            e.contains("short.txt has 50 bytes; its validation tenth (5 bytes) is shorter than one sequence of seq+1 = 9 bytes")
                && e.contains("use a longer file or a shorter sequence"),
            "{e}"
        );
        let e = Corpus::from_bytes("x.txt", vec![b'a'; 50], 0).expect_err("seq 0").to_string();
        assert!(e.contains("at least 1"), "{e}");
        let c = Corpus::from_bytes("ok.txt", vec![b'a'; 90], 8).expect("val tenth holds 9 bytes");
        assert_eq!((c.train().len(), c.val().len(), c.entropy()), (81, 9, None));
        assert_eq!(c.val_windows(8), 1);
    }

    #[test]
    fn from_file_reads_a_file_and_names_a_missing_one() {
        let dir = std::env::temp_dir();
        let missing = dir.join(format!("pipesched-corpus-missing-{}.txt", std::process::id()));
        let e = Corpus::from_file(&missing, 8).expect_err("missing").to_string();
        assert!(e.starts_with("data: cannot read") && e.contains(&missing.display().to_string()), "{e}");
        let path = dir.join(format!("pipesched-corpus-test-{}.txt", std::process::id()));
        let text = b"the quick brown fox jumps over the lazy dog. ".repeat(20);
        std::fs::write(&path, &text).expect("write temp file");
        let c = Corpus::from_file(&path, 32);
        std::fs::remove_file(&path).expect("remove temp file");
        let c = c.expect("a real file");
        assert_eq!([c.train(), c.val()].concat(), text);
        assert_eq!(c.val().len(), text.len() - text.len() * 9 / 10);
        assert_eq!(c.name(), path.display().to_string());
    }
}
