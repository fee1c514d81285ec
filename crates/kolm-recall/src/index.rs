//! The index: one sqlite file holding the chunks, an FTS5 table (BM25) over
//! their text and a sqlite-vec `vec0` table over their vectors — float32,
//! or int8 / binary quantized with the float32 vectors kept for rescoring.
//! Retrieval is vector, BM25 or hybrid (reciprocal rank fusion of both).
//!
//! Schema (version 1):
//! - `meta(key, value)`: schema, embedder, dimension, quantization, chunking.
//! - `files(id, source, kind, digest, size, chunks)`: one row per indexed file.
//! - `chunks(id, file_id, ordinal, start, end, page, record, digest)`.
//! - `chunk_text` (FTS5, `porter unicode61`): the text, rowid = chunk id.
//! - `chunk_vec` (vec0): the vector, rowid = chunk id.
//! - `chunk_f32(id, embedding)`: float32 vectors, only when quantized.
//! - `skipped(source, kind, reason)`: what the last build did not index.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::chunk::{Chunk, ChunkOptions};
use crate::error::{RecallError, Result};
use crate::ingest::Skipped;
use crate::kind::Kind;

/// Version of the schema above.
pub const SCHEMA_VERSION: u32 = 1;
/// The constant of reciprocal rank fusion (Cormack et al. 2009).
pub const RRF_K: f64 = 60.0;
/// sqlite-vec's largest `k`.
const MAX_KNN: usize = 4096;

/// How vectors are stored in the `vec0` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quantization {
    /// Exact float32 search.
    #[default]
    F32,
    /// int8 per dimension (`vec_quantize_int8(.., 'unit')`), rescored in float32.
    Int8,
    /// One bit per dimension (hamming distance), rescored in float32.
    Binary,
}

impl Quantization {
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F32 => "f32",
            Quantization::Int8 => "int8",
            Quantization::Binary => "binary",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" | "float32" | "float" => Some(Quantization::F32),
            "int8" => Some(Quantization::Int8),
            "binary" | "bit" => Some(Quantization::Binary),
            _ => None,
        }
    }

    /// How many candidates per wanted result the quantized search fetches
    /// before float32 rescoring.
    fn oversample(self) -> usize {
        match self {
            Quantization::F32 => 1,
            Quantization::Int8 => 4,
            Quantization::Binary => 16,
        }
    }
}

/// Which retrieval a query uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Reciprocal rank fusion of vector and BM25 results.
    #[default]
    Hybrid,
    /// Nearest vectors only.
    Vector,
    /// BM25 over the text only.
    Bm25,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hybrid" => Some(Mode::Hybrid),
            "vector" => Some(Mode::Vector),
            "bm25" => Some(Mode::Bm25),
            _ => None,
        }
    }
}

/// What an index was built with; a rebuild reuses an index only when these
/// agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    pub schema: u32,
    pub embedder: String,
    pub dimension: usize,
    pub quantization: Quantization,
    pub chunk: ChunkOptions,
}

/// One retrieved chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The file, relative to the corpus.
    pub source: String,
    pub kind: Kind,
    /// Byte offset of the chunk in the document's text.
    pub offset: u64,
    pub end: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// Higher is better: the fused score (hybrid), the cosine similarity
    /// (vector) or the negated BM25 (bm25).
    pub score: f64,
    /// Cosine similarity to the query, when the chunk came from vector search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    pub text: String,
    pub chunk_id: i64,
}

/// Counts of an index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStats {
    pub files: u64,
    pub chunks: u64,
    pub skipped: u64,
}

/// An open index.
pub struct Index {
    conn: Connection,
    path: PathBuf,
    meta: IndexMeta,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish()
    }
}

