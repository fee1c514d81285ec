//! Benchmark: `kolmctl verify` against `sha256sum` on the same bytes, and the
//! peak RSS of `kolmctl pack` and `kolmctl verify` as the artifact grows.
//!
//! Goals (issue 2):
//! - verify throughput / sha256sum throughput >= 0.9 on a 2 GiB artifact;
//! - peak RSS of pack and verify under 64 MiB at every size, and flat: the
//!   largest size within 1.5x of the smallest.
//!
//! Run: `cargo build --release -p kolm-cli && cargo bench -p kolm-benches --bench verify`.
//! Environment: `KOLM_BENCH_SIZES` (default `100M,2G`), `KOLM_BENCH_REPS`
//! (default 5), `KOLM_BENCH_DIR` (default the system temp dir), `KOLMCTL`.
//!
//! Each size gets a fresh temp dir with its own `KOLM_HOME`: a synthetic GGUF
//! of that size is generated, packed and signed, the artifact is read once
//! untimed so the page cache is warm, then `kolmctl verify -q` and `sha256sum`
//! run alternately (plus `openssl dgst -sha256` when installed: an
//! informational second anchor, since coreutils' `sha256sum` may not use the
//! CPU's SHA instructions while OpenSSL does; set `KOLM_BENCH_NO_OPENSSL` to
//! skip it). A tamper check flips one byte in the middle and expects
//! verify to fail. The temp dir is removed afterwards.
//!
//! Output: progress on stderr; tables with PASS/FAIL marks on stdout, then
//! one JSON line `{"bench":"verify",...}`. Exits 0 whatever the marks say,
//! non-zero on errors (a kolmctl command that fails, no disk space).

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use kolm_benches::{
    free_bytes, gguf, human_bytes, kolmctl_path, mark, measure, median, mib_per_s, parse_size,
    tool_version, warm_page_cache, Measured, Table, MIB,
};
use serde_json::{json, Value};

/// verify throughput / sha256sum throughput must reach this.
const RATIO_GOAL: f64 = 0.9;
/// Peak RSS of pack and verify must stay under this (64 MiB).
const RSS_GOAL_KIB: u64 = 64 * 1024;
/// "Flat": peak RSS at the largest size within this factor of the smallest.
const FLAT_FACTOR: f64 = 1.5;

/// Settings read from the environment.
struct Config {
    sizes: Vec<(String, u64)>,
    reps: usize,
    dir: PathBuf,
    kolmctl: PathBuf,
    /// Whether `openssl` runs: it is a second, informational anchor.
    openssl: bool,
}

impl Config {
    fn from_env() -> Result<Self> {
        let spec = std::env::var("KOLM_BENCH_SIZES").unwrap_or_else(|_| "100M,2G".to_owned());
        let sizes = spec
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| Ok((s.trim().to_owned(), parse_size(s)?)))
            .collect::<Result<Vec<_>>>()
            .context("KOLM_BENCH_SIZES")?;
        ensure!(!sizes.is_empty(), "KOLM_BENCH_SIZES is empty");
        let reps = match std::env::var("KOLM_BENCH_REPS") {
            Ok(s) => s.trim().parse().context("KOLM_BENCH_REPS")?,
            Err(_) => 5,
        };
        ensure!(reps > 0, "KOLM_BENCH_REPS must be at least 1");
        let dir = std::env::var_os("KOLM_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        Ok(Self {
            sizes,
            reps,
            dir,
            kolmctl: kolmctl_path()?,
            openssl: std::env::var_os("KOLM_BENCH_NO_OPENSSL").is_none()
                && Command::new("openssl")
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
        })
    }
}

/// Figures for one size.
struct SizeResult {
    label: String,
    gguf_bytes: u64,
    artifact_bytes: u64,
    gen_s: f64,
    pack_s: f64,
    pack_rss_kib: Option<u64>,
    verify_s: Vec<f64>,
    sha_s: Vec<f64>,
    verify_rss_kib: Option<u64>,
    sha_rss_kib: Option<u64>,
    /// `openssl dgst -sha256` times, when openssl is installed.
    openssl_s: Vec<f64>,
    tamper_detected: bool,
    /// Exit code of verify on the tampered artifact (`None`: killed by a signal).
    tamper_exit: Option<i32>,
}

