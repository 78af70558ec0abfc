//! Inputs for the fuzz tests: random text, and valid examples with a few edits — a character
//! deleted, inserted, replaced or duplicated, two swapped, a number replaced by an extreme one
//! (huge, negative, NaN, inf, 1e308, u64::MAX + 1, empty, ...), a key or unit renamed, a
//! separator doubled, the text cut short. Edits keep most of the example's structure, so they
//! reach the checks deep inside a parser that random text never gets past.
//!
//! Invariant: an edit's positions are taken modulo what the text has when it applies (its
//! characters, numbers, words or separators), so every edit applies to every text — the empty
//! one included — and a failing case shrinks to fewer and smaller edits.

use proptest::prelude::*;
use proptest::sample::select;

/// Numbers at or past a limit of some parser: the integer widths (u16, u32, i64, u64, u128),
/// floats that overflow or are not numbers, signs, fractions, spellings Rust does not read.
pub const EXTREME_NUMBERS: &[&str] = &[
    "",
    "0",
    "-0",
    "-1",
    "1.5",
    "0.0001",
    "2.",
    ".5",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    "1e308",
    "1e309",
    "-1e308",
    "1e-320",
    "1e3",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "99999999999999999999999999999999999999999999999999",
    "1_000",
    "0x10",
    "+7",
    "007",
];

/// Characters an edit inserts or puts in place of another: the separators and letters the
/// formats use, signs, digits, quotes, whitespace, a NUL, multi-byte characters.
const ALPHABET: &[char] = &[
    ',', '=', ':', '.', '-', '+', ';', '"', '\'', '[', ']', '{', '}', '#', '\n', '\r', ' ', '\t', '\0', '0', '1', '9',
    'e', 'E', 'F', 'B', 'I', 'W', 'R', 'x', 's', 'm', 'µ', 'é', '☃', '\u{feff}',
];

/// Characters a separator is recognised by, for [`Edit::DoubleSeparator`].
const SEPARATORS: &[char] = &[',', '=', ':', '.', ';', '\n', '{', '}', '[', ']', '"'];

/// One edit of a text.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Delete the character at this position.
    Delete(usize),
    /// Insert a character before this position.
    Insert(usize, char),
    /// Replace the character at this position.
    Replace(usize, char),
    /// Repeat `len` characters starting here.
    Duplicate(usize, usize),
    /// Swap two characters.
    Swap(usize, usize),
    /// Replace the k-th number with another: an extreme one, or a small one (which keeps a
    /// structure parseable and moves its references around).
    Number(usize, String),
    /// Replace the k-th word (a key, a unit, an op letter, a name) with another.
    Rename(usize, String),
    /// Change the case of the k-th word.
    Recase(usize),
    /// Write the k-th separator twice.
    DoubleSeparator(usize),
    /// Keep only the characters before this position.
    Truncate(usize),
}

/// A character for an edit: mostly from [`ALPHABET`], sometimes any at all.
fn character() -> impl Strategy<Value = char> {
    prop_oneof![4 => select(ALPHABET), 1 => any::<char>()]
}

/// A number to put in place of another: an extreme one, or a small whole one.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![2 => select(EXTREME_NUMBERS).prop_map(String::from), 1 => (0u32..12).prop_map(|n| n.to_string())]
}

/// One edit.
pub fn edit() -> impl Strategy<Value = Edit> {
    let at = 0usize..4096;
    prop_oneof![
        1 => at.clone().prop_map(Edit::Delete),
        1 => (at.clone(), character()).prop_map(|(k, c)| Edit::Insert(k, c)),
        1 => (at.clone(), character()).prop_map(|(k, c)| Edit::Replace(k, c)),
        1 => (at.clone(), 1usize..16).prop_map(|(k, n)| Edit::Duplicate(k, n)),
        1 => (at.clone(), at.clone()).prop_map(|(a, b)| Edit::Swap(a, b)),
        3 => (at.clone(), number()).prop_map(|(k, n)| Edit::Number(k, n)),
        1 => (at.clone(), "[A-Za-z_]{0,8}").prop_map(|(k, w)| Edit::Rename(k, w)),
        1 => at.clone().prop_map(Edit::Recase),
        1 => at.clone().prop_map(Edit::DoubleSeparator),
        1 => at.prop_map(Edit::Truncate),
    ]
}

/// `base` with one to three edits.
pub fn mutated(base: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (base, prop::collection::vec(edit(), 1..=3)).prop_map(|(text, edits)| apply(&text, &edits))
}

/// Random text of at most `max` bytes: random bytes read as lossy UTF-8, or characters of
/// [`ALPHABET`] (which reach further into a parser than bytes do).
pub fn random_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..max).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        prop::collection::vec(character(), 0..max).prop_map(|c| c.into_iter().collect()),
    ]
}

