//! `DriftDb`: the drift log's sqlite file. It owns the schema (two tables,
//! `entries` and `entry_reasons`, versioned by `PRAGMA user_version`), the
//! connection settings (WAL, `synchronous=NORMAL`, a busy timeout, foreign
//! keys), and every query: insert in one transaction, list, get, clear,
//! counts, prune and the JSONL export.
//!
//! ```text
//! entries(id, created_ms, artifact, version, input JSON|NULL, input_digest,
//!         output|NULL, scores JSON, thresholds JSON)
//! entry_reasons(entry_id → entries.id ON DELETE CASCADE, reason)
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::entry::{
    Count, DriftInput, Entry, ExportStats, Filter, NewEntry, Reason, Retention, Scores,
};
use crate::{export, DriftError, SCHEMA_VERSION};

/// How long a statement waits for another connection's lock by default.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms INTEGER NOT NULL,
    artifact TEXT NOT NULL,
    version TEXT NOT NULL,
    input TEXT,
    input_digest TEXT NOT NULL,
    output TEXT,
    scores TEXT NOT NULL,
    thresholds TEXT NOT NULL
);
CREATE TABLE entry_reasons (
    entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    reason TEXT NOT NULL,
    PRIMARY KEY (entry_id, reason)
) WITHOUT ROWID;
CREATE INDEX entries_artifact_created ON entries(artifact, version, created_ms);
CREATE INDEX entries_created ON entries(created_ms);
CREATE INDEX entry_reasons_reason ON entry_reasons(reason, entry_id);
";

/// The columns every entry query selects, in [`RawRow`] order.
const COLUMNS: &str = "e.id, e.created_ms, e.artifact, e.version, e.input, e.input_digest, \
     e.output, e.scores, e.thresholds, \
     (SELECT group_concat(r.reason, ',') FROM entry_reasons r WHERE r.entry_id = e.id)";

/// How the file is opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Read-write, created (with its folder) when missing.
    Create,
    /// Read-write, refused when missing.
    Existing,
    /// Read-only, refused when missing.
    ReadOnly,
}

/// The drift log: one sqlite file, one connection.
pub struct DriftDb {
    conn: Connection,
    path: PathBuf,
    busy: Duration,
    read_only: bool,
}

