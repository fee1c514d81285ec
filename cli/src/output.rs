//! Human-readable formatting: sizes, short digests, aligned key/value lines
//! and tables. JSON output goes straight through serde_json.

use serde::Serialize;

/// Writes to stdout. A closed pipe (`kolmctl list | head`) ends kolmctl
/// quietly with status 0, as it ends any Unix tool, instead of the panic
/// `println!` would give; another write error ends it with status 1.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("kolmctl: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`write_stdout`].
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

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
        outln!("  {k:<width$}  {v}");
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
        outln!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
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