/// `text` with `edits` applied in order.
pub fn apply(text: &str, edits: &[Edit]) -> String {
    let mut t: Vec<char> = text.chars().collect();
    for e in edits {
        let n = t.len();
        match e {
            Edit::Delete(k) if n > 0 => {
                t.remove(k % n);
            }
            Edit::Insert(k, c) => t.insert(k % (n + 1), *c),
            Edit::Replace(k, c) if n > 0 => t[k % n] = *c,
            Edit::Duplicate(k, len) if n > 0 => {
                let start = k % n;
                let end = (start + len).min(n);
                let copy: Vec<char> = t[start..end].to_vec();
                t.splice(end..end, copy);
            }
            Edit::Swap(a, b) if n > 0 => t.swap(a % n, b % n),
            Edit::Number(k, to) => {
                let spans = numbers(&t);
                replace_span(&mut t, &spans, *k, to);
            }
            Edit::Rename(k, to) => {
                let spans = words(&t);
                replace_span(&mut t, &spans, *k, to);
            }
            Edit::Recase(k) => {
                let spans = words(&t);
                if !spans.is_empty() {
                    let (s, e) = spans[k % spans.len()];
                    let upper = t[s..e].iter().any(char::is_ascii_lowercase);
                    for c in &mut t[s..e] {
                        *c = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
                    }
                }
            }
            Edit::DoubleSeparator(k) => {
                let at: Vec<usize> = (0..n).filter(|&i| SEPARATORS.contains(&t[i])).collect();
                if !at.is_empty() {
                    let i = at[k % at.len()];
                    t.insert(i, t[i]);
                }
            }
            Edit::Truncate(k) => t.truncate(k % (n + 1)),
            _ => {} // an edit of a character in the empty text
        }
    }
    t.into_iter().collect()
}

/// Replaces the k-th of `spans` (mod their number) with `to`; nothing if there is none.
fn replace_span(t: &mut Vec<char>, spans: &[(usize, usize)], k: usize, to: &str) {
    if !spans.is_empty() {
        let (s, e) = spans[k % spans.len()];
        t.splice(s..e, to.chars());
    }
}

/// The numbers of `t` as `[start, end)` spans: an optional `-`, digits and dots, and an
/// exponent (`e`, an optional sign, digits).
fn numbers(t: &[char]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut k = 0;
    while k < t.len() {
        if !t[k].is_ascii_digit() {
            k += 1;
            continue;
        }
        let start = if k > 0 && t[k - 1] == '-' { k - 1 } else { k };
        let mut end = k;
        while end < t.len() && (t[end].is_ascii_digit() || t[end] == '.') {
            end += 1;
        }
        if end < t.len() && matches!(t[end], 'e' | 'E') {
            let mut x = end + 1;
            if x < t.len() && matches!(t[x], '+' | '-') {
                x += 1;
            }
            if x < t.len() && t[x].is_ascii_digit() {
                while x < t.len() && t[x].is_ascii_digit() {
                    x += 1;
                }
                end = x;
            }
        }
        spans.push((start, end));
        k = end;
    }
    spans
}

/// The words of `t` (runs of ASCII letters and `_`) as `[start, end)` spans.
fn words(t: &[char]) -> Vec<(usize, usize)> {
    let is_word = |c: char| c.is_ascii_alphabetic() || c == '_';
    let mut spans = Vec::new();
    let mut k = 0;
    while k < t.len() {
        if is_word(t[k]) {
            let start = k;
            while k < t.len() && is_word(t[k]) {
                k += 1;
            }
            spans.push((start, k));
        } else {
            k += 1;
        }
    }
    spans
}

#[test]
fn edits_do_what_they_say() {
    assert_eq!(apply("F=2ms,I=1", &[Edit::Number(0, "1e309".into())]), "F=1e309ms,I=1");
    assert_eq!(apply("F=2ms,I=-1.5e3", &[Edit::Number(1, "NaN".into())]), "F=2ms,I=NaN");
    assert_eq!(apply("F=2ms", &[Edit::Rename(1, "kb".into())]), "F=2kb");
    assert_eq!(apply("per_rank", &[Edit::Recase(0)]), "PER_RANK");
    assert_eq!(apply("a,b", &[Edit::DoubleSeparator(0)]), "a,,b");
    assert_eq!(apply("0F0", &[Edit::Duplicate(1, 5)]), "0F0F0");
    assert_eq!(apply("0F0", &[Edit::Swap(0, 1), Edit::Truncate(2)]), "F0");
    assert_eq!(apply("", &[Edit::Delete(3), Edit::Replace(1, 'x'), Edit::Insert(7, 'y')]), "y");
}
