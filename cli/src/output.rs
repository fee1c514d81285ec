//! Human-readable formatting: sizes, short digests, aligned key/value lines
//! and tables. JSON output goes straight through serde_json.

use serde::Serialize;

/// `1.5 GB`-style size (decimal units, as `ls -h --si` and Ollama print).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `135M`-style parameter count.
pub fn params(count: u64) -> String {
    match count {
        c if c >= 1_000_000_000 => format!("{:.1}B", c as f64 / 1e9),
        c if c >= 1_000_000 => format!("{:.0}M", c as f64 / 1e6),
        c if c >= 1_000 => format!("{:.0}K", c as f64 / 1e3),
        c => c.to_string(),
    }
}

/// The first 12 hex digits of a digest.
pub fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Prints `key   value` lines with the values aligned.
pub fn fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
}

/// Prints a table with a header row, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_read_naturally() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(98_379_826), "98.4 MB");
        assert_eq!(params(134_515_008), "135M");
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
    }
}
