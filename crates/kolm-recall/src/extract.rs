//! Text extraction: the visible text of HTML, the text of each PDF page,
//! and records of JSON, JSON Lines and CSV flattened to `key: value` lines.

use std::fmt::Write as _;

/// The visible text of an HTML document. Scripts, styles and comments are
/// dropped; block elements become line breaks, headings become Markdown
/// headings (so chunking splits on them), `<pre>` keeps its whitespace and
/// character references are decoded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut pre_depth = 0usize;
    let mut pending_space = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |i| &after[i + 3..]);
            continue;
        }
        if rest.starts_with('<') {
            let Some(end) = tag_end(rest) else {
                // A lone `<`: text.
                push_text(&mut out, "<", pre_depth > 0, &mut pending_space);
                rest = &rest[1..];
                continue;
            };
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches(['/', '!', '?'])
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if !closing
                && matches!(
                    name.as_str(),
                    "script" | "style" | "noscript" | "template" | "svg"
                )
            {
                // Skip to the matching close tag.
                let close = format!("</{name}");
                let lower = rest.to_ascii_lowercase();
                rest = match lower.find(&close) {
                    Some(i) => {
                        let after = &rest[i..];
                        after.find('>').map_or("", |j| &after[j + 1..])
                    }
                    None => "",
                };
                continue;
            }
            match name.as_str() {
                "pre" if closing => pre_depth = pre_depth.saturating_sub(1),
                "pre" => {
                    pre_depth += 1;
                    block_break(&mut out, &mut pending_space);
                }
                "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                    block_break(&mut out, &mut pending_space);
                    if !closing {
                        let level = usize::from(name.as_bytes()[1] - b'0');
                        out.push_str(&"#".repeat(level));
                        out.push(' ');
                    }
                }
                "br" => {
                    trim_trailing_spaces(&mut out);
                    out.push('\n');
                    pending_space = false;
                }
                "p" | "div" | "section" | "article" | "header" | "footer" | "main" | "nav"
                | "aside" | "li" | "ul" | "ol" | "dl" | "dt" | "dd" | "tr" | "table"
                | "blockquote" | "figure" | "figcaption" | "hr" | "title" | "form" | "details"
                | "summary" | "address" | "body" | "head" | "html" => {
                    block_break(&mut out, &mut pending_space);
                }
                "td" | "th" => pending_space = true,
                _ => {}
            }
            continue;
        }
        let next = rest.find('<').unwrap_or(rest.len());
        let text = decode_entities(&rest[..next]);
        push_text(&mut out, &text, pre_depth > 0, &mut pending_space);
        rest = &rest[next..];
    }
    let mut text = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !text.is_empty() {
            text.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        text.push_str(line);
    }
    text
}

/// The index of the `>` that ends the tag at the start of `s`, honouring
/// quoted attribute values; `None` when `s` does not start a tag.
fn tag_end(s: &str) -> Option<usize> {
    let second = s[1..].chars().next()?;
    if !(second.is_ascii_alphabetic() || matches!(second, '/' | '!' | '?')) {
        return None;
    }
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn block_break(out: &mut String, pending_space: &mut bool) {
    trim_trailing_spaces(out);
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
    }
    *pending_space = false;
}

fn trim_trailing_spaces(out: &mut String) {
    while out.ends_with(' ') || out.ends_with('\t') {
        out.pop();
    }
}

fn push_text(out: &mut String, text: &str, pre: bool, pending_space: &mut bool) {
    if pre {
        out.push_str(text);
        return;
    }
    for (i, word) in text.split_whitespace().enumerate() {
        let space_before = i > 0 || *pending_space || text.starts_with(char::is_whitespace);
        if space_before && !out.is_empty() && !out.ends_with(['\n', ' ']) {
            out.push(' ');
        }
        out.push_str(word);
        *pending_space = false;
    }
    if text.ends_with(char::is_whitespace) {
        *pending_space = true;
    }
}

/// Decodes character references (`&amp;`, `&#233;`, `&#xE9;` and the common
/// named ones); unknown references stay as written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest[1..].find(';').map(|j| j + 1).filter(|&j| j <= 12);
        let decoded = end.and_then(|j| {
            let name = &rest[1..j];
            let c = if let Some(num) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                u32::from_str_radix(num, 16).ok().and_then(char::from_u32)
            } else if let Some(num) = name.strip_prefix('#') {
                num.parse::<u32>().ok().and_then(char::from_u32)
            } else {
                named_entity(name)
            };
            c.map(|c| (c, j))
        });
        match decoded {
            Some((c, j)) => {
                out.push(c);
                rest = &rest[j + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "mdash" => '—',
        "ndash" => '–',
        "hellip" => '…',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "middot" => '·',
        "bull" => '•',
        "deg" => '°',
        "euro" => '€',
        "pound" => '£',
        "eacute" => 'é',
        "egrave" => 'è',
        "agrave" => 'à',
        "uuml" => 'ü',
        "ouml" => 'ö',
        "auml" => 'ä',
        "szlig" => 'ß',
        "times" => '×',
        _ => return None,
    })
}