impl SizeResult {
    fn verify_median(&self) -> f64 {
        median(&self.verify_s)
    }
    fn sha_median(&self) -> f64 {
        median(&self.sha_s)
    }
    fn verify_mib_s(&self) -> f64 {
        mib_per_s(self.artifact_bytes, self.verify_median())
    }
    fn sha_mib_s(&self) -> f64 {
        mib_per_s(self.artifact_bytes, self.sha_median())
    }
    /// Throughput ratio verify / sha256sum on the same bytes.
    fn ratio(&self) -> f64 {
        self.sha_median() / self.verify_median()
    }
    /// Throughput ratio verify / `openssl dgst -sha256`; `None` without openssl.
    fn openssl_ratio(&self) -> Option<f64> {
        (!self.openssl_s.is_empty()).then(|| median(&self.openssl_s) / self.verify_median())
    }
    fn openssl_mib_s(&self) -> Option<f64> {
        (!self.openssl_s.is_empty())
            .then(|| mib_per_s(self.artifact_bytes, median(&self.openssl_s)))
    }
    fn pack_mib_s(&self) -> f64 {
        mib_per_s(self.gguf_bytes, self.pack_s)
    }
}

fn kolmctl(cfg: &Config, home: &Path) -> Command {
    let mut c = Command::new(&cfg.kolmctl);
    c.env("KOLM_HOME", home);
    c
}

/// Fails with the child's stderr when a measured kolmctl command failed.
fn check(m: &Measured, what: &str) -> Result<()> {
    if !m.success() {
        bail!(
            "{what} failed ({}): {}",
            m.output.status,
            m.stderr_text().trim()
        );
    }
    Ok(())
}

fn max_rss(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Flips the lowest bit of the byte at `offset`.
fn flip_byte(path: &Path, offset: u64) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} to tamper", path.display()))?;
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut b)?;
    b[0] ^= 1;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(&b)?;
    f.sync_all()?;
    Ok(())
}

