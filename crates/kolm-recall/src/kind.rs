//! What a file is, judged from its content (magic bytes, then text
//! sniffing), with the extension only as a tie-breaker between text kinds.

use serde::{Deserialize, Serialize};

/// The kind of a corpus file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Plain UTF-8 text.
    Text,
    /// Markdown (headings and fenced code blocks guide chunking).
    Markdown,
    /// Source code (blank lines and top-level definitions guide chunking).
    Source,
    /// HTML: the visible text is extracted.
    Html,
    /// PDF: the text of each page is extracted, page numbers kept.
    Pdf,
    /// One JSON document; an array of objects becomes one record per element.
    Json,
    /// JSON Lines: one record per line.
    Jsonl,
    /// CSV with a header row: one record per row.
    Csv,
    /// An image (needs an image embedder).
    Image,
    /// Audio (needs an audio embedder).
    Audio,
    /// Video (needs a video embedder).
    Video,
    /// Anything else that is not text.
    Binary,
    /// A zero-byte file.
    Empty,
}

impl Kind {
    /// The lower-case name used in reports and the index.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Markdown => "markdown",
            Kind::Source => "source",
            Kind::Html => "html",
            Kind::Pdf => "pdf",
            Kind::Json => "json",
            Kind::Jsonl => "jsonl",
            Kind::Csv => "csv",
            Kind::Image => "image",
            Kind::Audio => "audio",
            Kind::Video => "video",
            Kind::Binary => "binary",
            Kind::Empty => "empty",
        }
    }

    /// The modality an embedder needs for this kind, when it is not text.
    pub fn media_modality(self) -> Option<crate::embed::Modality> {
        match self {
            Kind::Image => Some(crate::embed::Modality::Image),
            Kind::Audio => Some(crate::embed::Modality::Audio),
            Kind::Video => Some(crate::embed::Modality::Video),
            _ => None,
        }
    }
}

/// How many leading bytes [`detect`] looks at.
pub const SNIFF_LEN: usize = 8192;

const SOURCE_EXTENSIONS: &[&str] = &[
    "rs", "py", "js", "ts", "tsx", "jsx", "go", "c", "h", "cc", "cpp", "hpp", "java", "kt",
    "swift", "rb", "php", "cs", "scala", "sh", "bash", "zsh", "lua", "pl", "r", "sql", "toml",
    "yaml", "yml", "proto", "zig", "hs", "ml", "ex", "exs", "erl", "clj", "dart", "m", "mm",
];

/// Judges a file's kind from its first bytes (`head`, up to [`SNIFF_LEN`]),
/// its total size and its extension (lower-case, without the dot).
pub fn detect(head: &[u8], size: u64, extension: Option<&str>) -> Kind {
    if size == 0 {
        return Kind::Empty;
    }
    if head.starts_with(b"%PDF-") {
        return Kind::Pdf;
    }
    if let Some(t) = infer::get(head) {
        match t.matcher_type() {
            infer::MatcherType::Image => return Kind::Image,
            infer::MatcherType::Audio => return Kind::Audio,
            infer::MatcherType::Video => return Kind::Video,
            infer::MatcherType::Text => {}
            _ => {
                // infer calls some text formats (e.g. XML, shell scripts)
                // "text"; everything else it names is binary.
                if !looks_like_text(head) {
                    return Kind::Binary;
                }
            }
        }
    }
    if !looks_like_text(head) {
        return Kind::Binary;
    }
    let text = text_prefix(head);
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let lower: String = trimmed
        .chars()
        .take(256)
        .collect::<String>()
        .to_ascii_lowercase();
    if lower.starts_with("<!doctype html")
        || lower.starts_with("<html")
        || (lower.starts_with('<') && (lower.contains("<head") || lower.contains("<body")))
    {
        return Kind::Html;
    }
    let ext = extension.unwrap_or("");
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if looks_like_jsonl(trimmed) {
            return Kind::Jsonl;
        }
        if matches!(ext, "json" | "jsonl" | "ndjson" | "") || trimmed.starts_with('[') {
            return Kind::Json;
        }
    }
    if matches!(ext, "csv") || looks_like_csv(trimmed) {
        return Kind::Csv;
    }
    if matches!(ext, "md" | "markdown" | "mdx") || looks_like_markdown(trimmed) {
        return Kind::Markdown;
    }
    if matches!(ext, "html" | "htm" | "xhtml") && lower.contains('<') {
        return Kind::Html;
    }
    if SOURCE_EXTENSIONS.contains(&ext) || trimmed.starts_with("#!") {
        return Kind::Source;
    }
    Kind::Text
}

/// Whether `head` is text: valid UTF-8 (allowing a character cut at the
/// end), no NUL bytes and few control characters.
pub fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            // A multi-byte character cut by the end of the sniffed window.
            match std::str::from_utf8(&head[..e.valid_up_to()]) {
                Ok(t) => t,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    let control = text
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
        .count();
    control * 100 <= text.chars().count().max(1)
}

fn text_prefix(head: &[u8]) -> &str {
    match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or(""),
    }
}

fn looks_like_jsonl(text: &str) -> bool {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let complete: Vec<&str> = lines.by_ref().take(3).collect();
    if complete.len() < 2 {
        return false;
    }
    // The last line of the window may be cut; judge the first ones.
    complete[..complete.len() - 1]
        .iter()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.is_object()))
}

fn looks_like_csv(text: &str) -> bool {
    let lines: Vec<&str> = text.lines().take(6).collect();
    if lines.len() < 3 {
        return false;
    }
    let commas = lines[0].matches(',').count();
    commas >= 1
        && lines[..lines.len() - 1]
            .iter()
            .all(|l| l.matches(',').count() == commas)
}

fn looks_like_markdown(text: &str) -> bool {
    text.lines().take(200).any(|l| {
        let l = l.trim_start();
        (l.starts_with('#') && l.trim_start_matches('#').starts_with(' ')) || l.starts_with("```")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_content() {
        assert_eq!(detect(b"%PDF-1.4\n...", 10, Some("txt")), Kind::Pdf);
        assert_eq!(
            detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 20, Some("md")),
            Kind::Image
        );
        assert_eq!(detect(b"<!DOCTYPE html><p>hi", 20, Some("txt")), Kind::Html);
        assert_eq!(detect(b"# Title\n\nbody", 14, None), Kind::Markdown);
        assert_eq!(
            detect(b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n", 24, None),
            Kind::Jsonl
        );
        assert_eq!(detect(b"[{\"a\":1}]", 9, None), Kind::Json);
        assert_eq!(detect(b"a,b\n1,2\n3,4\n", 12, None), Kind::Csv);
        assert_eq!(detect(b"fn main() {}\n", 13, Some("rs")), Kind::Source);
        assert_eq!(detect(b"just words", 10, Some("rs.bak")), Kind::Text);
        assert_eq!(detect(b"\x7fELF\x02\x01\x01\0\0\0", 10, None), Kind::Binary);
        assert_eq!(detect(b"abc\0def", 7, Some("txt")), Kind::Binary);
        assert_eq!(detect(b"", 0, Some("txt")), Kind::Empty);
        assert_eq!(
            detect(b"\xff\xfe\xfa bad utf8", 10, Some("txt")),
            Kind::Binary
        );
    }
}
