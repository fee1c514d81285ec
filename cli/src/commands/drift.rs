//! `kolmctl drift`: list, show, export and clear kolmd's drift log
//! (`$KOLM_HOME/drift/drift.sqlite`, through `kolm-drift`). The read verbs
//! open it read-only and `clear` opens it without creating it: a missing
//! database is an empty log, never created here.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kolm_drift::{DriftDb, DriftError, DriftInput, Entry, ExportStats, Filter, Scores};
use kolm_store::Home;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::{
    DriftClearArgs, DriftCommand, DriftExportArgs, DriftFilterArgs, DriftListArgs, DriftShowArgs,
};
use crate::output;

/// Characters of the input a `list` row shows.
const INPUT_WIDTH: usize = 50;

/// Runs a `drift` subcommand.
pub fn run(home: &Home, command: DriftCommand) -> anyhow::Result<()> {
    let path = kolm_drift::default_path(home.root());
    match command {
        DriftCommand::List(a) => list(&path, a),
        DriftCommand::Show(a) => show(&path, a),
        DriftCommand::Export(a) => export(&path, a),
        DriftCommand::Clear(a) => clear(&path, a),
    }
}

fn filter(args: &DriftFilterArgs, limit: Option<usize>) -> Filter {
    let (artifact, version) = match &args.artifact {
        Some((name, version)) => (Some(name.clone()), version.clone()),
        None => (None, None),
    };
    Filter {
        artifact,
        version,
        reason: args.reason,
        since_ms: args.since,
        limit,
    }
}

fn filtered(args: &DriftFilterArgs) -> bool {
    args.artifact.is_some() || args.reason.is_some() || args.since.is_some()
}