fn run_size(cfg: &Config, label: &str, size: u64) -> Result<SizeResult> {
    fs::create_dir_all(&cfg.dir).with_context(|| format!("creating {}", cfg.dir.display()))?;
    let need = size * 22 / 10 + 64 * MIB;
    if let Some(free) = free_bytes(&cfg.dir) {
        ensure!(
            free >= need,
            "{label}: {} free under {}, need about {} (set KOLM_BENCH_DIR elsewhere)",
            human_bytes(free),
            cfg.dir.display(),
            human_bytes(need)
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("kolm-bench-verify-")
        .tempdir_in(&cfg.dir)
        .with_context(|| format!("creating a temp dir under {}", cfg.dir.display()))?;
    let home = tmp.path().join("home");
    fs::create_dir(&home)?;
    let base = tmp.path().join(format!("base-{label}.gguf"));
    let artifact = tmp.path().join(format!("bench-{label}.kolm"));

    kolm_benches::run_ok(kolmctl(cfg, &home).args(["keys", "generate", "--name", "bench"]))
        .context("kolmctl keys generate")?;

    eprint!("[{label}] generating a {} GGUF ... ", human_bytes(size));
    let t = Instant::now();
    let plan = gguf::write_synthetic(&base, &gguf::Spec::new(size, format!("bench-{label}")))
        .with_context(|| format!("writing {}", base.display()))?;
    let gen_s = t.elapsed().as_secs_f64();
    eprintln!("{gen_s:.2} s, {} tensors", plan.tensors.len());

    eprint!("[{label}] pack ... ");
    let mut pack = kolmctl(cfg, &home);
    pack.arg("pack")
        .arg("-q")
        .arg("--base")
        .arg(&base)
        .args([
            "--name",
            "bench",
            "--version",
            "0.1.0",
            "--key",
            "bench",
            "--out",
        ])
        .arg(&artifact);
    let packed = measure(&pack)?;
    check(&packed, "kolmctl pack")?;
    eprintln!("{:.2} s", packed.secs());
    let artifact_bytes = fs::metadata(&artifact)
        .with_context(|| format!("pack wrote no {}", artifact.display()))?
        .len();
    // The base is not needed any more: free its disk and page cache.
    fs::remove_file(&base)?;

    warm_page_cache(&artifact)?;

    let mut verify = kolmctl(cfg, &home);
    verify.arg("verify").arg("-q").arg(&artifact);
    let mut sha = Command::new("sha256sum");
    sha.arg(&artifact);
    let mut openssl = Command::new("openssl");
    openssl.args(["dgst", "-sha256"]).arg(&artifact);
    let with_openssl = cfg.openssl;

    let mut r = SizeResult {
        label: label.to_owned(),
        gguf_bytes: plan.total,
        artifact_bytes,
        gen_s,
        pack_s: packed.secs(),
        pack_rss_kib: packed.peak_rss_kib,
        verify_s: Vec::new(),
        sha_s: Vec::new(),
        verify_rss_kib: None,
        sha_rss_kib: None,
        openssl_s: Vec::new(),
        tamper_detected: false,
        tamper_exit: None,
    };
    for i in 0..cfg.reps {
        let v = measure(&verify)?;
        check(&v, "kolmctl verify")?;
        let s = measure(&sha)?;
        check(&s, "sha256sum")?;
        let mut line = format!(
            "[{label}] rep {}/{}: verify {:.3} s, sha256sum {:.3} s",
            i + 1,
            cfg.reps,
            v.secs(),
            s.secs()
        );
        if with_openssl {
            let o = measure(&openssl)?;
            check(&o, "openssl dgst -sha256")?;
            line.push_str(&format!(", openssl {:.3} s", o.secs()));
            r.openssl_s.push(o.secs());
        }
        eprintln!("{line}");
        r.verify_s.push(v.secs());
        r.sha_s.push(s.secs());
        r.verify_rss_kib = max_rss(r.verify_rss_kib, v.peak_rss_kib);
        r.sha_rss_kib = max_rss(r.sha_rss_kib, s.peak_rss_kib);
    }

    // Tamper check: one flipped bit in the middle (inside the GGUF's tensor
    // data) must make verify fail, or the timing above means nothing.
    flip_byte(&artifact, artifact_bytes / 2)?;
    let tampered = verify
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .status()
        .context("running kolmctl verify on the tampered artifact")?;
    r.tamper_detected = !tampered.success();
    r.tamper_exit = tampered.code();
    eprintln!(
        "[{label}] tampered artifact: verify {} ({tampered})",
        if r.tamper_detected {
            "rejects it"
        } else {
            "ACCEPTS it"
        }
    );

    tmp.close().context("removing the temp dir")?;
    Ok(r)
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".to_owned())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "n/a".to_owned())
}

fn rss_mark(kib: Option<u64>) -> &'static str {
    kib.map(|k| mark(k < RSS_GOAL_KIB)).unwrap_or("n/a")
}

/// Peak RSS at the largest size over that at the smallest.
fn flat_factor(results: &[SizeResult], f: impl Fn(&SizeResult) -> Option<u64>) -> Option<f64> {
    let small = results.iter().min_by_key(|r| r.gguf_bytes)?;
    let large = results.iter().max_by_key(|r| r.gguf_bytes)?;
    if small.gguf_bytes == large.gguf_bytes {
        return None;
    }
    Some(f(large)? as f64 / f(small)? as f64)
}

fn report(cfg: &Config, results: &[SizeResult]) -> Value {
    let mut p = Table::new([
        "size",
        "gguf",
        "artifact",
        "pack s",
        "pack MiB/s",
        "pack RSS MiB",
        "gguf gen s",
    ]);
    let mut t = Table::new([
        "size",
        "verify s",
        "verify MiB/s",
        "sha256sum MiB/s",
        "ratio",
        "verify RSS MiB",
        "sha256sum RSS MiB",
        "openssl MiB/s",
        "ratio vs openssl",
    ]);
    for r in results {
        p.row([
            r.label.clone(),
            human_bytes(r.gguf_bytes),
            human_bytes(r.artifact_bytes),
            format!("{:.2}", r.pack_s),
            format!("{:.0}", r.pack_mib_s()),
            mib(r.pack_rss_kib),
            format!("{:.2}", r.gen_s),
        ]);
        t.row([
            r.label.clone(),
            format!("{:.3}", r.verify_median()),
            format!("{:.0}", r.verify_mib_s()),
            format!("{:.0}", r.sha_mib_s()),
            format!("{:.3}", r.ratio()),
            mib(r.verify_rss_kib),
            mib(r.sha_rss_kib),
            opt(r.openssl_mib_s(), 0),
            opt(r.openssl_ratio(), 3),
        ]);
    }
    println!();
    println!("pack (one run; throughput over the GGUF's bytes)");
    print!("{p}");
    println!();
    println!(
        "verify vs sha256sum (medians of {} alternating runs; throughput over the artifact's bytes; \
         openssl is informational)",
        cfg.reps
    );
    print!("{t}");

    let mut m = Table::new([
        "size",
        "ratio >= 0.9",
        "pack RSS < 64 MiB",
        "verify RSS < 64 MiB",
        "tamper rejected",
    ]);
    let mut all_pass = true;
    for r in results {
        let ratio_ok = r.ratio() >= RATIO_GOAL;
        let pack_ok = r.pack_rss_kib.is_some_and(|k| k < RSS_GOAL_KIB);
        let verify_ok = r.verify_rss_kib.is_some_and(|k| k < RSS_GOAL_KIB);
        all_pass &= ratio_ok && pack_ok && verify_ok && r.tamper_detected;
        m.row([
            r.label.clone(),
            mark(ratio_ok).to_owned(),
            rss_mark(r.pack_rss_kib).to_owned(),
            rss_mark(r.verify_rss_kib).to_owned(),
            mark(r.tamper_detected).to_owned(),
        ]);
    }
    println!();
    print!("{m}");

    let pack_flat = flat_factor(results, |r| r.pack_rss_kib);
    let verify_flat = flat_factor(results, |r| r.verify_rss_kib);
    let flat_line = |what: &str, f: Option<f64>| match f {
        Some(f) => {
            println!(
                "{what} peak RSS largest/smallest size: {f:.2}x (goal <= {FLAT_FACTOR}x) {}",
                mark(f <= FLAT_FACTOR)
            );
        }
        None => println!("{what} peak RSS flatness: n/a (needs two sizes and GNU time)"),
    };
    println!();
    flat_line("pack", pack_flat);
    flat_line("verify", verify_flat);
    for f in [pack_flat, verify_flat].into_iter().flatten() {
        all_pass &= f <= FLAT_FACTOR;
    }
    println!("overall: {}", mark(all_pass));

    let sizes: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "size": r.label,
                "gguf_bytes": r.gguf_bytes,
                "artifact_bytes": r.artifact_bytes,
                "gguf_gen_s": r.gen_s,
                "pack_s": r.pack_s,
                "pack_mib_s": r.pack_mib_s(),
                "pack_peak_rss_kib": r.pack_rss_kib,
                "verify_s": r.verify_s,
                "verify_median_s": r.verify_median(),
                "verify_mib_s": r.verify_mib_s(),
                "verify_peak_rss_kib": r.verify_rss_kib,
                "sha256sum_s": r.sha_s,
                "sha256sum_median_s": r.sha_median(),
                "sha256sum_mib_s": r.sha_mib_s(),
                "sha256sum_peak_rss_kib": r.sha_rss_kib,
                "openssl_s": r.openssl_s,
                "openssl_mib_s": r.openssl_mib_s(),
                "ratio_vs_openssl": r.openssl_ratio(),
                "ratio": r.ratio(),
                "ratio_pass": r.ratio() >= RATIO_GOAL,
                "pack_rss_pass": r.pack_rss_kib.map(|k| k < RSS_GOAL_KIB),
                "verify_rss_pass": r.verify_rss_kib.map(|k| k < RSS_GOAL_KIB),
                "tamper_detected": r.tamper_detected,
                "tamper_exit_code": r.tamper_exit,
            })
        })
        .collect();
    json!({
        "bench": "verify",
        "anchor": "sha256sum",
        "anchor_version": tool_version("sha256sum", "--version"),
        "second_anchor": cfg.openssl.then(|| tool_version("openssl", "version")),
        "kolmctl": cfg.kolmctl.display().to_string(),
        "reps": cfg.reps,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "goals": {
            "ratio_min": RATIO_GOAL,
            "peak_rss_max_kib": RSS_GOAL_KIB,
            "flat_factor_max": FLAT_FACTOR,
        },
        "sizes": sizes,
        "pack_rss_flat_factor": pack_flat,
        "verify_rss_flat_factor": verify_flat,
        "pass": all_pass,
    })
}

fn run() -> Result<()> {
    let cfg = Config::from_env()?;
    eprintln!(
        "kolmctl: {}\nanchor: {}\nsecond anchor (informational): {}\nreps: {}, temp dir: {}",
        cfg.kolmctl.display(),
        tool_version("sha256sum", "--version"),
        if cfg.openssl {
            format!(
                "openssl dgst -sha256, {}",
                tool_version("openssl", "version")
            )
        } else {
            "none (openssl missing or KOLM_BENCH_NO_OPENSSL set)".to_owned()
        },
        cfg.reps,
        cfg.dir.display()
    );
    let mut results = Vec::new();
    for (label, size) in &cfg.sizes {
        results.push(run_size(&cfg, label, *size).with_context(|| format!("size {label}"))?);
    }
    let summary = report(&cfg, &results);
    println!("{summary}");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
