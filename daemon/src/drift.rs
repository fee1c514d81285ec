//! The drift log at run time (`docs/drift.md`): every chat answered by a
//! compiled artifact is measured the way its compile measured the eval pack
//! (`kolm_artifact::drift`): the verifier's word, the mean token
//! log-probability, the recipe pack's coverage of the answer and the best
//! recall similarity. An answer that fails the verifier, or whose figure
//! falls below the artifact's threshold, is logged with its input, its
//! output, the reasons and the figures, in the sqlite database under the
//! kolm home (`kolm_drift`).
//!
//! Writing never slows a request: [`DriftLog::submit`] hands the entry to a
//! writer thread through a bounded channel and, when the channel is full
//! (a slow disk, a locked database), drops it and counts the drop. The
//! writer batches what is waiting into one transaction and applies the
//! retention (entries by count and by age) as it goes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kolm_artifact::drift::DriftThresholds;
use kolm_artifact::recipes::RecipePack;
use kolm_drift::{DriftDb, DriftInput, Message, NewEntry, Reason, Retention, Scores};
use kolm_runtime::{ChatMessage, Completion};

use crate::config::DriftSettings;
use crate::verify::Verified;

/// Entries waiting for the writer; past this, new ones are dropped.
pub const CHANNEL_CAPACITY: usize = 256;

/// The most entries the writer puts in one transaction.
const BATCH: usize = 64;

/// How often the writer applies the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The drift log: the settings, the channel to the writer, and what was
/// logged and dropped since the daemon started.
#[derive(Debug)]
pub struct DriftLog {
    settings: DriftSettings,
    path: Option<PathBuf>,
    sender: Mutex<Option<SyncSender<NewEntry>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// (artifact reference, reason) → entries handed to the writer.
    logged: Mutex<BTreeMap<(String, Reason), u64>>,
    dropped: AtomicU64,
    /// Entries the writer could not write (the database failed).
    failed: Arc<AtomicU64>,
}

impl DriftLog {
    /// The log of the kolm home at `home`: the database is opened (and
    /// created) by the writer thread, so a broken database never stops the
    /// daemon; its error is logged and every entry counts as failed.
    pub fn open(home: &Path, settings: DriftSettings) -> DriftLog {
        if !settings.enabled && !settings.per_artifact.values().any(|on| *on) {
            return DriftLog::off(settings);
        }
        let path = kolm_drift::default_path(home);
        let (sender, receiver) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let failed = Arc::new(AtomicU64::new(0));
        let retention = Retention {
            max_entries: u64::from(settings.max_entries),
            max_age_ms: i64::try_from(settings.max_age.as_millis()).unwrap_or(i64::MAX),
        };
        let writer = {
            let (path, failed) = (path.clone(), Arc::clone(&failed));
            std::thread::Builder::new()
                .name("kolmd-drift".into())
                .spawn(move || write_entries(&path, retention, &receiver, &failed))
                .ok()
        };
        DriftLog {
            settings,
            path: Some(path),
            sender: Mutex::new(writer.is_some().then_some(sender)),
            writer: Mutex::new(writer),
            logged: Mutex::default(),
            dropped: AtomicU64::new(0),
            failed,
        }
    }

