//! The recipe pack: n-gram contexts of the student's tokens (1 to 4 tokens)
//! mapped to the next token, mined from accepted outputs and kept only when
//! the continuation is (near) deterministic, and its coverage of held-out
//! outputs. The compiler mines it (`kolm-compile`); the runtime drafts
//! from it with no draft model (`kolm-runtime`'s drafting: the model checks
//! each draft, so output does not change).
//!
//! The binary format (version 1) is specified in `docs/recipes.md`:
//! a 48-byte little-endian header (magic `KOLMRCP\0`, version, parameters,
//! entry counts per context length, mining statistics) followed by one
//! table per context length, each sorted strictly by context. The reader
//! checks every bound before it trusts a count and refuses anything else.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// File magic.
pub const MAGIC: [u8; 8] = *b"KOLMRCP\0";
/// Format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Longest context.
pub const MAX_CONTEXT: usize = 4;
/// Header size in bytes.
pub const HEADER_LEN: usize = 48;

/// Turns text into the student's token ids. The compiler plugs in the
/// base model's tokenizer (llama.cpp's); tests use simple ones.
pub trait Tokenize {
    /// The token ids of `text`, without BOS/EOS.
    fn tokenize(&self, text: &str) -> Vec<u32>;
}

impl<F: Fn(&str) -> Vec<u32>> Tokenize for F {
    fn tokenize(&self, text: &str) -> Vec<u32> {
        self(text)
    }
}

/// Errors reading a recipe pack. Every malformed input maps to one of these;
/// none panics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecipeError {
    /// Shorter than its header or its declared tables.
    #[error("recipe pack truncated: {need} bytes needed, {have} present")]
    Truncated {
        /// Bytes the header declares.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// Not a recipe pack.
    #[error("not a recipe pack (bad magic)")]
    BadMagic,
    /// A version this build does not read.
    #[error("recipe pack version {found} is not supported (this build reads {FORMAT_VERSION})")]
    Version {
        /// The version in the file.
        found: u16,
    },
    /// A header field is out of range.
    #[error("recipe pack header: {0}")]
    BadHeader(String),
    /// Bytes after the last table.
    #[error("recipe pack has {extra} trailing byte(s) after its tables")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// A table is not strictly sorted by context, or an entry is invalid.
    #[error("recipe pack table {n} (contexts of {n} tokens), entry {index}: {reason}")]
    BadEntry {
        /// Context length of the table.
        n: usize,
        /// Entry index.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Mining parameters out of range.
    #[error("recipe mining parameters: {0}")]
    BadParams(String),
}

/// Mining thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MineParams {
    /// Longest context, 1 to [`MAX_CONTEXT`].
    pub max_context: u8,
    /// A continuation must be seen at least this many times.
    pub min_count: u32,
    /// …and make at least this share of the context's continuations.
    pub min_share: f32,
}

impl Default for MineParams {
    fn default() -> Self {
        Self {
            max_context: 4,
            min_count: 2,
            min_share: 0.8,
        }
    }
}

impl MineParams {
    fn check(&self) -> Result<(), RecipeError> {
        if !(1..=MAX_CONTEXT as u8).contains(&self.max_context) {
            return Err(RecipeError::BadParams(format!(
                "max_context must be 1 to {MAX_CONTEXT}, got {}",
                self.max_context
            )));
        }
        if self.min_count == 0 {
            return Err(RecipeError::BadParams(
                "min_count must be at least 1".into(),
            ));
        }
        if !(self.min_share > 0.0 && self.min_share <= 1.0) {
            return Err(RecipeError::BadParams(format!(
                "min_share must be in (0, 1], got {}",
                self.min_share
            )));
        }
        Ok(())
    }
}

/// One table: every context of `n` tokens, sorted, with its next token and
/// how often that continuation was seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Table {
    n: usize,
    contexts: Vec<u32>,
    next: Vec<u32>,
    count: Vec<u32>,
}

impl Table {
    fn len(&self) -> usize {
        self.next.len()
    }

    fn context(&self, i: usize) -> &[u32] {
        &self.contexts[i * self.n..(i + 1) * self.n]
    }