impl fmt::Debug for DriftDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriftDb")
            .field("path", &self.path)
            .field("busy_timeout", &self.busy)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl DriftDb {
    /// Opens the log at `path`, creating its parent folders, the file and
    /// the schema when missing; journal_mode=WAL, synchronous=NORMAL, busy
    /// timeout 5 s, foreign keys on. Refuses a file of a newer schema and a
    /// file that is not a drift log.
    pub fn open(path: &Path) -> Result<DriftDb, DriftError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| DriftError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        DriftDb::open_mode(path, Mode::Create)
    }

    /// Opens an existing log read-write ([`DriftError::Missing`] when there
    /// is no file): for tools that delete entries but must not create a log.
    pub fn open_existing(path: &Path) -> Result<DriftDb, DriftError> {
        DriftDb::open_mode(path, Mode::Existing)
    }

    /// Opens an existing log read-only ([`DriftError::Missing`] when there
    /// is no file); writes through it fail.
    pub fn open_read_only(path: &Path) -> Result<DriftDb, DriftError> {
        DriftDb::open_mode(path, Mode::ReadOnly)
    }

    fn open_mode(path: &Path, mode: Mode) -> Result<DriftDb, DriftError> {
        if mode != Mode::Create && !path.exists() {
            return Err(DriftError::Missing {
                path: path.to_path_buf(),
            });
        }
        let busy = DEFAULT_BUSY_TIMEOUT;
        let sql = |e| DriftError::sql(path, busy)(e);
        let flags = OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
            | match mode {
                Mode::Create => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
                Mode::Existing => OpenFlags::SQLITE_OPEN_READ_WRITE,
                Mode::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
            };
        let conn = Connection::open_with_flags(path, flags).map_err(sql)?;
        conn.busy_timeout(busy).map_err(sql)?;
        let mut db = DriftDb {
            conn,
            path: path.to_path_buf(),
            busy,
            read_only: mode == Mode::ReadOnly,
        };
        db.check_schema(mode)?;
        if mode != Mode::ReadOnly {
            let journal: String = db
                .conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(sql)?;
            if !journal.eq_ignore_ascii_case("wal") {
                return Err(DriftError::NotDrift {
                    path: path.to_path_buf(),
                    detail: format!("sqlite kept journal_mode {journal} instead of wal"),
                });
            }
            db.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(sql)?;
        }
        db.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        Ok(db)
    }

    /// Reads `user_version`: creates the schema in an empty file (not in
    /// read-only mode), refuses a newer one or a file with other tables.
    fn check_schema(&mut self, mode: Mode) -> Result<(), DriftError> {
        let path = self.path.clone();
        let sql = |e| DriftError::sql(&path, self.busy)(e);
        let not_drift = |detail: &str| DriftError::NotDrift {
            path: path.clone(),
            detail: detail.to_owned(),
        };
        let tx = if mode == Mode::ReadOnly {
            self.conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
        } else {
            // Immediate: two processes opening a new file create the schema once.
            self.conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
        }
        .map_err(sql)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sql)?;
        let tables: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
                .map_err(sql)?;
            let rows = stmt.query_map([], |row| row.get(0)).map_err(sql)?;
            rows.collect::<Result<_, _>>().map_err(sql)?
        };
        if version > SCHEMA_VERSION {
            return Err(DriftError::NewerSchema {
                path,
                found: version,
            });
        }
        if version == 0 {
            if !tables.is_empty() {
                return Err(not_drift(&format!(
                    "it has tables ({}) but no drift schema version",
                    tables.join(", ")
                )));
            }
            if mode == Mode::ReadOnly {
                return Err(not_drift("it is empty: no drift schema yet"));
            }
            tx.execute_batch(SCHEMA).map_err(sql)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(sql)?;
        } else if version < 1 {
            return Err(not_drift(&format!("schema version {version}")));
        } else if !["entries", "entry_reasons"]
            .iter()
            .all(|t| tables.iter().any(|have| have == t))
        {
            return Err(not_drift("the entries or entry_reasons table is missing"));
        }
        tx.commit().map_err(sql)?;
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long a statement waits for another connection's lock before it
    /// fails with [`DriftError::Busy`] (5 s unless set).
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> Result<(), DriftError> {
        self.conn
            .busy_timeout(timeout)
            .map_err(DriftError::sql(&self.path, timeout))?;
        self.busy = timeout;
        Ok(())
    }

    fn sql(&self) -> impl FnOnce(rusqlite::Error) -> DriftError + '_ {
        DriftError::sql(&self.path, self.busy)
    }

    /// Writes `entries` in one transaction: all of them or, if anything
    /// fails (or the process dies), none. Refused whole, before anything is
    /// written, when an entry has no reason, an `input_digest` that is not
    /// the SHA-256 hex of its input ([`DriftInput::digest`]), or a score or
    /// threshold that is NaN or infinite. Duplicate reasons are stored once.
    pub fn insert(&mut self, entries: &[NewEntry]) -> Result<(), DriftError> {
        let rows = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| encode(index, entry))
            .collect::<Result<Vec<_>, _>>()?;
        let sql = |e| DriftError::sql(&self.path, self.busy)(e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        {
            let mut insert_entry = tx
                .prepare_cached(
                    "INSERT INTO entries (created_ms, artifact, version, input, input_digest, \
                     output, scores, thresholds) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sql)?;
            let mut insert_reason = tx
                .prepare_cached("INSERT INTO entry_reasons (entry_id, reason) VALUES (?1, ?2)")
                .map_err(sql)?;
            for (entry, row) in entries.iter().zip(&rows) {
                insert_entry
                    .execute(rusqlite::params![
                        entry.created_ms,
                        entry.artifact,
                        entry.version,
                        row.input,
                        entry.input_digest,
                        entry.output,
                        row.scores,
                        row.thresholds,
                    ])
                    .map_err(sql)?;
                let id = tx.last_insert_rowid();
                for reason in &row.reasons {
                    insert_reason
                        .execute(rusqlite::params![id, reason.as_str()])
                        .map_err(sql)?;
                }
            }
        }
        tx.commit().map_err(sql)
    }

    /// The entries `filter` matches, newest first (by `created_ms`, then
    /// id); `limit` keeps the newest.
    pub fn list(&self, filter: &Filter) -> Result<Vec<Entry>, DriftError> {
        let (cond, mut params) = conditions(filter);
        params.push(limit_value(filter.limit));
        let query = format!(
            "SELECT {COLUMNS} FROM entries e WHERE {cond} \
             ORDER BY e.created_ms DESC, e.id DESC LIMIT ?"
        );
        self.query_entries(&query, params)
    }

    /// The entry with row id `id`.
    pub fn get(&self, id: i64) -> Result<Option<Entry>, DriftError> {
        let query = format!("SELECT {COLUMNS} FROM entries e WHERE e.id = ?");
        Ok(self
            .query_entries(&query, vec![Value::Integer(id)])?
            .into_iter()
            .next())
    }

    fn query_entries(&self, query: &str, params: Vec<Value>) -> Result<Vec<Entry>, DriftError> {
        let mut stmt = self.conn.prepare(query).map_err(self.sql())?;
        let raw = stmt
            .query_map(rusqlite::params_from_iter(params), RawRow::read)
            .map_err(self.sql())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql())?;
        raw.into_iter()
            .map(|row| {
                let id = row.id;
                row.decode().map_err(|detail| DriftError::Corrupt {
                    path: self.path.clone(),
                    id,
                    detail,
                })
            })
            .collect()
    }

    /// Deletes the entries `filter` matches (its `limit` is ignored) with
    /// their reasons; returns how many entries went.
    pub fn clear(&mut self, filter: &Filter) -> Result<u64, DriftError> {
        let (cond, params) = conditions(filter);
        let query = format!("DELETE FROM entries AS e WHERE {cond}");
        let deleted = self
            .conn
            .execute(&query, rusqlite::params_from_iter(params))
            .map_err(self.sql())?;
        Ok(deleted as u64)
    }

    /// Entries per artifact, version and reason, sorted by the three (an
    /// entry with two reasons counts once under each).
    pub fn counts(&self) -> Result<Vec<Count>, DriftError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT e.artifact, e.version, r.reason, COUNT(*) FROM entry_reasons r \
                 JOIN entries e ON e.id = r.entry_id GROUP BY e.artifact, e.version, r.reason",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, Value>(0)?,
                    row.get::<_, Value>(1)?,
                    row.get::<_, Value>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(self.sql())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.sql())?;
        let mut counts = rows
            .into_iter()
            .map(|(artifact, version, reason, count)| {
                let decoded = (|| {
                    Ok::<_, String>(Count {
                        artifact: text(artifact, "artifact")?,
                        version: text(version, "version")?,
                        reason: reason_of(&text(reason, "reason")?)?,
                        count: count as u64,
                    })
                })();
                decoded.map_err(|detail| DriftError::Corrupt {
                    path: self.path.clone(),
                    id: 0,
                    detail: format!("in the reason counts: {detail}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        counts.sort_by(|a, b| {
            (&a.artifact, &a.version, a.reason).cmp(&(&b.artifact, &b.version, b.reason))
        });
        Ok(counts)
    }

    /// Deletes the entries created more than `max_age_ms` before `now_ms`,
    /// then the oldest beyond the newest `max_entries` (0 keeps none), in
    /// one transaction; returns how many entries went.
    pub fn prune(&mut self, retention: Retention, now_ms: i64) -> Result<u64, DriftError> {
        let cutoff = now_ms.saturating_sub(retention.max_age_ms);
        let keep = i64::try_from(retention.max_entries).unwrap_or(i64::MAX);
        let sql = |e| DriftError::sql(&self.path, self.busy)(e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let old = tx
            .execute("DELETE FROM entries WHERE created_ms < ?1", [cutoff])
            .map_err(sql)?;
        let over = tx
            .execute(
                "DELETE FROM entries WHERE id IN (SELECT id FROM entries \
                 ORDER BY created_ms DESC, id DESC LIMIT -1 OFFSET ?1)",
                [keep],
            )
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok((old + over) as u64)
    }

    /// Writes one JSON line per matching entry that has an input, oldest
    /// first, as `kolmctl compile` reads an example without an output:
    /// `{"input":"..."}` for a text, `{"messages":[...]}` for a chat. With
    /// a `limit`, the newest that many matching entries are exported.
    /// Redacted entries are skipped and counted; an input already written
    /// (same `input_digest`) is skipped and counted.
    pub fn export_jsonl(
        &self,
        filter: &Filter,
        out: &mut dyn std::io::Write,
    ) -> Result<ExportStats, DriftError> {
        let (cond, mut params) = conditions(filter);
        params.push(limit_value(filter.limit));
        let query = format!(
            "SELECT id, input, input_digest FROM (SELECT e.id, e.created_ms, e.input, \
             e.input_digest FROM entries e WHERE {cond} \
             ORDER BY e.created_ms DESC, e.id DESC LIMIT ?) ORDER BY created_ms, id"
        );
        let mut stmt = self.conn.prepare(&query).map_err(self.sql())?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(self.sql())?;
        let mut stats = ExportStats::default();
        let mut seen = HashSet::new();
        while let Some(row) = rows.next().map_err(self.sql())? {
            let id: i64 = row.get(0).map_err(self.sql())?;
            let corrupt = |detail: String| DriftError::Corrupt {
                path: self.path.clone(),
                id,
                detail,
            };
            let input = opt_text(row.get(1).map_err(self.sql())?, "input").map_err(corrupt)?;
            let digest = text(row.get(2).map_err(self.sql())?, "input_digest").map_err(corrupt)?;
            let Some(input) = input else {
                stats.redacted_skipped += 1;
                continue;
            };
            if !seen.insert(digest) {
                stats.duplicates_skipped += 1;
                continue;
            }
            let input: DriftInput = serde_json::from_str(&input)
                .map_err(|e| corrupt(format!("input is not a text or chat: {e}")))?;
            let mut line = export::line(&input);
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(DriftError::Write)?;
            stats.written += 1;
        }
        out.flush().map_err(DriftError::Write)?;
        Ok(stats)
    }
}

/// An entry's JSON columns and its reasons, checked.
struct Encoded {
    input: Option<String>,
    scores: String,
    thresholds: String,
    reasons: Vec<Reason>,
}

fn encode(index: usize, entry: &NewEntry) -> Result<Encoded, DriftError> {
    let invalid = |detail: String| DriftError::Invalid { index, detail };
    if entry.reasons.is_empty() {
        return Err(DriftError::NoReasons { index });
    }
    let digest = &entry.input_digest;
    if digest.len() != 64
        || !digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(invalid(format!(
            "input_digest `{digest}` is not a SHA-256 in lower-case hex (use DriftInput::digest)"
        )));
    }
    if let Some(input) = &entry.input {
        if input.digest() != *digest {
            return Err(invalid(
                "input_digest is not the digest of its input (use DriftInput::digest)".into(),
            ));
        }
    }
    for (what, scores) in [("scores", &entry.scores), ("thresholds", &entry.thresholds)] {
        if let Some(field) = scores.non_finite() {
            return Err(invalid(format!(
                "{what}.{field} is not a finite number (JSON cannot hold NaN or infinity)"
            )));
        }
    }
    let json = |v: &Scores| serde_json::to_string(v).map_err(|e| invalid(e.to_string()));
    let mut reasons = entry.reasons.clone();
    reasons.sort();
    reasons.dedup();
    Ok(Encoded {
        input: entry
            .input
            .as_ref()
            .map(|i| serde_json::to_string(i).map_err(|e| invalid(e.to_string())))
            .transpose()?,
        scores: json(&entry.scores)?,
        thresholds: json(&entry.thresholds)?,
        reasons,
    })
}

/// The WHERE clause (over `entries e`) and its parameters for `filter`.
fn conditions(filter: &Filter) -> (String, Vec<Value>) {
    let mut cond = vec!["1".to_owned()];
    let mut params = Vec::new();
    if let Some(artifact) = &filter.artifact {
        cond.push("e.artifact = ?".into());
        params.push(Value::Text(artifact.clone()));
    }
    if let Some(version) = &filter.version {
        cond.push("e.version = ?".into());
        params.push(Value::Text(version.clone()));
    }
    if let Some(reason) = filter.reason {
        cond.push(
            "EXISTS (SELECT 1 FROM entry_reasons r WHERE r.entry_id = e.id AND r.reason = ?)"
                .into(),
        );
        params.push(Value::Text(reason.as_str().to_owned()));
    }
    if let Some(since) = filter.since_ms {
        cond.push("e.created_ms >= ?".into());
        params.push(Value::Integer(since));
    }
    (cond.join(" AND "), params)
}

/// sqlite's LIMIT for `limit` (-1: none).
fn limit_value(limit: Option<usize>) -> Value {
    Value::Integer(limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)))
}

