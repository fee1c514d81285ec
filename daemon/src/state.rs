//! [`AppState`]: what every request handler shares, over HTTP and gRPC —
//! the scheduler, the metrics, the drift log, the accepted API keys, the
//! HTTP options, the cancellation of in-flight requests at shutdown and the
//! start time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::drift::DriftLog;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;

/// What the HTTP layer needs besides the scheduler.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    pub api_keys: Vec<String>,
    pub max_body: usize,
    pub cors_origins: Vec<String>,
    pub shutdown_grace: Duration,
}

/// Shared by every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    pub scheduler: Scheduler,
    pub metrics: Arc<Metrics>,
    /// Where the answers compiled artifacts handle poorly are logged.
    pub drift: Arc<DriftLog>,
    /// SHA-256 of each accepted key (compared in constant time).
    key_digests: Arc<Vec<[u8; 32]>>,
    pub(crate) options: Arc<HttpOptions>,
    /// Fires when in-flight requests must stop (the grace period is over).
    pub cancel: CancellationToken,
    pub started: Instant,
}

impl AppState {
    /// Whether a request with this `Authorization` value may be served:
    /// always when no key is configured, else when it is `Bearer KEY` with
    /// a configured key. Every key is compared in constant time, so the
    /// time taken does not say which one matched or how much of it.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        if self.key_digests.is_empty() {
            return true;
        }
        let presented = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|k| -> [u8; 32] { Sha256::digest(k.trim().as_bytes()).into() });
        let Some(presented) = presented else {
            return false;
        };
        let mut ok = subtle::Choice::from(0u8);
        for key in self.key_digests.iter() {
            ok |= key.ct_eq(&presented);
        }
        bool::from(ok)
    }

    pub fn new(scheduler: Scheduler, drift: DriftLog, options: HttpOptions) -> AppState {
        let key_digests = options
            .api_keys
            .iter()
            .map(|k| Sha256::digest(k.as_bytes()).into())
            .collect();
        AppState {
            scheduler,
            metrics: Arc::new(Metrics::default()),
            drift: Arc::new(drift),
            key_digests: Arc::new(key_digests),
            options: Arc::new(options),
            cancel: CancellationToken::new(),
            started: Instant::now(),
        }
    }
}