    fn lookup(&self, key: &[u32]) -> Option<u32> {
        debug_assert_eq!(key.len(), self.n);
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.context(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.next[mid]),
            }
        }
        None
    }
}

/// Entry counts and mining statistics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackStats {
    /// Entries per context length 1..=4.
    pub entries: [u32; MAX_CONTEXT],
    /// Total entries.
    pub total_entries: u64,
    /// Sequences mined.
    pub sequences: u32,
    /// Tokens mined.
    pub tokens: u64,
}

/// Coverage of a pack on reference token sequences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    /// Positions where the pack drafted a token.
    pub drafted: u64,
    /// Positions where the drafted token was the reference's.
    pub correct: u64,
    /// Positions counted: every token after the first of each sequence.
    pub positions: u64,
    /// `correct / positions` (0 when there are no positions).
    pub share: f64,
}

/// A recipe pack.
#[derive(Clone, Debug, PartialEq)]
pub struct RecipePack {
    params: MineParams,
    tables: [Table; MAX_CONTEXT],
    sequences: u32,
    tokens: u64,
}

impl RecipePack {
    /// Mines a pack from accepted outputs tokenized by `tokenizer`.
    pub fn mine<'a>(
        outputs: impl IntoIterator<Item = &'a str>,
        tokenizer: &dyn Tokenize,
        params: MineParams,
    ) -> Result<RecipePack, RecipeError> {
        let seqs: Vec<Vec<u32>> = outputs.into_iter().map(|o| tokenizer.tokenize(o)).collect();
        Self::mine_tokens(&seqs, params)
    }

    /// Mines a pack from token sequences: for every position and every
    /// context length n ≤ `max_context`, the n tokens before it count one
    /// continuation. A context is kept with its most frequent continuation
    /// (ties: the smaller token id) when that continuation was seen at least
    /// `min_count` times and makes at least `min_share` of the context's
    /// continuations.
    pub fn mine_tokens(seqs: &[Vec<u32>], params: MineParams) -> Result<RecipePack, RecipeError> {
        params.check()?;
        let max = params.max_context as usize;
        let mut counts: [HashMap<&[u32], HashMap<u32, u32>>; MAX_CONTEXT] = Default::default();
        let mut tokens = 0u64;
        for s in seqs {
            tokens += s.len() as u64;
            for i in 1..s.len() {
                for n in 1..=max.min(i) {
                    *counts[n - 1]
                        .entry(&s[i - n..i])
                        .or_default()
                        .entry(s[i])
                        .or_default() += 1;
                }
            }
        }
        let mut tables: [Table; MAX_CONTEXT] = Default::default();
        for (n0, map) in counts.iter().enumerate() {
            let mut kept: Vec<(&[u32], u32, u32)> = map
                .iter()
                .filter_map(|(ctx, nexts)| {
                    let total: u64 = nexts.values().map(|c| u64::from(*c)).sum();
                    let (next, count) = nexts
                        .iter()
                        .map(|(t, c)| (*t, *c))
                        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
                    let share = f64::from(count) / total as f64;
                    (count >= params.min_count && share >= f64::from(params.min_share))
                        .then_some((*ctx, next, count))
                })
                .collect();
            kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let t = &mut tables[n0];
            t.n = n0 + 1;
            for (ctx, next, count) in kept {
                t.contexts.extend_from_slice(ctx);
                t.next.push(next);
                t.count.push(count);
            }
        }
        Ok(RecipePack {
            params,
            tables,
            sequences: u32::try_from(seqs.len()).unwrap_or(u32::MAX),
            tokens,
        })
    }

    /// `self` grown by `older`: every context of either pack, with `self`'s
    /// continuation where both have one (a recompile mines `self` from newer
    /// answers) and `older`'s where only it has one. So a recompiled
    /// artifact's pack keeps every recipe of the version it came from: it
    /// only grows. The counts of sequences and tokens add up; the mining
    /// parameters are `self`'s, with the longer of the two context limits.
    pub fn grown_by(&self, older: &RecipePack) -> RecipePack {
        let tables = std::array::from_fn(|i| {
            let (new, old) = (&self.tables[i], &older.tables[i]);
            let n = i + 1;
            let mut t = Table {
                n,
                ..Table::default()
            };
            let (mut a, mut b) = (0, 0);
            let push = |t: &mut Table, from: &Table, j: usize| {
                t.contexts.extend_from_slice(from.context(j));
                t.next.push(from.next[j]);
                t.count.push(from.count[j]);
            };
            while a < new.len() || b < old.len() {
                let order = match (a < new.len(), b < old.len()) {
                    (true, true) => new.context(a).cmp(old.context(b)),
                    (true, false) => std::cmp::Ordering::Less,
                    _ => std::cmp::Ordering::Greater,
                };
                match order {
                    std::cmp::Ordering::Less => {
                        push(&mut t, new, a);
                        a += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        push(&mut t, old, b);
                        b += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        push(&mut t, new, a);
                        a += 1;
                        b += 1;
                    }
                }
            }
            t
        });
        RecipePack {
            params: MineParams {
                max_context: self.params.max_context.max(older.params.max_context),
                ..self.params
            },
            tables,
            sequences: self.sequences.saturating_add(older.sequences),
            tokens: self.tokens.saturating_add(older.tokens),
        }
    }

    /// Whether every context of `older` is in `self` (what [`grown_by`]
    /// guarantees).
    ///
    /// [`grown_by`]: Self::grown_by
    pub fn contains_every_context_of(&self, older: &RecipePack) -> bool {
        older
            .tables
            .iter()
            .zip(&self.tables)
            .all(|(old, new)| (0..old.len()).all(|j| new.lookup(old.context(j)).is_some()))
    }

    /// The mining parameters.
    pub fn params(&self) -> MineParams {
        self.params
    }

    /// Entry counts and mining statistics.
    pub fn stats(&self) -> PackStats {
        let entries = std::array::from_fn(|i| self.tables[i].len() as u32);
        PackStats {
            entries,
            total_entries: entries.iter().map(|e| u64::from(*e)).sum(),
            sequences: self.sequences,
            tokens: self.tokens,
        }
    }

    /// The continuation of `context` by the longest matching context, or
    /// `None`.
    pub fn next_token(&self, context: &[u32]) -> Option<u32> {
        let max = (self.params.max_context as usize).min(context.len());
        (1..=max)
            .rev()
            .find_map(|n| self.tables[n - 1].lookup(&context[context.len() - n..]))
    }

    /// Drafts up to `max_draft` tokens after `context`: repeatedly the
    /// continuation of the longest matching context (4 tokens first, then 3,
    /// 2, 1), each drafted token extending the context; stops at the first
    /// position with no match.
    pub fn draft(&self, context: &[u32], max_draft: usize) -> Vec<u32> {
        let keep = MAX_CONTEXT.min(context.len());
        let mut buf: Vec<u32> = context[context.len() - keep..].to_vec();
        let mut out = Vec::new();
        while out.len() < max_draft {
            match self.next_token(&buf) {
                Some(t) => {
                    out.push(t);
                    buf.push(t);
                }
                None => break,
            }
        }
        out
    }

    /// The share of reference tokens the pack alone would have drafted
    /// correctly: at every position after the first of each sequence, the
    /// pack drafts one token from the true preceding tokens.
    pub fn coverage(&self, references: &[Vec<u32>]) -> Coverage {
        let (mut drafted, mut correct, mut positions) = (0u64, 0u64, 0u64);
        for s in references {
            for i in 1..s.len() {
                positions += 1;
                if let Some(t) = self.next_token(&s[..i]) {
                    drafted += 1;
                    correct += u64::from(t == s[i]);
                }
            }
        }
        Coverage {
            drafted,
            correct,
            positions,
            share: if positions == 0 {
                0.0
            } else {
                correct as f64 / positions as f64
            },
        }
    }

    /// The [`coverage`](Self::coverage) share of one answer's tokens;
    /// `None` for an answer of fewer than two tokens (nothing to predict).
    /// The drift log's recipe figure, at compile and at run time.
    pub fn answer_coverage(&self, tokens: &[u32]) -> Option<f64> {
        (tokens.len() >= 2).then(|| self.coverage(&[tokens.to_vec()]).share)
    }

    /// The pack in the binary format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stats = self.stats();
        let body: usize = self.tables.iter().map(|t| t.len() * (t.n + 2) * 4).sum();
        let mut out = Vec::with_capacity(HEADER_LEN + body);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(self.params.max_context);
        out.push(0);
        out.extend_from_slice(&self.params.min_count.to_le_bytes());
        out.extend_from_slice(&self.params.min_share.to_le_bytes());
        for e in stats.entries {
            out.extend_from_slice(&e.to_le_bytes());
        }
        out.extend_from_slice(&self.sequences.to_le_bytes());
        out.extend_from_slice(&self.tokens.to_le_bytes());
        debug_assert_eq!(out.len(), HEADER_LEN);
        for t in &self.tables {
            for i in 0..t.len() {
                for tok in t.context(i) {
                    out.extend_from_slice(&tok.to_le_bytes());
                }
                out.extend_from_slice(&t.next[i].to_le_bytes());
                out.extend_from_slice(&t.count[i].to_le_bytes());
            }
        }
        out
    }

    /// Reads a pack, validating every bound; refuses malformed input with a
    /// [`RecipeError`] and never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<RecipePack, RecipeError> {
        let have = bytes.len() as u64;
        if bytes.len() < HEADER_LEN {
            if bytes.len() >= 8 && bytes[..8] != MAGIC {
                return Err(RecipeError::BadMagic);
            }
            return Err(RecipeError::Truncated {
                need: HEADER_LEN as u64,
                have,
            });
        }
        if bytes[..8] != MAGIC {
            return Err(RecipeError::BadMagic);
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(RecipeError::Version { found: version });
        }
        let params = MineParams {
            max_context: bytes[10],
            min_count: u32_at(12),
            min_share: f32::from_bits(u32_at(16)),
        };
        if bytes[11] != 0 {
            return Err(RecipeError::BadHeader("reserved byte is not zero".into()));
        }
        params
            .check()
            .map_err(|e| RecipeError::BadHeader(e.to_string()))?;
        let entries: [u32; MAX_CONTEXT] = std::array::from_fn(|i| u32_at(20 + 4 * i));
        for (i, e) in entries.iter().enumerate() {
            if i + 1 > params.max_context as usize && *e != 0 {
                return Err(RecipeError::BadHeader(format!(
                    "{e} entries of context length {} but max_context is {}",
                    i + 1,
                    params.max_context
                )));
            }
        }
        let sequences = u32_at(36);
        let tokens = u64::from_le_bytes(bytes[40..48].try_into().expect("8 bytes"));
        let need = entries
            .iter()
            .enumerate()
            .map(|(i, e)| u64::from(*e) * (i as u64 + 3) * 4)
            .sum::<u64>()
            + HEADER_LEN as u64;
        if have < need {
            return Err(RecipeError::Truncated { need, have });
        }
        if have > need {
            return Err(RecipeError::TrailingBytes { extra: have - need });
        }
        let mut off = HEADER_LEN;
        let mut tables: [Table; MAX_CONTEXT] = Default::default();
        for (i, t) in tables.iter_mut().enumerate() {
            let n = i + 1;
            let len = entries[i] as usize;
            t.n = n;
            t.contexts.reserve_exact(len * n);
            t.next.reserve_exact(len);
            t.count.reserve_exact(len);
            for index in 0..len {
                for _ in 0..n {
                    t.contexts.push(u32_at(off));
                    off += 4;
                }
                t.next.push(u32_at(off));
                let count = u32_at(off + 4);
                off += 8;
                if count < params.min_count {
                    return Err(RecipeError::BadEntry {
                        n,
                        index,
                        reason: "count below min_count",
                    });
                }
                t.count.push(count);
                if index > 0 && t.context(index - 1) >= t.context(index) {
                    return Err(RecipeError::BadEntry {
                        n,
                        index,
                        reason: "contexts are not strictly ascending",
                    });
                }
            }
        }
        Ok(RecipePack {
            params,
            tables,
            sequences,
            tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One token per byte: enough to test mining without a model.
    fn bytes_tok(text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    #[test]
    fn mines_deterministic_continuations_only() {
        // "ab" is always followed by "c"; "x" is followed by "y" or "z".
        let seqs = vec![
            vec![1, 2, 3, 9],
            vec![1, 2, 3, 8],
            vec![5, 1, 2, 3],
            vec![7, 4, 7, 6],
        ];
        let p = RecipePack::mine_tokens(
            &seqs,
            MineParams {
                max_context: 2,
                min_count: 2,
                min_share: 0.6,
            },
        )
        .unwrap();
        assert_eq!(p.next_token(&[1]), Some(2));
        assert_eq!(p.next_token(&[1, 2]), Some(3));
        assert_eq!(p.next_token(&[3]), None, "3 → 9 or 8: seen once each");
        assert_eq!(p.next_token(&[7]), None, "7 → 4 or 6: no majority");
        assert_eq!(p.draft(&[0, 0, 1], 5), vec![2, 3]);
        assert_eq!(p.stats().entries, [2, 1, 0, 0]);
        assert_eq!(p.stats().tokens, 16);
    }

    #[test]
    fn a_grown_pack_keeps_every_old_recipe_and_prefers_the_new_ones() {
        let params = MineParams {
            max_context: 2,
            min_count: 1,
            min_share: 0.5,
        };
        let old = RecipePack::mine_tokens(&[vec![1, 2, 3], vec![7, 8]], params).unwrap();
        let new = RecipePack::mine_tokens(&[vec![1, 2, 4], vec![5, 6]], params).unwrap();
        let grown = new.grown_by(&old);
        assert!(grown.contains_every_context_of(&old));
        assert!(grown.contains_every_context_of(&new));
        assert!(
            !new.contains_every_context_of(&old),
            "7 → 8 is only in the old pack"
        );
        assert_eq!(grown.next_token(&[7]), Some(8), "kept from the old pack");
        assert_eq!(grown.next_token(&[5]), Some(6), "from the new pack");
        assert_eq!(
            grown.next_token(&[1, 2]),
            Some(4),
            "both have it: the new wins"
        );
        assert_eq!(grown.stats().sequences, 4);
        // It still writes a valid pack.
        let back = RecipePack::from_bytes(&grown.to_bytes()).unwrap();
        assert_eq!(back, grown);
    }

    #[test]
    fn longest_context_wins() {
        // After "1 2", 3 follows; after just "2" (from "5 2"), 4 follows more often overall.
        let seqs = vec![
            vec![1, 2, 3],
            vec![1, 2, 3],
            vec![5, 2, 4],
            vec![5, 2, 4],
            vec![6, 2, 4],
            vec![6, 2, 4],
            vec![6, 2, 4],
        ];
        let p = RecipePack::mine_tokens(
            &seqs,
            MineParams {
                max_context: 4,
                min_count: 2,
                min_share: 0.5,
            },
        )
        .unwrap();
        assert_eq!(p.next_token(&[2]), Some(4));
        assert_eq!(p.next_token(&[1, 2]), Some(3));
        assert_eq!(p.draft(&[9, 1, 2], 1), vec![3]);
        assert_eq!(p.draft(&[9, 9, 2], 1), vec![4]);
    }

    #[test]
    fn coverage_counts_correct_drafts() {
        let text = ["{\"a\":1}", "{\"a\":2}", "{\"a\":3}"];
        let p = RecipePack::mine(text, &bytes_tok, MineParams::default()).unwrap();
        let c = p.coverage(&[bytes_tok("{\"a\":4}")]);
        // Positions: 6 ("\"a\":4}"); drafted correctly: '"', 'a', '"', ':' ; the digit and '}' after 4 are unseen.
        assert_eq!(c.positions, 6);
        assert_eq!(c.correct, 4);
        assert!((c.share - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(p.coverage(&[]).share, 0.0);
    }

    #[test]
    fn round_trips_and_refuses_bad_input() {
        let text = [
            "the cat sat on the mat",
            "the cat sat on the hat",
            "the cat ran",
        ];
        let p = RecipePack::mine(text, &bytes_tok, MineParams::default()).unwrap();
        let b = p.to_bytes();
        assert_eq!(&b[..8], b"KOLMRCP\0");
        let q = RecipePack::from_bytes(&b).unwrap();
        assert_eq!(p, q);
        assert_eq!(q.to_bytes(), b);

        assert!(matches!(
            RecipePack::from_bytes(&b[..20]),
            Err(RecipeError::Truncated { .. })
        ));
        assert!(matches!(
            RecipePack::from_bytes(&b[..b.len() - 1]),
            Err(RecipeError::Truncated { .. })
        ));
        let mut x = b.clone();
        x.push(0);
        assert_eq!(
            RecipePack::from_bytes(&x),
            Err(RecipeError::TrailingBytes { extra: 1 })
        );
        let mut x = b.clone();
        x[0] = b'X';
        assert_eq!(RecipePack::from_bytes(&x), Err(RecipeError::BadMagic));
        let mut x = b.clone();
        x[8] = 2;
        assert_eq!(
            RecipePack::from_bytes(&x),
            Err(RecipeError::Version { found: 2 })
        );
        let mut x = b.clone();
        x[10] = 9;
        assert!(matches!(
            RecipePack::from_bytes(&x),
            Err(RecipeError::BadHeader(_))
        ));
        // Swap the first two entries of the 1-token table: unsorted.
        let mut x = b.clone();
        let (e0, e1) = (HEADER_LEN, HEADER_LEN + 12);
        let first: Vec<u8> = x[e0..e0 + 12].to_vec();
        x.copy_within(e1..e1 + 12, e0);
        x[e1..e1 + 12].copy_from_slice(&first);
        let e = RecipePack::from_bytes(&x).unwrap_err();
        assert!(
            matches!(e, RecipeError::BadEntry { n: 1, index: 1, .. }),
            "{e}"
        );
        // A huge declared count must not allocate or panic.
        let mut x = b.clone();
        x[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            RecipePack::from_bytes(&x),
            Err(RecipeError::Truncated { .. })
        ));
    }

    #[test]
    fn bad_params_are_refused() {
        for p in [
            MineParams {
                max_context: 0,
                ..Default::default()
            },
            MineParams {
                max_context: 5,
                ..Default::default()
            },
            MineParams {
                min_count: 0,
                ..Default::default()
            },
            MineParams {
                min_share: 0.0,
                ..Default::default()
            },
            MineParams {
                min_share: f32::NAN,
                ..Default::default()
            },
        ] {
            assert!(RecipePack::mine_tokens(&[], p).is_err(), "{p:?}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = RecipePack::from_bytes(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = RecipePack::from_bytes(&with_magic);
        }

        #[test]
        fn mutated_packs_never_panic(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let p = RecipePack::mine(["abcabcabd", "abcabd", "xyzxyz"], &bytes_tok, MineParams { min_share: 0.5, ..Default::default() }).unwrap();
            let mut b = p.to_bytes();
            for (i, v) in flips {
                let at = i % b.len();
                b[at] = v;
            }
            if let Ok(q) = RecipePack::from_bytes(&b) {
                // Whatever parses must re-encode to the same bytes.
                prop_assert_eq!(q.to_bytes(), b);
                let _ = q.draft(&[97, 98], 8);
            }
        }

        #[test]
        fn drafts_are_mined_continuations(seqs in prop::collection::vec(prop::collection::vec(0u32..6, 0..20), 0..8), ctx in prop::collection::vec(0u32..6, 0..6)) {
            let p = RecipePack::mine_tokens(&seqs, MineParams::default()).unwrap();
            let d = p.draft(&ctx, 6);
            prop_assert!(d.len() <= 6);
            let mut buf = ctx.clone();
            for t in d {
                prop_assert_eq!(p.next_token(&buf), Some(t));
                buf.push(t);
            }
            let c = p.coverage(&seqs);
            prop_assert!(c.correct <= c.drafted && c.drafted <= c.positions);
        }
    }
}