/// The text of each page of a PDF, first page first. pdf-extract panics on
/// some malformed files; a panic is turned into an error.
pub fn pdf_pages(bytes: &[u8]) -> Result<Vec<String>, String> {
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes));
    match result {
        Ok(Ok(pages)) => Ok(pages),
        Ok(Err(e)) => Err(format!("cannot extract text from the PDF: {e}")),
        Err(_) => Err("cannot extract text from the PDF: the extractor failed on it".into()),
    }
}

/// A JSON value as `key: value` lines (nested keys joined with `.`, array
/// items indexed), the form records are embedded and searched in.
pub fn flatten_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    flatten_into(&mut out, "", value);
    out.trim_end().to_owned()
}

fn flatten_into(out: &mut String, prefix: &str, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_into(out, &key, v);
            }
        }
        Value::Array(items) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            let joined: Vec<String> = items.iter().map(scalar).collect();
            line(out, prefix, &joined.join(", "));
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten_into(out, &format!("{prefix}[{i}]"), v);
            }
        }
        other => line(out, prefix, &scalar(other)),
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn line(out: &mut String, key: &str, value: &str) {
    if key.is_empty() {
        let _ = writeln!(out, "{value}");
    } else {
        let _ = writeln!(out, "{key}: {value}");
    }
}

/// A CSV record parser (RFC 4180: quoted fields, doubled quotes, line breaks
/// inside quotes) fed one line at a time, so huge files stream.
#[derive(Debug, Default)]
pub struct CsvRecords {
    field: String,
    fields: Vec<String>,
    in_quotes: bool,
}

impl CsvRecords {
    /// Feeds one line (with its line break, if any). Returns the record when
    /// the line completes one.
    pub fn push_line(&mut self, line: &str) -> Option<Vec<String>> {
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (self.in_quotes, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    self.field.push('"');
                }
                (true, '"') => self.in_quotes = false,
                (true, c) => self.field.push(c),
                (false, '"') if self.field.is_empty() => self.in_quotes = true,
                (false, ',') => self.fields.push(std::mem::take(&mut self.field)),
                (false, '\r' | '\n') => {}
                (false, c) => self.field.push(c),
            }
        }
        if self.in_quotes {
            return None;
        }
        self.fields.push(std::mem::take(&mut self.field));
        Some(std::mem::take(&mut self.fields))
    }

    /// The record left open at the end of the input (an unclosed quote).
    pub fn finish(&mut self) -> Option<Vec<String>> {
        if self.field.is_empty() && self.fields.is_empty() {
            return None;
        }
        self.in_quotes = false;
        self.fields.push(std::mem::take(&mut self.field));
        Some(std::mem::take(&mut self.fields))
    }
}

/// A CSV row as `column: value` lines under the header.
pub fn csv_record(header: &[String], row: &[String]) -> String {
    let mut out = String::new();
    for (i, value) in row.iter().enumerate() {
        if value.is_empty() {
            continue;
        }
        match header.get(i) {
            Some(h) if !h.is_empty() => line(&mut out, h, value),
            _ => line(&mut out, &format!("column{}", i + 1), value),
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_text() {
        let html = "<html><head><title>T</title><style>p{color:red}</style>\
            <script>var x = '<p>no</p>';</script></head><body>\
            <h1>Big &amp; bold</h1><p>One\n  two</p><!-- hidden --><p>caf&eacute; &#8364;5 &#x41;</p>\
            <pre>a  b\n c</pre></body></html>";
        let text = html_to_text(html);
        assert_eq!(
            text,
            "T\n\n# Big & bold\n\nOne two\n\ncafé €5 A\n\na  b\n c"
        );
    }

    #[test]
    fn csv_quotes_and_breaks() {
        let mut p = CsvRecords::default();
        assert_eq!(
            p.push_line("a,\"b, c\",d\n"),
            Some(vec!["a".into(), "b, c".into(), "d".into()])
        );
        assert_eq!(p.push_line("\"x\"\"y\",\"multi\n"), None);
        assert_eq!(
            p.push_line("line\"\n"),
            Some(vec!["x\"y".into(), "multi\nline".into()])
        );
    }

    #[test]
    fn json_flattened() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"name":"Ada","tags":["x","y"],"addr":{"city":"London"}}"#)
                .unwrap();
        // Key order follows serde_json's map (sorted, or insertion order
        // with `preserve_order`, which the workspace turns on).
        let flat = flatten_json(&v);
        let mut lines: Vec<&str> = flat.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, vec!["addr.city: London", "name: Ada", "tags: x, y"]);
    }
}