/// Float32 vector as the little-endian blob sqlite-vec reads.
pub fn f32_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Index {
    /// Opens the index at `path` for a build with `meta`: an existing index
    /// built the same way is reused (incremental rebuild); anything else at
    /// `path` that is a kolm index built differently is replaced. Returns
    /// whether the old contents were kept.
    pub fn create_or_open(path: &Path, meta: &IndexMeta) -> Result<(Index, bool)> {
        if path.exists() {
            match Index::read_meta_at(path) {
                Ok(Some(old)) if &old == meta => {
                    let conn = crate::sqlite::open_rw(path)?;
                    return Ok((
                        Index {
                            conn,
                            path: path.to_path_buf(),
                            meta: meta.clone(),
                        },
                        true,
                    ));
                }
                Ok(Some(_)) => {
                    std::fs::remove_file(path).map_err(RecallError::io(path))?;
                }
                Ok(None) | Err(_) => {
                    return Err(RecallError::BadIndex {
                        path: path.to_path_buf(),
                        detail: "exists and is not a kolm recall index; refusing to overwrite it"
                            .into(),
                    })
                }
            }
        }
        let conn = crate::sqlite::open_rw(path)?;
        let index = Index {
            conn,
            path: path.to_path_buf(),
            meta: meta.clone(),
        };
        index.create_schema()?;
        Ok((index, false))
    }

    /// Opens an index read-only.
    pub fn open(path: &Path) -> Result<Index> {
        let meta = Index::read_meta_at(path)?.ok_or_else(|| RecallError::BadIndex {
            path: path.to_path_buf(),
            detail: "not a kolm recall index (no meta table)".into(),
        })?;
        if meta.schema != SCHEMA_VERSION {
            return Err(RecallError::BadIndex {
                path: path.to_path_buf(),
                detail: format!(
                    "schema version {} (this build reads {SCHEMA_VERSION})",
                    meta.schema
                ),
            });
        }
        let conn = crate::sqlite::open_ro(path)?;
        Ok(Index {
            conn,
            path: path.to_path_buf(),
            meta,
        })
    }

    fn read_meta_at(path: &Path) -> Result<Option<IndexMeta>> {
        if !path.is_file() {
            return Err(RecallError::BadIndex {
                path: path.to_path_buf(),
                detail: "no such file".into(),
            });
        }
        let conn = crate::sqlite::open_ro(path)?;
        let sql = RecallError::sql(path);
        let has: Option<String> = conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        if has.is_none() {
            return Ok(None);
        }
        let json: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key='index'", [], |r| r.get(0))
            .optional()
            .map_err(RecallError::sql(path))?;
        let Some(json) = json else { return Ok(None) };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| RecallError::BadIndex {
                path: path.to_path_buf(),
                detail: format!("unreadable meta: {e}"),
            })
    }

    fn create_schema(&self) -> Result<()> {
        let dim = self.meta.dimension;
        let column = match self.meta.quantization {
            Quantization::F32 => format!("embedding float[{dim}]"),
            Quantization::Int8 => format!("embedding int8[{dim}]"),
            Quantization::Binary => format!("embedding bit[{dim}]"),
        };
        let meta_json = serde_json::to_string(&self.meta).expect("meta serializes");
        let sql = format!(
            "BEGIN;
             CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE files(id INTEGER PRIMARY KEY, source TEXT NOT NULL UNIQUE,
                 kind TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
                 chunks INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE chunks(id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL REFERENCES files(id),
                 ordinal INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
                 page INTEGER, record INTEGER, digest TEXT NOT NULL);
             CREATE INDEX chunks_file ON chunks(file_id);
             CREATE VIRTUAL TABLE chunk_text USING fts5(text, tokenize='porter unicode61 remove_diacritics 2');
             CREATE VIRTUAL TABLE chunk_vec USING vec0({column});
             CREATE TABLE chunk_f32(id INTEGER PRIMARY KEY, embedding BLOB NOT NULL);
             CREATE TABLE skipped(source TEXT PRIMARY KEY, kind TEXT, reason TEXT NOT NULL);
             INSERT INTO meta(key, value) VALUES ('index', '{}');
             COMMIT;",
            meta_json.replace('\'', "''")
        );
        self.conn
            .execute_batch(&sql)
            .map_err(RecallError::sql(&self.path))
    }

    /// What the index was built with.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a free-form value in `meta` (e.g. where the embedder came from).
    pub fn set_note(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![format!("note.{key}"), value],
            )
            .map_err(RecallError::sql(&self.path))?;
        Ok(())
    }

    /// A value stored with [`set_note`](Self::set_note).
    pub fn note(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![format!("note.{key}")],
                |r| r.get(0),
            )
            .optional()
            .map_err(RecallError::sql(&self.path))
    }

    /// The digest an indexed file had, if it is indexed.
    pub fn file_digest(&self, source: &str) -> Result<Option<(String, u64)>> {
        self.conn
            .query_row(
                "SELECT digest, chunks FROM files WHERE source = ?1",
                params![source],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()
            .map_err(RecallError::sql(&self.path))
    }

    /// Begins a file's transaction: removes what was indexed for `source`
    /// and adds its row. Chunks follow with [`add_chunks`](Self::add_chunks);
    /// [`commit_file`](Self::commit_file) ends it.
    pub fn begin_file(&mut self, source: &str, kind: Kind, digest: &str, size: u64) -> Result<i64> {
        let sql = RecallError::sql(&self.path);
        self.conn.execute_batch("BEGIN").map_err(sql)?;
        self.delete_file(source)?;
        self.conn
            .execute(
                "INSERT INTO files(source, kind, digest, size) VALUES (?1, ?2, ?3, ?4)",
                params![source, kind.as_str(), digest, size as i64],
            )
            .map_err(RecallError::sql(&self.path))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Adds chunks with their vectors to the file `file_id`; `first` is the
    /// ordinal of the first.
    pub fn add_chunks(
        &mut self,
        file_id: i64,
        first: u64,
        chunks: &[Chunk],
        vectors: &[Vec<f32>],
    ) -> Result<()> {
        let map = RecallError::sql(&self.path);
        let vec_sql = match self.meta.quantization {
            Quantization::F32 => "INSERT INTO chunk_vec(rowid, embedding) VALUES (?1, ?2)",
            Quantization::Int8 => {
                "INSERT INTO chunk_vec(rowid, embedding) VALUES (?1, vec_quantize_int8(?2, 'unit'))"
            }
            Quantization::Binary => {
                "INSERT INTO chunk_vec(rowid, embedding) VALUES (?1, vec_quantize_binary(?2))"
            }
        };
        let quantized = self.meta.quantization != Quantization::F32;
        let result = (|| -> rusqlite::Result<()> {
            let mut ins_chunk = self.conn.prepare_cached(
                "INSERT INTO chunks(file_id, ordinal, start, end, page, record, digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut ins_text = self
                .conn
                .prepare_cached("INSERT INTO chunk_text(rowid, text) VALUES (?1, ?2)")?;
            let mut ins_vec = self.conn.prepare_cached(vec_sql)?;
            let mut ins_f32 = self
                .conn
                .prepare_cached("INSERT INTO chunk_f32(id, embedding) VALUES (?1, ?2)")?;
            for (i, (chunk, v)) in chunks.iter().zip(vectors).enumerate() {
                ins_chunk.execute(params![
                    file_id,
                    (first + i as u64) as i64,
                    chunk.start as i64,
                    chunk.end as i64,
                    chunk.page,
                    chunk.record.map(|r| r as i64),
                    chunk.digest,
                ])?;
                let id = self.conn.last_insert_rowid();
                ins_text.execute(params![id, chunk.text])?;
                let blob = f32_blob(v);
                ins_vec.execute(params![id, blob])?;
                if quantized {
                    ins_f32.execute(params![id, blob])?;
                }
            }
            Ok(())
        })();
        result.map_err(map)
    }

    /// Ends a file's transaction, recording its chunk count.
    pub fn commit_file(&mut self, file_id: i64, chunks: u64) -> Result<()> {
        let sql = RecallError::sql(&self.path);
        self.conn
            .execute(
                "UPDATE files SET chunks = ?1 WHERE id = ?2",
                params![chunks as i64, file_id],
            )
            .map_err(sql)?;
        self.conn
            .execute_batch("COMMIT")
            .map_err(RecallError::sql(&self.path))
    }

    /// Abandons a file's transaction.
    pub fn rollback_file(&mut self) -> Result<()> {
        self.conn
            .execute_batch("ROLLBACK")
            .map_err(RecallError::sql(&self.path))
    }

    fn delete_file(&self, source: &str) -> Result<()> {
        let res = (|| -> rusqlite::Result<()> {
            let id: Option<i64> = self
                .conn
                .query_row(
                    "SELECT id FROM files WHERE source = ?1",
                    params![source],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(()) };
            self.conn.execute(
                "DELETE FROM chunk_vec WHERE rowid IN (SELECT id FROM chunks WHERE file_id = ?1)",
                params![id],
            )?;
            self.conn.execute(
                "DELETE FROM chunk_text WHERE rowid IN (SELECT id FROM chunks WHERE file_id = ?1)",
                params![id],
            )?;
            self.conn.execute(
                "DELETE FROM chunk_f32 WHERE id IN (SELECT id FROM chunks WHERE file_id = ?1)",
                params![id],
            )?;
            self.conn
                .execute("DELETE FROM chunks WHERE file_id = ?1", params![id])?;
            self.conn
                .execute("DELETE FROM files WHERE id = ?1", params![id])?;
            Ok(())
        })();
        res.map_err(RecallError::sql(&self.path))
    }

    /// Removes every indexed file whose source is not in `keep`; returns
    /// their sources.
    pub fn remove_missing(&mut self, keep: &HashSet<String>) -> Result<Vec<String>> {
        let sources: Vec<String> = {
            let mut st = self
                .conn
                .prepare("SELECT source FROM files ORDER BY source")
                .map_err(RecallError::sql(&self.path))?;
            let rows = st
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(RecallError::sql(&self.path))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(RecallError::sql(&self.path))?
        };
        let gone: Vec<String> = sources.into_iter().filter(|s| !keep.contains(s)).collect();
        self.conn
            .execute_batch("BEGIN")
            .map_err(RecallError::sql(&self.path))?;
        for s in &gone {
            self.delete_file(s)?;
        }
        self.conn
            .execute_batch("COMMIT")
            .map_err(RecallError::sql(&self.path))?;
        Ok(gone)
    }

    /// Replaces the list of skipped files.
    pub fn set_skipped(&mut self, skipped: &[Skipped]) -> Result<()> {
        let res = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            tx.execute("DELETE FROM skipped", [])?;
            {
                let mut st = tx.prepare(
                    "INSERT OR REPLACE INTO skipped(source, kind, reason) VALUES (?1, ?2, ?3)",
                )?;
                for s in skipped {
                    st.execute(params![s.source, s.kind.map(Kind::as_str), s.reason])?;
                }
            }
            tx.commit()
        })();
        res.map_err(RecallError::sql(&self.path))
    }

    /// Merges the FTS5 segments and compacts the file after a build.
    pub fn optimize(&self) -> Result<()> {
        self.conn
            .execute_batch("INSERT INTO chunk_text(chunk_text) VALUES ('optimize'); VACUUM;")
            .map_err(RecallError::sql(&self.path))
    }

    /// Files, chunks and skipped files.
    pub fn stats(&self) -> Result<IndexStats> {
        let count = |sql: &str| -> Result<u64> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(RecallError::sql(&self.path))
        };
        Ok(IndexStats {
            files: count("SELECT count(*) FROM files")?,
            chunks: count("SELECT count(*) FROM chunks")?,
            skipped: count("SELECT count(*) FROM skipped")?,
        })
    }

    /// The files skipped by the last build.
    pub fn skipped(&self) -> Result<Vec<Skipped>> {
        let res = (|| -> rusqlite::Result<Vec<Skipped>> {
            let mut st = self
                .conn
                .prepare("SELECT source, kind, reason FROM skipped ORDER BY source")?;
            let rows = st.query_map([], |r| {
                let kind: Option<String> = r.get(1)?;
                Ok(Skipped {
                    source: r.get(0)?,
                    kind: kind
                        .and_then(|k| serde_json::from_value(serde_json::Value::String(k)).ok()),
                    reason: r.get(2)?,
                })
            })?;
            rows.collect()
        })();
        res.map_err(RecallError::sql(&self.path))
    }

    /// Nearest chunks to `query` (a unit vector), best first, as
    /// (chunk id, cosine similarity). Quantized indexes fetch more
    /// candidates and rescore them in float32.
    pub fn vector_search(&self, query: &[f32], n: usize) -> Result<Vec<(i64, f32)>> {
        if query.len() != self.meta.dimension {
            return Err(RecallError::InvalidOption(format!(
                "the query vector has {} dimensions, the index {}",
                query.len(),
                self.meta.dimension
            )));
        }
        let q = self.meta.quantization;
        let fetch = (n * q.oversample()).clamp(1, MAX_KNN);
        let sql = match q {
            Quantization::F32 => "SELECT rowid, distance FROM chunk_vec WHERE embedding MATCH ?1 AND k = ?2 ORDER BY distance",
            Quantization::Int8 => "SELECT rowid, distance FROM chunk_vec WHERE embedding MATCH vec_quantize_int8(?1, 'unit') AND k = ?2 ORDER BY distance",
            Quantization::Binary => "SELECT rowid, distance FROM chunk_vec WHERE embedding MATCH vec_quantize_binary(?1) AND k = ?2 ORDER BY distance",
        };
        let map = RecallError::sql(&self.path);
        let res = (|| -> rusqlite::Result<Vec<(i64, f32)>> {
            let mut st = self.conn.prepare_cached(sql)?;
            let rows = st.query_map(params![f32_blob(query), fetch as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
            })?;
            let found: Vec<(i64, f64)> = rows.collect::<rusqlite::Result<_>>()?;
            if q == Quantization::F32 {
                // Unit vectors: |a-b|² = 2 - 2cos.
                return Ok(found
                    .into_iter()
                    .map(|(id, d)| (id, (1.0 - d * d / 2.0) as f32))
                    .collect());
            }
            let mut get = self
                .conn
                .prepare_cached("SELECT embedding FROM chunk_f32 WHERE id = ?1")?;
            let mut rescored = Vec::with_capacity(found.len());
            for (id, _) in found {
                let blob: Vec<u8> = get.query_row(params![id], |r| r.get(0))?;
                rescored.push((id, dot(query, &blob_f32(&blob))));
            }
            rescored.sort_by(|a, b| b.1.total_cmp(&a.1));
            rescored.truncate(n);
            Ok(rescored)
        })();
        res.map_err(map)
    }

    /// BM25 over the chunks' text for the words of `query` (any of them),
    /// best first, as (chunk id, BM25 score; higher is better).
    pub fn bm25_search(&self, query: &str, n: usize) -> Result<Vec<(i64, f64)>> {
        let Some(expr) = fts_query(query) else {
            return Ok(Vec::new());
        };
        let res = (|| -> rusqlite::Result<Vec<(i64, f64)>> {
            let mut st = self.conn.prepare_cached(
                "SELECT rowid, bm25(chunk_text) AS s FROM chunk_text WHERE chunk_text MATCH ?1 ORDER BY s LIMIT ?2",
            )?;
            let rows = st.query_map(params![expr, n as i64], |r| {
                Ok((r.get::<_, i64>(0)?, -r.get::<_, f64>(1)?))
            })?;
            rows.collect()
        })();
        res.map_err(RecallError::sql(&self.path))
    }

    /// The top `k` chunks for a query (its text and its vector; the vector
    /// may be empty for [`Mode::Bm25`]).
    pub fn search(&self, text: &str, vector: &[f32], k: usize, mode: Mode) -> Result<Vec<Hit>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        // Each list of the fusion goes deeper than k so a chunk ranked
        // moderately by both can win.
        let depth = (k * 4).max(40);
        let scored: Vec<(i64, f64, Option<f32>)> = match mode {
            Mode::Vector => self
                .vector_search(vector, k)?
                .into_iter()
                .map(|(id, s)| (id, f64::from(s), Some(s)))
                .collect(),
            Mode::Bm25 => self
                .bm25_search(text, k)?
                .into_iter()
                .map(|(id, s)| (id, s, None))
                .collect(),
            Mode::Hybrid => {
                let vec = self.vector_search(vector, depth)?;
                let bm = self.bm25_search(text, depth)?;
                let mut fused: HashMap<i64, (f64, Option<f32>)> = HashMap::new();
                for (rank, (id, sim)) in vec.iter().enumerate() {
                    let e = fused.entry(*id).or_insert((0.0, None));
                    e.0 += 1.0 / (RRF_K + rank as f64 + 1.0);
                    e.1 = Some(*sim);
                }
                for (rank, (id, _)) in bm.iter().enumerate() {
                    fused.entry(*id).or_insert((0.0, None)).0 += 1.0 / (RRF_K + rank as f64 + 1.0);
                }
                let mut all: Vec<(i64, f64, Option<f32>)> = fused
                    .into_iter()
                    .map(|(id, (s, sim))| (id, s, sim))
                    .collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                all.truncate(k);
                all
            }
        };
        let res = (|| -> rusqlite::Result<Vec<Hit>> {
            let mut st = self.conn.prepare_cached(
                "SELECT f.source, f.kind, c.start, c.end, c.page, c.record, t.text
                 FROM chunks c JOIN files f ON f.id = c.file_id JOIN chunk_text t ON t.rowid = c.id
                 WHERE c.id = ?1",
            )?;
            let mut hits = Vec::with_capacity(scored.len());
            for (id, score, similarity) in scored {
                let hit = st.query_row(params![id], |r| {
                    let kind: String = r.get(1)?;
                    Ok(Hit {
                        source: r.get(0)?,
                        kind: serde_json::from_value(serde_json::Value::String(kind))
                            .unwrap_or(Kind::Text),
                        offset: r.get::<_, i64>(2)? as u64,
                        end: r.get::<_, i64>(3)? as u64,
                        page: r.get(4)?,
                        record: r.get::<_, Option<i64>>(5)?.map(|x| x as u64),
                        score,
                        similarity,
                        text: r.get(6)?,
                        chunk_id: id,
                    })
                })?;
                hits.push(hit);
            }
            Ok(hits)
        })();
        res.map_err(RecallError::sql(&self.path))
    }
}