/// The log read-only, or `None` when there is no database yet.
fn open_read(path: &Path) -> anyhow::Result<Option<DriftDb>> {
    match DriftDb::open_read_only(path) {
        Ok(db) => Ok(Some(db)),
        Err(DriftError::Missing { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn list(path: &Path, args: DriftListArgs) -> anyhow::Result<()> {
    let entries = match open_read(path)? {
        Some(db) => db.list(&filter(&args.filter, args.limit))?,
        None => Vec::new(),
    };
    if args.json {
        return output::json(&entries);
    }
    if entries.is_empty() {
        if !path.exists() {
            outln!(
                "no drift entries (no drift database at {} yet)",
                path.display()
            );
        } else if filtered(&args.filter) {
            outln!("no drift entries match (database {})", path.display());
        } else {
            outln!("no drift entries (database {})", path.display());
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                when(e.entry.created_ms),
                format!("{}:{}", e.entry.artifact, e.entry.version),
                reasons(e),
                e.entry.input.as_ref().map_or_else(
                    || "(redacted)".to_owned(),
                    |i| one_line(i.summary(), INPUT_WIDTH),
                ),
            ]
        })
        .collect();
    output::table(&["ID", "WHEN", "MODEL", "REASONS", "INPUT"], &rows);
    Ok(())
}

fn show(path: &Path, args: DriftShowArgs) -> anyhow::Result<()> {
    let Some(db) = open_read(path)? else {
        anyhow::bail!(
            "no drift entry {}: there is no drift database at {} yet",
            args.id,
            path.display()
        );
    };
    let Some(e) = db.get(args.id)? else {
        anyhow::bail!(
            "no drift entry {} in {} (`kolmctl drift list` shows the IDs)",
            args.id,
            path.display()
        );
    };
    if args.json {
        return output::json(&e);
    }
    let entry = &e.entry;
    outln!("drift entry {}", e.id);
    let mut rows = vec![
        ("when", when(entry.created_ms)),
        ("model", format!("{}:{}", entry.artifact, entry.version)),
        ("reasons", reasons(&e)),
        ("input digest", entry.input_digest.clone()),
    ];
    rows.extend(score_rows(&entry.scores, &entry.thresholds));
    if !entry.scores.failed_rules.is_empty() {
        rows.push(("failed rules", entry.scores.failed_rules.join("; ")));
    }
    output::fields(&rows);
    outln!("input:");
    match &entry.input {
        None => outln!("  (redacted)"),
        Some(DriftInput::Text(text)) => outln!("{}", indent(text)),
        Some(DriftInput::Chat(messages)) => {
            for m in messages {
                outln!("  [{}]", m.role);
                outln!("{}", indent(&m.content));
            }
        }
    }
    outln!("output:");
    match &entry.output {
        None => outln!("  (redacted)"),
        Some(text) => outln!("{}", indent(text)),
    }
    Ok(())
}

/// `mean logprob   -2.31 (threshold -1.20)` for each measured or limited score.
fn score_rows(scores: &Scores, limits: &Scores) -> Vec<(&'static str, String)> {
    [
        ("mean logprob", scores.mean_logprob, limits.mean_logprob),
        (
            "recipe coverage",
            scores.recipe_coverage,
            limits.recipe_coverage,
        ),
        ("recall best", scores.recall_best, limits.recall_best),
        ("distance", scores.distance, limits.distance),
    ]
    .into_iter()
    .filter_map(|(name, score, limit)| {
        let value = match (score, limit) {
            (None, None) => return None,
            (Some(s), None) => number(s),
            (Some(s), Some(l)) => format!("{} (threshold {})", number(s), number(l)),
            (None, Some(l)) => format!("not measured (threshold {})", number(l)),
        };
        Some((name, value))
    })
    .collect()
}

fn number(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.2e}")
    } else {
        format!("{v:.2}")
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn export(path: &Path, args: DriftExportArgs) -> anyhow::Result<()> {
    let db = open_read(path)?;
    let filter = filter(&args.filter, args.limit);
    let write = |out: &mut dyn Write| -> Result<ExportStats, DriftError> {
        match &db {
            Some(db) => db.export_jsonl(&filter, out),
            None => Ok(ExportStats::default()),
        }
    };
    let (stats, target) = match &args.out {
        None => {
            let mut stdout = std::io::stdout().lock();
            match write(&mut stdout) {
                Ok(stats) => (stats, "stdout".to_owned()),
                // `kolmctl drift export | head` ends quietly, as `list` does.
                Err(DriftError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    std::process::exit(0)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(out) => (
            write_file(out, args.force, write)?,
            out.display().to_string(),
        ),
    };
    if db.is_none() {
        eprintln!(
            "no drift entries (no drift database at {} yet)",
            path.display()
        );
    }
    let mut note = format!(
        "wrote {} inputs to {target} ({} redacted skipped)",
        stats.written, stats.redacted_skipped
    );
    if stats.duplicates_skipped > 0 {
        note.push_str(&format!(
            "; {} entries repeated an input already written",
            stats.duplicates_skipped
        ));
    }
    eprintln!("{note}");
    Ok(())
}

/// Writes `out` through a temporary file beside it, renamed into place; an
/// existing file is replaced only with `force`.
fn write_file(
    out: &Path,
    force: bool,
    write: impl FnOnce(&mut dyn Write) -> Result<ExportStats, DriftError>,
) -> anyhow::Result<ExportStats> {
    if !force && out.symlink_metadata().is_ok() {
        anyhow::bail!("{} exists; pass --force to replace it", out.display());
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".drift-export-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let stats = {
        let mut buf = std::io::BufWriter::new(tmp.as_file_mut());
        let stats = write(&mut buf)?;
        buf.flush()
            .with_context(|| format!("cannot write {}", out.display()))?;
        stats
    };
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", out.display()))?;
    let persisted = if force {
        tmp.persist(out)
    } else {
        tmp.persist_noclobber(out)
    };
    persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} exists; pass --force to replace it", out.display())
        } else {
            anyhow::Error::new(e.error).context(format!("cannot write {}", out.display()))
        }
    })?;
    Ok(stats)
}

#[derive(Serialize)]
struct Cleared<'a> {
    deleted: u64,
    database: &'a Path,
}

fn clear(path: &Path, args: DriftClearArgs) -> anyhow::Result<()> {
    let deleted = match DriftDb::open_existing(path) {
        Ok(mut db) => Some(db.clear(&filter(&args.filter, None))?),
        Err(DriftError::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if args.json {
        return output::json(&Cleared {
            deleted: deleted.unwrap_or(0),
            database: path,
        });
    }
    match deleted {
        None => outln!(
            "deleted 0 drift entries (no drift database at {} yet)",
            path.display()
        ),
        Some(1) => outln!("deleted 1 drift entry from {}", path.display()),
        Some(n) => outln!("deleted {n} drift entries from {}", path.display()),
    }
    Ok(())
}

/// The entry's reasons, comma-separated.
fn reasons(e: &Entry) -> String {
    e.entry
        .reasons
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Unix milliseconds as UTC RFC 3339 to the second.
fn when(ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// `text` on one line (whitespace runs as one space), cut to `width`
/// characters with `…`.
fn one_line(text: &str, width: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= width {
        return flat;
    }
    let mut cut: String = flat.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// `--since`: an RFC 3339 time, or a duration back from `now` (`90s`,
/// `30m`, `24h`, `7d`, `2w`), as unix milliseconds.
pub fn since_ms(s: &str, now: OffsetDateTime) -> Result<i64, String> {
    let millis = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(millis(t));
    }
    let bad = || {
        format!(
            "`{s}` is neither an RFC 3339 time (2026-12-07T10:00:00Z) nor a duration back \
             from now (a number and s, m, h, d or w: 30m, 24h, 7d)"
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    let back = n
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("`{s}` is too long ago"))?;
    Ok(millis(now) - back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_rfc3339_and_durations() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let now_ms = 1_800_000_000_000;
        assert_eq!(since_ms("30m", now), Ok(now_ms - 30 * 60_000));
        assert_eq!(since_ms("24h", now), Ok(now_ms - 24 * 3_600_000));
        assert_eq!(since_ms("7d", now), Ok(now_ms - 7 * 86_400_000));
        assert_eq!(since_ms("2026-12-07T10:00:00Z", now), Ok(1_796_637_600_000));
        assert_eq!(
            since_ms("2026-12-07T11:00:00+01:00", now),
            Ok(1_796_637_600_000)
        );
        for bad in ["", "7", "d", "7 d", "7y", "-3h", "yesterday", "2026-12-07"] {
            let err = since_ms(bad, now).unwrap_err();
            assert!(err.contains("neither an RFC 3339 time"), "{bad}: {err}");
        }
        assert!(since_ms("99999999999999999d", now).is_err());
    }

    #[test]
    fn times_print_to_the_second_in_utc() {
        assert_eq!(when(1_796_637_600_999), "2026-12-07T10:00:00Z");
        assert_eq!(when(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn inputs_fit_one_line() {
        assert_eq!(one_line("a\n  b\tc", 50), "a b c");
        let long = "x".repeat(60);
        let cut = one_line(&long, 50);
        assert_eq!(cut.chars().count(), 50);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn scores_print_beside_thresholds() {
        let rows = score_rows(
            &Scores {
                mean_logprob: Some(-2.3125),
                distance: Some(0.004),
                ..Scores::default()
            },
            &Scores {
                mean_logprob: Some(-1.2),
                recall_best: Some(0.5),
                ..Scores::default()
            },
        );
        assert_eq!(
            rows,
            [
                ("mean logprob", "-2.31 (threshold -1.20)".to_owned()),
                ("recall best", "not measured (threshold 0.50)".to_owned()),
                ("distance", "4.00e-3".to_owned()),
            ]
        );
    }
}
