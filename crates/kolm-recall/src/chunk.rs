//! Token-aware chunking. A segment of text is cut into chunks of at most
//! `max_tokens` tokens of the embedder's tokenizer, preferring to end a chunk
//! where a structural block ends (a Markdown heading, a blank line between
//! paragraphs, a fenced code block, a top-level definition in source), with
//! `overlap` tokens repeated between consecutive chunks.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::embed::Embedder;
use crate::error::{RecallError, Result};
use crate::kind::Kind;

/// Size and overlap of chunks, in tokens of the embedder's tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkOptions {
    pub max_tokens: usize,
    pub overlap: usize,
}

impl Default for ChunkOptions {
    /// 200 tokens (MiniLM reads 256 with its special tokens), 32 overlap.
    fn default() -> Self {
        ChunkOptions {
            max_tokens: 200,
            overlap: 32,
        }
    }
}

impl ChunkOptions {
    /// Checks the options against the embedder's input length.
    pub fn check(&self, embedder_max: usize) -> Result<()> {
        if self.max_tokens < 8 || self.max_tokens + 2 > embedder_max {
            return Err(RecallError::InvalidOption(format!(
                "chunk size must be between 8 and {} tokens (the embedder reads {embedder_max} with its two special tokens), not {}",
                embedder_max.saturating_sub(2),
                self.max_tokens
            )));
        }
        if self.overlap * 2 > self.max_tokens {
            return Err(RecallError::InvalidOption(format!(
                "overlap ({}) must be at most half the chunk size ({})",
                self.overlap, self.max_tokens
            )));
        }
        Ok(())
    }
}

/// A piece of a document's text, before chunking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    /// Byte offset of `text` in the document's text (the file for text
    /// kinds, the extracted text for HTML, the page's text for PDF).
    pub start: u64,
    /// 1-based page (PDF).
    pub page: Option<u32>,
    /// 0-based record (JSON element, JSONL line, CSV row after the header).
    pub record: Option<u64>,
}

/// A chunk ready to embed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub text: String,
    /// Byte range in the document's text (see [`Segment::start`]).
    pub start: u64,
    pub end: u64,
    pub page: Option<u32>,
    pub record: Option<u64>,
    /// SHA-256 of `text`, lower-case hex.
    pub digest: String,
}

/// Cuts `segment` into chunks.
pub fn chunk_segment(
    segment: &Segment,
    kind: Kind,
    embedder: &dyn Embedder,
    options: ChunkOptions,
) -> Result<Vec<Chunk>> {
    let text = segment.text.as_str();
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let spans = embedder.token_spans(text)?;
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    let breaks = block_starts(text, kind);
    // is_break[i]: a block starts at token i (the first token at or after
    // the block's first byte).
    let mut is_break = vec![false; spans.len() + 1];
    for &b in &breaks {
        let i = spans.partition_point(|sp| sp.start < b);
        if i > 0 && i < spans.len() {
            is_break[i] = true;
        }
    }
    is_break[spans.len()] = true;
    let n = spans.len();
    let max = options.max_tokens;
    let mut chunks = Vec::new();
    let mut s = 0;
    loop {
        let mut e = (s + max).min(n);
        if e < n {
            // Prefer the last block boundary in the second half of the window.
            if let Some(bp) = (s + max / 2 + 1..=e).rev().find(|&i| is_break[i]) {
                e = bp;
            }
        }
        let range = byte_range(text, &spans, s..e);
        push_chunk(&mut chunks, segment, range);
        if e >= n {
            break;
        }
        // Overlap only when the cut is inside a block.
        s = if is_break[e] {
            e
        } else {
            (e - options.overlap).max(s + 1)
        };
    }
    Ok(chunks)
}

fn byte_range(text: &str, spans: &[Range<usize>], tokens: Range<usize>) -> Range<usize> {
    let start = spans[tokens.start].start;
    // Extend to the start of the next token so punctuation and whitespace
    // between tokens stay in the chunk (trimmed later).
    let end = spans
        .get(tokens.end)
        .map_or(text.len(), |next| next.start)
        .max(spans[tokens.end - 1].end);
    start..end
}

fn push_chunk(chunks: &mut Vec<Chunk>, segment: &Segment, range: Range<usize>) {
    let raw = &segment.text[range.clone()];
    let trimmed_start = raw.len() - raw.trim_start().len();
    let body = raw.trim();
    if body.is_empty() {
        return;
    }
    let start = range.start + trimmed_start;
    let end = start + body.len();
    chunks.push(Chunk {
        text: body.to_owned(),
        start: segment.start + start as u64,
        end: segment.start + end as u64,
        page: segment.page,
        record: segment.record,
        digest: hex::encode(Sha256::digest(body.as_bytes())),
    });
}

/// Byte offsets where a structural block starts, ascending.
fn block_starts(text: &str, kind: Kind) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut offset = 0;
    let mut prev_blank = true;
    let mut prev_close = false;
    let mut in_fence = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let blank = trimmed.trim().is_empty();
        let fence = trimmed.starts_with("```") || trimmed.starts_with("~~~");
        let heading = matches!(kind, Kind::Markdown | Kind::Html)
            && trimmed.starts_with('#')
            && trimmed.trim_start_matches('#').starts_with(' ');
        let definition = kind == Kind::Source
            && !line.starts_with(char::is_whitespace)
            && !blank
            && !trimmed.starts_with('}')
            && !trimmed.starts_with(')');
        if fence {
            if !in_fence {
                starts.push(offset);
            } else {
                // The block after a fence starts on the next line.
                starts.push(offset + line.len());
            }
            in_fence = !in_fence;
        } else if !in_fence && !blank && (prev_blank || heading || (definition && prev_close)) {
            // A top-level definition right after a closing brace starts a
            // block even without a blank line between them.
            starts.push(offset);
        }
        prev_blank = blank;
        prev_close = !line.starts_with(char::is_whitespace) && trimmed.starts_with('}');
        offset += line.len();
    }
    starts.sort_unstable();
    starts.dedup();
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_of_markdown() {
        let text = "# A\npara one\nstill one\n\npara two\n```\ncode\n\nmore code\n```\nafter\n";
        let starts = block_starts(text, Kind::Markdown);
        let lines: Vec<&str> = starts
            .iter()
            .map(|&s| text[s..].lines().next().unwrap())
            .collect();
        assert_eq!(lines, vec!["# A", "para two", "```", "after"]);
    }
}