    /// A log that logs nothing.
    pub fn off(settings: DriftSettings) -> DriftLog {
        DriftLog {
            settings: DriftSettings {
                enabled: false,
                per_artifact: BTreeMap::new(),
                ..settings
            },
            path: None,
            sender: Mutex::new(None),
            writer: Mutex::new(None),
            logged: Mutex::default(),
            dropped: AtomicU64::new(0),
            failed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The database's path; `None` when drift is off.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The observation of a chat `messages` (as the client sent them) on
    /// the artifact `name` at `reference`, grounded with `recall_best` as
    /// its best similarity; `None` when its answers are not logged (drift
    /// off for it, an artifact without measured thresholds, or an input the
    /// version absorbed from drift when it was compiled).
    pub fn observe(
        self: &Arc<Self>,
        name: &str,
        reference: &str,
        thresholds: Option<&Arc<DriftThresholds>>,
        recipes: Option<&Arc<RecipePack>>,
        messages: &[ChatMessage],
    ) -> Option<Observation> {
        let thresholds = thresholds?;
        if self.path.is_none() || !self.settings.enabled_for(name) {
            return None;
        }
        let version = reference
            .rsplit_once(':')
            .map_or(String::new(), |(_, v)| v.to_owned());
        let input = match messages {
            [only] if only.role == "user" => DriftInput::Text(only.content.clone()),
            _ => DriftInput::Chat(
                messages
                    .iter()
                    .map(|m| Message {
                        role: m.role.clone(),
                        content: m.content.clone(),
                    })
                    .collect(),
            ),
        };
        // A recompile trained on this very input: it is this version's
        // own example now, not drift.
        if thresholds.covers(&input.digest()) {
            return None;
        }
        Some(Observation {
            log: Arc::clone(self),
            artifact: name.to_owned(),
            reference: reference.to_owned(),
            version,
            input,
            thresholds: Arc::clone(thresholds),
            recipes: recipes.cloned(),
            recall_best: None,
        })
    }

    /// Hands `entry` to the writer, or drops it (counted) when the channel
    /// is full or the writer is gone. Never blocks.
    fn submit(&self, reference: &str, entry: NewEntry) {
        let reasons = entry.reasons.clone();
        let sent = match self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(s) => match s.try_send(entry) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if sent {
            let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            for r in reasons {
                *logged.entry((reference.to_owned(), r)).or_default() += 1;
            }
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries handed to the writer since the start, by artifact reference
    /// and reason (an entry with two reasons counts under each).
    pub fn logged(&self) -> BTreeMap<(String, Reason), u64> {
        self.logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Entries dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Entries the writer failed to write.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Closes the channel and waits for the writer to write what is
    /// waiting (at shutdown).
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = w.join();
        }
    }
}

/// One chat's observation, made when it is prepared and recorded when its
/// answer is whole.
#[derive(Clone, Debug)]
pub struct Observation {
    log: Arc<DriftLog>,
    artifact: String,
    reference: String,
    version: String,
    input: DriftInput,
    thresholds: Arc<DriftThresholds>,
    recipes: Option<Arc<RecipePack>>,
    /// The best similarity of the chunks the chat was grounded in.
    pub recall_best: Option<f64>,
}

impl Observation {
    /// Measures the answer `text` (the engine's `completion` of it, the
    /// verifier's word) and logs it when it is drift. Cheap: no model call.
    pub fn record(&self, text: &str, completion: &Completion, verified: Option<&Verified>) {
        let scores = Scores {
            mean_logprob: completion.mean_logprob,
            recipe_coverage: self
                .recipes
                .as_ref()
                .and_then(|p| p.answer_coverage(&completion.tokens)),
            recall_best: self.recall_best,
            distance: None,
            failed_rules: verified.map(|v| v.rules.clone()).unwrap_or_default(),
        };
        let reasons = judge(&self.thresholds, &scores, verified);
        if reasons.is_empty() {
            return;
        }
        let redact = self.log.settings.redact;
        let entry = NewEntry {
            created_ms: now_ms(),
            artifact: self.artifact.clone(),
            version: self.version.clone(),
            reasons,
            input_digest: self.input.digest(),
            input: (!redact).then(|| self.input.clone()),
            output: (!redact).then(|| text.to_owned()),
            scores,
            thresholds: Scores {
                mean_logprob: self.thresholds.mean_logprob,
                recipe_coverage: self.thresholds.recipe_coverage,
                recall_best: self.thresholds.recall_best,
                ..Scores::default()
            },
        };
        self.log.submit(&self.reference, entry);
    }
}

/// Why an answer with these figures is drift: a verifier failure (the
/// answer returned failed, or only a retry passed), and each figure below
/// its threshold. Empty: not drift.
pub fn judge(
    thresholds: &DriftThresholds,
    scores: &Scores,
    verified: Option<&Verified>,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if verified.is_some_and(|v| !v.passed || v.attempts > 1) {
        reasons.push(Reason::Verifier);
    }
    let below = |figure: Option<f64>, threshold: Option<f64>| matches!((figure, threshold), (Some(f), Some(t)) if f < t);
    if below(scores.mean_logprob, thresholds.mean_logprob) {
        reasons.push(Reason::Logprob);
    }
    if below(scores.recipe_coverage, thresholds.recipe_coverage) {
        reasons.push(Reason::Recipes);
    }
    if below(scores.recall_best, thresholds.recall_best) {
        reasons.push(Reason::Recall);
    }
    reasons
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The writer thread: opens the database, then writes what arrives in
/// batches until the channel closes.
fn write_entries(
    path: &Path,
    retention: Retention,
    receiver: &Receiver<NewEntry>,
    failed: &AtomicU64,
) {
    let mut db = match DriftDb::open(path) {
        Ok(db) => Some(db),
        Err(e) => {
            tracing::error!(
                "the drift log at {} cannot be opened; drift is not logged: {e}",
                path.display()
            );
            None
        }
    };
    let mut last_prune: Option<Instant> = None;
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let Some(db) = db.as_mut() else {
            failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            continue;
        };
        if let Err(e) = db.insert(&batch) {
            failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::warn!("{} drift entries were not written: {e}", batch.len());
            continue;
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            if let Err(e) = db.prune(retention, now_ms()) {
                tracing::warn!("the drift log's retention failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> DriftThresholds {
        DriftThresholds {
            version: kolm_artifact::drift::DRIFT_VERSION,
            answers: 8,
            mean_logprob: Some(-0.5),
            recipe_coverage: Some(0.4),
            recall_best: None,
            covered: Vec::new(),
        }
    }

    fn verified(passed: bool, attempts: u32) -> Verified {
        Verified {
            passed,
            rules: if passed {
                vec![]
            } else {
                vec!["schema".into()]
            },
            attempts,
        }
    }

    #[test]
    fn each_figure_below_its_threshold_is_a_reason() {
        let t = thresholds();
        let fine = Scores {
            mean_logprob: Some(-0.2),
            recipe_coverage: Some(0.9),
            recall_best: Some(0.1),
            ..Scores::default()
        };
        assert!(judge(&t, &fine, Some(&verified(true, 1))).is_empty());
        assert_eq!(
            judge(&t, &fine, Some(&verified(false, 1))),
            [Reason::Verifier]
        );
        assert_eq!(
            judge(&t, &fine, Some(&verified(true, 3))),
            [Reason::Verifier],
            "an answer only a retry got right is drift"
        );
        let low = Scores {
            mean_logprob: Some(-0.51),
            recipe_coverage: Some(0.39),
            ..fine.clone()
        };
        assert_eq!(judge(&t, &low, None), [Reason::Logprob, Reason::Recipes]);
        // At the threshold is not below it; no threshold, no reason.
        let edge = Scores {
            mean_logprob: Some(-0.5),
            recipe_coverage: None,
            recall_best: Some(0.0),
            ..Scores::default()
        };
        assert!(judge(&t, &edge, None).is_empty());
    }

    #[test]
    fn a_full_channel_drops_and_counts_without_blocking() {
        let settings = DriftSettings {
            enabled: true,
            per_artifact: BTreeMap::new(),
            redact: false,
            max_entries: 10,
            max_age: Duration::from_secs(60),
        };
        // No writer: a channel nobody drains, as a stuck disk would leave it.
        let (sender, _receiver) = mpsc::sync_channel(2);
        let log = DriftLog {
            sender: Mutex::new(Some(sender)),
            path: Some(PathBuf::from("unused")),
            ..DriftLog::off(settings)
        };
        let entry = |i: i64| NewEntry {
            created_ms: i,
            artifact: "a".into(),
            version: "1".into(),
            reasons: vec![Reason::Logprob],
            input: None,
            input_digest: "d".into(),
            output: None,
            scores: Scores::default(),
            thresholds: Scores::default(),
        };
        let started = Instant::now();
        for i in 0..5 {
            log.submit("a:1", entry(i));
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(log.dropped(), 3);
        assert_eq!(log.logged()[&("a:1".to_owned(), Reason::Logprob)], 2);
    }
}