/// One row of [`COLUMNS`] as sqlite stored it; decoded apart so a bad row
/// is an error naming its id.
struct RawRow {
    id: i64,
    created_ms: Value,
    artifact: Value,
    version: Value,
    input: Value,
    input_digest: Value,
    output: Value,
    scores: Value,
    thresholds: Value,
    reasons: Value,
}

impl RawRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            id: row.get(0)?,
            created_ms: row.get(1)?,
            artifact: row.get(2)?,
            version: row.get(3)?,
            input: row.get(4)?,
            input_digest: row.get(5)?,
            output: row.get(6)?,
            scores: row.get(7)?,
            thresholds: row.get(8)?,
            reasons: row.get(9)?,
        })
    }

    fn decode(self) -> Result<Entry, String> {
        let created_ms = match self.created_ms {
            Value::Integer(ms) => ms,
            other => return Err(format!("created_ms is {}, not an integer", kind(&other))),
        };
        let input = opt_text(self.input, "input")?
            .map(|json| {
                serde_json::from_str::<DriftInput>(&json)
                    .map_err(|e| format!("input is not a text or chat: {e}"))
            })
            .transpose()?;
        let scores = |v: Value, what: &str| -> Result<Scores, String> {
            serde_json::from_str(&text(v, what)?).map_err(|e| format!("{what}: {e}"))
        };
        let reasons = match opt_text(self.reasons, "reasons")? {
            None => return Err("it has no reason".into()),
            Some(list) => {
                let mut reasons = list
                    .split(',')
                    .map(reason_of)
                    .collect::<Result<Vec<_>, _>>()?;
                reasons.sort();
                reasons
            }
        };
        Ok(Entry {
            id: self.id,
            entry: NewEntry {
                created_ms,
                artifact: text(self.artifact, "artifact")?,
                version: text(self.version, "version")?,
                reasons,
                input,
                input_digest: text(self.input_digest, "input_digest")?,
                output: opt_text(self.output, "output")?,
                scores: scores(self.scores, "scores")?,
                thresholds: scores(self.thresholds, "thresholds")?,
            },
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "a text",
        Value::Blob(_) => "a blob",
    }
}

fn text(v: Value, what: &str) -> Result<String, String> {
    match v {
        Value::Text(s) => Ok(s),
        other => Err(format!("{what} is {}, not a text", kind(&other))),
    }
}

fn opt_text(v: Value, what: &str) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        other => text(other, what).map(Some),
    }
}

fn reason_of(name: &str) -> Result<Reason, String> {
    name.parse::<Reason>()
        .map_err(|_| format!("unknown reason `{name}`"))
}