impl Index {
    /// Every chunk of the index with its text and float32 vector, in id
    /// order, grouped by file: (source, kind, digest, size, chunks, vectors).
    #[allow(clippy::type_complexity)]
    pub fn export(&self) -> Result<Vec<(String, Kind, String, u64, Vec<Chunk>, Vec<Vec<f32>>)>> {
        let vec_sql = if self.meta.quantization == Quantization::F32 {
            "SELECT embedding FROM chunk_vec WHERE rowid = ?1"
        } else {
            "SELECT embedding FROM chunk_f32 WHERE id = ?1"
        };
        let res = (|| -> rusqlite::Result<_> {
            let mut files = self
                .conn
                .prepare("SELECT id, source, kind, digest, size FROM files ORDER BY id")?;
            let mut chunks = self.conn.prepare(
                "SELECT c.id, c.start, c.end, c.page, c.record, c.digest, t.text FROM chunks c
                 JOIN chunk_text t ON t.rowid = c.id WHERE c.file_id = ?1 ORDER BY c.ordinal",
            )?;
            let mut vec = self.conn.prepare(vec_sql)?;
            let mut out = Vec::new();
            let rows: Vec<(i64, String, String, String, i64)> = files
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (id, source, kind, digest, size) in rows {
                let mut cs = Vec::new();
                let mut vs = Vec::new();
                let rows: Vec<(i64, Chunk)> = chunks
                    .query_map(params![id], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            Chunk {
                                start: r.get::<_, i64>(1)? as u64,
                                end: r.get::<_, i64>(2)? as u64,
                                page: r.get(3)?,
                                record: r.get::<_, Option<i64>>(4)?.map(|x| x as u64),
                                digest: r.get(5)?,
                                text: r.get(6)?,
                            },
                        ))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                for (cid, c) in rows {
                    let blob: Vec<u8> = vec.query_row(params![cid], |r| r.get(0))?;
                    vs.push(blob_f32(&blob));
                    cs.push(c);
                }
                let kind =
                    serde_json::from_value(serde_json::Value::String(kind)).unwrap_or(Kind::Text);
                out.push((source, kind, digest, size as u64, cs, vs));
            }
            Ok(out)
        })();
        res.map_err(RecallError::sql(&self.path))
    }
}

/// Copies the index at `src` into a new index at `dst` with another vector
/// quantization, without re-embedding (the float32 vectors are kept).
pub fn requantize(src: &Path, dst: &Path, quantization: Quantization) -> Result<IndexStats> {
    let from = Index::open(src)?;
    let meta = IndexMeta {
        quantization,
        ..from.meta().clone()
    };
    let (mut to, _) = Index::create_or_open(dst, &meta)?;
    for (source, kind, digest, size, chunks, vectors) in from.export()? {
        let id = to.begin_file(&source, kind, &digest, size)?;
        to.add_chunks(id, 0, &chunks, &vectors)?;
        to.commit_file(id, chunks.len() as u64)?;
    }
    to.set_skipped(&from.skipped()?)?;
    to.optimize()?;
    to.stats()
}

/// An FTS5 query matching any word of `text`, each quoted so no FTS5
/// syntax from the user is interpreted. `None` when there is no word.
pub fn fts_query(text: &str) -> Option<String> {
    let mut seen = HashSet::new();
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| seen.insert(w.clone()))
        .take(64)
        .map(|w| format!("\"{w}\""))
        .collect();
    if words.is_empty() {
        None
    } else {
        Some(words.join(" OR "))
    }
}
