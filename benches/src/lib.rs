//! Shared helpers for the kolm benchmarks.
//!
//! Every benchmark in this package compares kolm against a named anchor in
//! the same run on the same machine and reports a ratio: absolute times on a
//! shared box mean little, a ratio taken minutes apart on the same bytes does.
//!
//! What lives here:
//!
//! - [`kolmctl_path`], [`kolmd_path`]: where the release binaries are.
//! - [`measure`]: run a [`Command`] and record its wall time and the child's
//!   peak resident set size (through GNU `time`, so no unsafe code is needed
//!   to call `wait4`).
//! - [`median`], [`parse_size`], [`human_bytes`], [`mib_per_s`]: the small
//!   arithmetic every report needs.
//! - [`Table`]: a plain-text table printer.
//! - [`gguf`]: a synthetic GGUF v3 file generator, so a benchmark can make a
//!   valid model file of any size without downloading one.
//! - [`http`]: a small blocking HTTP/1.1 client that times server-sent events.
//! - [`daemon`]: a release kolmd started on loopback for a benchmark.
//! - [`teacher`]: a replayed teacher for benchmarks that compile.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod daemon;
pub mod gguf;
pub mod http;
pub mod teacher;

/// Environment variable that overrides where `kolmctl` is found.
pub const KOLMCTL_ENV: &str = "KOLMCTL";

/// Where GNU `time` is expected; [`measure`] uses it for the peak RSS.
pub const GNU_TIME: &str = "/usr/bin/time";

/// One mebibyte, the unit of every throughput and size this package prints.
pub const MIB: u64 = 1 << 20;

/// The environment variable `name` parsed as a `T`, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={s:?} is not valid")),
        Err(_) => Ok(default),
    }
}

/// The SmolLM2-135M-Instruct fixture, fetched by `scripts/fixtures.sh` if
/// it is missing.
pub fn smollm2_fixture() -> Result<PathBuf> {
    let script = workspace_root().join("scripts/fixtures.sh");
    let out = run_ok(Command::new(script).args(["--only", "smollm2", "--print-dir"]))?;
    let dir = String::from_utf8(out.stdout)?;
    Ok(Path::new(dir.trim()).join("SmolLM2-135M-Instruct.Q4_1.gguf"))
}

/// Where `scripts/llama-tools.sh` puts llama.cpp's own tools (it honours
/// `KOLM_LLAMA_TOOLS`); they are built by running the script.
pub fn llama_tools_dir() -> Result<PathBuf> {
    let script = workspace_root().join("scripts/llama-tools.sh");
    let out = run_ok(Command::new(&script).arg("--print-dir"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    anyhow::ensure!(!dir.is_empty(), "{} printed no directory", script.display());
    Ok(PathBuf::from(dir))
}

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Locates the release `kolmctl` binary.
///
/// Order: the `KOLMCTL` environment variable (taken as is), then
/// `$CARGO_TARGET_DIR/release/kolmctl`, then `<workspace>/target/release/kolmctl`.
/// The binary is not built here: run `cargo build --release -p kolm-cli` first.
pub fn kolmctl_path() -> Result<PathBuf> {
    release_binary("kolmctl", KOLMCTL_ENV, "kolm-cli")
}

/// Environment variable that overrides where `kolmd` is found.
pub const KOLMD_ENV: &str = "KOLMD";

/// Locates the release `kolmd` binary: `$KOLMD`, then
/// `$CARGO_TARGET_DIR/release/kolmd`, then `<workspace>/target/release/kolmd`.
pub fn kolmd_path() -> Result<PathBuf> {
    release_binary("kolmd", KOLMD_ENV, "kolmd")
}

/// Locates the release binary `name` of the workspace package `package`.
///
/// Order: the environment variable `env` (taken as is), then
/// `$CARGO_TARGET_DIR/release/NAME`, then `<workspace>/target/release/NAME`.
/// Nothing is built here.
pub fn release_binary(name: &str, env: &str, package: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{env}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        tried.push(PathBuf::from(dir).join("release").join(name));
    }
    tried.push(workspace_root().join("target").join("release").join(name));
    for p in &tried {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "{name} not found (tried {}); build it with `cargo build --release -p {package}` \
         or point {env} at it",
        list.join(", ")
    )
}

/// What one measured run of a command gave.
#[derive(Debug)]
pub struct Measured {
    /// Wall time from spawn to exit, taken in this process.
    pub wall: Duration,
    /// Peak resident set size of the child in KiB (GNU `time`'s `%M`), or
    /// `None` when GNU `time` is not available.
    pub peak_rss_kib: Option<u64>,
    /// Exit status, stdout and stderr of the child.
    pub output: Output,
}

impl Measured {
    /// Wall time in seconds.
    pub fn secs(&self) -> f64 {
        self.wall.as_secs_f64()
    }

    /// Whether the child exited with status 0.
    pub fn success(&self) -> bool {
        self.output.status.success()
    }

    /// The child's stderr, lossily decoded, for error messages.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Runs `cmd` to completion and measures its wall time and peak RSS.
///
/// When GNU `time` is at [`GNU_TIME`], the command runs under
/// `time -o FILE -f '%e %M'`, which reports the child's `ru_maxrss`; the
/// program, arguments, environment changes and working directory of `cmd`
/// are carried over. The wrapper costs the same fork and exec for every
/// command, so ratios between two measured commands stay fair. stdin is
/// closed; stdout and stderr are captured (keep them small).
///
/// A non-zero exit is not an error here: check [`Measured::success`].
pub fn measure(cmd: &Command) -> Result<Measured> {
    let time = Path::new(GNU_TIME);
    let report = tempfile::NamedTempFile::new().context("creating the time report file")?;
    let mut run = if time.is_file() {
        let mut w = Command::new(time);
        w.arg("-o")
            .arg(report.path())
            .arg("-f")
            .arg("%e %M")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        w
    } else {
        let mut w = Command::new(cmd.get_program());
        w.args(cmd.get_args());
        w
    };
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => run.env(k, v),
            None => run.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        run.current_dir(dir);
    }
    run.stdin(Stdio::null());

    let start = Instant::now();
    let output = run
        .output()
        .with_context(|| format!("running {}", display_cmd(cmd)))?;
    let wall = start.elapsed();

    let peak_rss_kib = if time.is_file() {
        let mut text = String::new();
        File::open(report.path())
            .and_then(|mut f| f.read_to_string(&mut text))
            .context("reading the time report")?;
        Some(parse_time_report(&text).with_context(|| {
            format!(
                "GNU time gave no '%e %M' line for {} (report: {text:?}, stderr: {})",
                display_cmd(cmd),
                String::from_utf8_lossy(&output.stderr)
            )
        })?)
    } else {
        None
    };
    Ok(Measured {
        wall,
        peak_rss_kib,
        output,
    })
}

/// Parses the last `ELAPSED MAXRSS_KIB` line of a GNU time report. GNU time
/// writes "Command exited with non-zero status N" before it on failure.
fn parse_time_report(text: &str) -> Option<u64> {
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut parts = line.split_whitespace();
    let _elapsed: f64 = parts.next()?.parse().ok()?;
    parts.next()?.parse().ok()
}

/// A shell-like rendering of a command for messages.
pub fn display_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` untimed and fails with its stderr when it exits non-zero.
pub fn run_ok(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", display_cmd(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            display_cmd(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Median of `xs` (mean of the two middle values for an even count);
/// `NaN` for an empty slice.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Throughput in MiB/s of `bytes` read in `secs`.
pub fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MIB as f64 / secs
}

/// Parses a size such as `100M`, `2G`, `512K`, `1.5G` or `4096`.
///
/// Suffixes are binary: K = KiB, M = MiB, G = GiB, T = TiB (an optional
/// trailing `B` or `iB` is accepted), so `2G` is 2147483648 bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let body = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (num, mult) = match body.chars().last() {
        Some('K') => (&body[..body.len() - 1], 1u64 << 10),
        Some('M') => (&body[..body.len() - 1], 1 << 20),
        Some('G') => (&body[..body.len() - 1], 1 << 30),
        Some('T') => (&body[..body.len() - 1], 1 << 40),
        _ => (body, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("bad size {s:?} (want e.g. 100M, 2G)"))?;
    if !(n.is_finite() && n > 0.0) {
        bail!("bad size {s:?}: must be positive");
    }
    Ok((n * mult as f64).round() as u64)
}

/// Renders a byte count with a binary unit, e.g. `2.00 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Reads a whole file once through a 1 MiB buffer and throws the bytes away,
/// so the page cache holds it before timed reads. Returns the bytes read.
pub fn warm_page_cache(path: &Path) -> Result<u64> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Free bytes on the file system holding `dir`, from `df -Pk`; `None` when
/// `df` is missing or its output cannot be read.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let avail_kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(avail_kib * 1024)
}

/// First line of `PROGRAM ARG` (e.g. `sha256sum --version`, `openssl version`),
/// for the record; `"?"` when it fails.
pub fn tool_version(program: impl AsRef<OsStr>, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// A plain-text table: the first column is left-aligned, the others are
/// right-aligned, columns are padded to their widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<I, S>(header: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells print empty, extra cells are kept.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ncols = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; ncols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, r: &[String]| -> fmt::Result {
            let mut s = String::new();
            for (i, w) in widths.iter().enumerate() {
                let c = r.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    s.push_str("  ");
                }
                if i == 0 {
                    s.push_str(&format!("{c:<w$}"));
                } else {
                    s.push_str(&format!("{c:>w$}"));
                }
            }
            writeln!(f, "{}", s.trim_end())
        };
        line(f, &self.header)?;
        let total: usize = widths.iter().sum::<usize>() + 2 * ncols.saturating_sub(1);
        writeln!(f, "{}", "-".repeat(total))?;
        for r in &self.rows {
            line(f, r)?;
        }
        Ok(())
    }
}

/// `PASS` or `FAIL`.
pub fn mark(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size("100M").unwrap(), 100 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("xM").is_err());
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn time_report_last_line() {
        assert_eq!(parse_time_report("1.23 4567\n"), Some(4567));
        assert_eq!(
            parse_time_report("Command exited with non-zero status 1\n0.01 2048\n"),
            Some(2048)
        );
        assert_eq!(parse_time_report("garbage"), None);
    }

    #[test]
    fn measure_true_and_false() {
        let ok = measure(&Command::new("true")).unwrap();
        assert!(ok.success());
        if Path::new(GNU_TIME).is_file() {
            assert!(ok.peak_rss_kib.unwrap() > 0);
        }
        let bad = measure(&Command::new("false")).unwrap();
        assert!(!bad.success());
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(["size", "MiB/s"]);
        t.row(["100M", "1.0"]).row(["2G", "1234.5"]);
        let s = t.to_string();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "size   MiB/s");
        assert_eq!(lines[2], "100M     1.0");
        assert_eq!(lines[3], "2G    1234.5");
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(2 << 30), "2.00 GiB");
    }
}
