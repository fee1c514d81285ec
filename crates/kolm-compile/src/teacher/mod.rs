//! Teacher clients: any OpenAI-compatible chat-completions endpoint and
//! Anthropic's Messages API.
//!
//! A [`Teacher`] is built from a resolved [`TeacherConfig`]. It reads the API
//! key from the environment variable the config names when it is built (a
//! missing key is [`TeacherError::MissingKey`] before any call), bounds
//! concurrency with a semaphore, retries 429 and 5xx answers, timeouts and
//! connection failures with exponential back-off and jitter (honouring
//! `Retry-After` / `retry-after-ms`), accounts tokens and cost from the price
//! table, stops at the `max_cost` budget with
//! [`TeacherError::BudgetExhausted`] (carrying what was spent), and caches
//! responses on disk ([`cache`]).

pub mod cache;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

pub use cache::{CacheEntry, CacheKey, ResponseCache};
pub use wire::{MalformedResponse, ANTHROPIC_VERSION};

use crate::example::Message;

/// OpenAI's API base when `OPENAI_BASE_URL` is unset.
pub const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";
/// Anthropic's API base when `ANTHROPIC_BASE_URL` is unset.
pub const ANTHROPIC_DEFAULT_BASE: &str = "https://api.anthropic.com";

/// Errors of the teacher clients.
#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    /// The teacher string is not `PROVIDER:MODEL` with a known provider.
    #[error("teacher {spec:?}: {reason} (expected openai:MODEL or anthropic:MODEL)")]
    BadSpec {
        /// The string given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting has an invalid value.
    #[error("teacher config: {0}")]
    Config(String),
    /// The environment variable holding the API key is unset or empty.
    #[error("{provider} teacher: the API key variable {var} is not set (export {var}=..., or name another variable with api_key_env)")]
    MissingKey {
        /// The provider.
        provider: Provider,
        /// The variable.
        var: String,
    },
    /// A budget is set but the price table has no entry for the model.
    #[error("max_cost is set but the price table has no entry for model {model:?}: add [prices.\"{model}\"] with input_per_mtok and output_per_mtok")]
    NoPrice {
        /// The model.
        model: String,
    },
    /// The API answered with an error status (after retries, for retryable
    /// ones).
    #[error("{url}: HTTP {status} after {attempts} attempt(s): {message}")]
    Http {
        /// The endpoint.
        url: String,
        /// The status code.
        status: u16,
        /// The API's error message, or the start of the body.
        message: String,
        /// Requests sent.
        attempts: u32,
    },
    /// No complete answer within the per-request timeout (after retries).
    #[error("{url}: no answer within {timeout:?} ({attempts} attempt(s))")]
    Timeout {
        /// The endpoint.
        url: String,
        /// The per-request timeout.
        timeout: Duration,
        /// Requests sent.
        attempts: u32,
    },
    /// The endpoint could not be reached (after retries).
    #[error("{url}: cannot reach the teacher after {attempts} attempt(s): {message}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The transport error.
        message: String,
        /// Requests sent.
        attempts: u32,
    },
    /// A 2xx answer whose body is not the API's response shape.
    #[error("{url}: malformed response: {reason}; body starts: {excerpt:?}")]
    Malformed {
        /// The endpoint.
        url: String,
        /// What is wrong (spelled out in the message, so not a source).
        reason: MalformedResponse,
        /// The first bytes of the body.
        excerpt: String,
    },
    /// The budget is spent; `spent` says what was done.
    #[error("teacher budget of ${max_cost:.4} reached: {spent}")]
    BudgetExhausted {
        /// The budget in USD.
        max_cost: f64,
        /// The accounting when the budget stopped the call.
        spent: Accounting,
    },
    /// The cache directory could not be written.
    #[error("teacher cache {path}: {source}")]
    Cache {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// A teacher API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI chat completions, or any compatible server.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        })
    }
}

impl Provider {
    fn base_env(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_BASE_URL",
            Provider::Anthropic => "ANTHROPIC_BASE_URL",
        }
    }

    fn key_env(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
        }
    }

    fn default_base(self) -> &'static str {
        match self {
            Provider::OpenAi => OPENAI_DEFAULT_BASE,
            Provider::Anthropic => ANTHROPIC_DEFAULT_BASE,
        }
    }
}

/// `PROVIDER:MODEL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeacherSpec {
    /// The provider.
    pub provider: Provider,
    /// The model name.
    pub model: String,
}

impl TeacherSpec {
    /// Parses `openai:MODEL` or `anthropic:MODEL`.
    pub fn parse(spec: &str) -> Result<TeacherSpec, TeacherError> {
        let bad = |reason: &str| TeacherError::BadSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (p, model) = spec.split_once(':').ok_or_else(|| bad("no provider"))?;
        let provider = match p {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            _ => return Err(bad(&format!("unknown provider {p:?}"))),
        };
        if model.trim().is_empty() {
            return Err(bad("empty model name"));
        }
        Ok(TeacherSpec {
            provider,
            model: model.to_owned(),
        })
    }
}

/// Prices in USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million input (prompt) tokens.
    pub input_per_mtok: f64,
    /// USD per million output (completion) tokens.
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of one call in USD.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_mtok + output_tokens as f64 * self.output_per_mtok)
            / 1e6
    }
}

/// Teacher settings as written in `kolm.toml`'s `[teacher_config]` (every
/// field optional). Never a key: only the name of the variable that holds
/// it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherSettings {
    /// API base URL (OpenAI style includes `/v1`; Anthropic style does
    /// not). Overrides `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL`.
    pub base_url: Option<String>,
    /// Environment variable holding the key; `""` means no key (a local
    /// server such as kolmd).
    pub api_key_env: Option<String>,
    /// Requests in flight at most (default 4).
    pub concurrency: Option<usize>,
    /// Per-request timeout in seconds (default 120).
    pub timeout_secs: Option<f64>,
    /// Retries after the first attempt (default 4).
    pub max_retries: Option<u32>,
    /// First back-off in seconds (default 0.5), doubled per retry.
    pub backoff_secs: Option<f64>,
    /// Longest wait between attempts in seconds, `Retry-After` included
    /// (default 60).
    pub max_backoff_secs: Option<f64>,
    /// Response cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Bypass the cache (neither read nor write).
    pub no_cache: Option<bool>,
}

/// A resolved teacher configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct TeacherConfig {
    /// The provider.
    pub provider: Provider,
    /// The model.
    pub model: String,
    /// The API base URL, without a trailing slash.
    pub base_url: String,
    /// The variable holding the key; `None` sends no key.
    pub api_key_env: Option<String>,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Per-request timeout (connect, send and read the whole body).
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First back-off, doubled per retry, with jitter.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// The model's price, if known.
    pub price: Option<Price>,
    /// Budget in USD.
    pub max_cost: Option<f64>,
    /// Response cache directory; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Bypass the cache.
    pub no_cache: bool,
}

impl TeacherConfig {
    /// Resolves `spec` (`PROVIDER:MODEL`) with optional settings, the price
    /// table and a budget, reading `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL`
    /// through `env` when the settings name no base URL.
    pub fn resolve(
        spec: &str,
        settings: Option<&TeacherSettings>,
        prices: &BTreeMap<String, Price>,
        max_cost: Option<f64>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<TeacherConfig, TeacherError> {
        let spec = TeacherSpec::parse(spec)?;
        let s = settings.cloned().unwrap_or_default();
        let p = spec.provider;
        let base_url = s
            .base_url
            .or_else(|| env(p.base_env()).filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| p.default_base().to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(TeacherError::Config(format!(
                "base URL {base_url:?} must start with http:// or https://"
            )));
        }
        let api_key_env = match s.api_key_env {
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v),
            None => Some(p.key_env().to_owned()),
        };
        let secs = |v: Option<f64>, default: f64, name: &str| {
            let v = v.unwrap_or(default);
            if v.is_finite() && v >= 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(TeacherError::Config(format!(
                    "{name} must be a non-negative number of seconds"
                )))
            }
        };
        let concurrency = s.concurrency.unwrap_or(4);
        if concurrency == 0 {
            return Err(TeacherError::Config(
                "concurrency must be at least 1".into(),
            ));
        }
        let price = prices.get(&spec.model).copied();
        if let Some(c) = max_cost {
            if !(c.is_finite() && c >= 0.0) {
                return Err(TeacherError::Config(format!(
                    "max_cost must be ≥ 0, got {c}"
                )));
            }
            if price.is_none() {
                return Err(TeacherError::NoPrice { model: spec.model });
            }
        }
        Ok(TeacherConfig {
            provider: p,
            model: spec.model,
            base_url,
            api_key_env,
            concurrency,
            timeout: secs(s.timeout_secs, 120.0, "timeout_secs")?,
            max_retries: s.max_retries.unwrap_or(4),
            backoff: secs(s.backoff_secs, 0.5, "backoff_secs")?,
            max_backoff: secs(s.max_backoff_secs, 60.0, "max_backoff_secs")?,
            price,
            max_cost,
            cache_dir: s.cache_dir,
            no_cache: s.no_cache.unwrap_or(false),
        })
    }

    /// The chat endpoint's URL.
    pub fn endpoint(&self) -> String {
        match self.provider {
            Provider::OpenAi => format!("{}/chat/completions", self.base_url),
            Provider::Anthropic => format!("{}/v1/messages", self.base_url),
        }
    }
}

/// One chat request to the teacher. Hashed for the cache, so a struct.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation; `system` messages become Anthropic's `system`
    /// field.
    pub messages: Vec<Message>,
    /// Sampling temperature (clamped to [0, 1] for Anthropic).
    pub temperature: f32,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sent as OpenAI's `seed`; also tells the k samples of one prompt apart
    /// in the cache (Anthropic has no seed; the key still differs).
    pub seed: Option<u64>,
}

/// A teacher's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The text.
    pub text: String,
    /// The finish or stop reason.
    pub finish_reason: Option<String>,
    /// Input tokens (of the original call when cached).
    pub input_tokens: u64,
    /// Output tokens (of the original call when cached).
    pub output_tokens: u64,
    /// USD this call cost now (0 for a cache hit).
    pub cost_usd: f64,
    /// Wall time of the original call, from the request sent to the whole
    /// answer read, retries included (kept in the cache, so a replayed
    /// answer reports the latency it was paid with; 0 for entries cached
    /// before latencies were recorded).
    pub latency: Duration,
    /// Served from the cache.
    pub cached: bool,
    /// HTTP requests sent for it (0 for a cache hit).
    pub attempts: u32,
}

/// What a teacher has done so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accounting {
    /// Completions obtained from the API.
    pub calls: u64,
    /// Completions served from the cache.
    pub cache_hits: u64,
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Retries (requests after a first attempt).
    pub retries: u64,
    /// Calls that failed for good.
    pub failures: u64,
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// USD spent.
    pub cost_usd: f64,
    /// Answers that could not be written to the cache.
    pub cache_write_errors: u64,
}

impl fmt::Display for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} call(s), {} cache hit(s), {} failure(s), {} input + {} output tokens, ${:.4}",
            self.calls,
            self.cache_hits,
            self.failures,
            self.input_tokens,
            self.output_tokens,
            self.cost_usd
        )
    }
}

/// A teacher client; share it with `Arc` across tasks.
pub struct Teacher {
    config: TeacherConfig,
    key: Option<String>,
    http: reqwest::Client,
    permits: Arc<Semaphore>,
    accounting: Mutex<Accounting>,
    cache: Option<ResponseCache>,
}

impl fmt::Debug for Teacher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Teacher")
            .field("config", &self.config)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Done(wire::Parsed),
    Retry {
        error: TeacherError,
        wait: Option<Duration>,
    },
    Fail(TeacherError),
}

impl Teacher {
    /// Builds a client, reading the key from the process environment.
    pub fn new(config: TeacherConfig) -> Result<Teacher, TeacherError> {
        Self::with_env(config, |k| std::env::var(k).ok())
    }

    /// Builds a client, reading the key through `env`.
    pub fn with_env(
        config: TeacherConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Teacher, TeacherError> {
        let key = match &config.api_key_env {
            None => None,
            Some(var) => match env(var).filter(|k| !k.trim().is_empty()) {
                Some(k) => Some(k),
                None => {
                    return Err(TeacherError::MissingKey {
                        provider: config.provider,
                        var: var.clone(),
                    })
                }
            },
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("kolm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TeacherError::Client(e.to_string()))?;
        let cache = config.cache_dir.clone().map(ResponseCache::new);
        Ok(Teacher {
            permits: Arc::new(Semaphore::new(config.concurrency)),
            config,
            key,
            http,
            accounting: Mutex::new(Accounting::default()),
            cache,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TeacherConfig {
        &self.config
    }

    /// A snapshot of the accounting.
    pub fn accounting(&self) -> Accounting {
        self.accounting.lock().expect("accounting lock").clone()
    }

    /// The cache key digest of `req` for this teacher.
    pub fn cache_digest(&self, req: &ChatRequest) -> String {
        CacheKey {
            v: cache::CACHE_VERSION,
            provider: self.config.provider,
            base_url: &self.config.base_url,
            model: &self.config.model,
            request: req,
        }
        .digest()
    }

    fn check_budget(&self) -> Result<(), TeacherError> {
        if let Some(max) = self.config.max_cost {
            let acct = self.accounting();
            if acct.cost_usd >= max {
                return Err(TeacherError::BudgetExhausted {
                    max_cost: max,
                    spent: acct,
                });
            }
        }
        Ok(())
    }

    /// Completes one request: from the cache when possible, else from the
    /// API within the concurrency limit, the retry policy and the budget.
    ///
    /// The budget is checked before a call is sent; calls already in flight
    /// finish and are billed, so spending can pass `max_cost` by at most
    /// `concurrency` calls.
    pub async fn complete(&self, req: &ChatRequest) -> Result<Completion, TeacherError> {
        let digest = self.cache_digest(req);
        let cache = self.cache.as_ref().filter(|_| !self.config.no_cache);
        if let Some(hit) = cache.and_then(|c| c.get(&digest)) {
            self.accounting.lock().expect("accounting lock").cache_hits += 1;
            return Ok(Completion {
                text: hit.text,
                finish_reason: hit.finish_reason,
                input_tokens: hit.input_tokens,
                output_tokens: hit.output_tokens,
                cost_usd: 0.0,
                latency: Duration::from_secs_f64(hit.latency_s.max(0.0)),
                cached: true,
                attempts: 0,
            });
        }
        self.check_budget()?;
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        self.check_budget()?;
        let started = std::time::Instant::now();
        let result = self.call(req).await;
        let latency = started.elapsed();
        let mut acct = self.accounting.lock().expect("accounting lock");
        let (parsed, attempts) = match result {
            Ok(ok) => ok,
            Err((e, attempts)) => {
                acct.requests += u64::from(attempts);
                acct.retries += u64::from(attempts.saturating_sub(1));
                acct.failures += 1;
                return Err(e);
            }
        };
        let cost = self
            .config
            .price
            .map_or(0.0, |p| p.cost(parsed.input_tokens, parsed.output_tokens));
        acct.requests += u64::from(attempts);
        acct.retries += u64::from(attempts.saturating_sub(1));
        acct.calls += 1;
        acct.input_tokens += parsed.input_tokens;
        acct.output_tokens += parsed.output_tokens;
        acct.cost_usd += cost;
        drop(acct);
        if let Some(c) = cache {
            let entry = CacheEntry {
                v: cache::CACHE_VERSION,
                text: parsed.text.clone(),
                finish_reason: parsed.finish_reason.clone(),
                input_tokens: parsed.input_tokens,
                output_tokens: parsed.output_tokens,
                latency_s: latency.as_secs_f64(),
            };
            // The answer is paid for: a cache that cannot be written costs a
            // repeat call later, not this answer.
            if let Err(e) = c.put(&digest, &entry) {
                tracing::warn!(error = %e, "cannot write the teacher cache; continuing without it");
                self.accounting
                    .lock()
                    .expect("accounting lock")
                    .cache_write_errors += 1;
            }
        }
        Ok(Completion {
            text: parsed.text,
            finish_reason: parsed.finish_reason,
            input_tokens: parsed.input_tokens,
            output_tokens: parsed.output_tokens,
            cost_usd: cost,
            latency,
            cached: false,
            attempts,
        })
    }

    /// Draws `k` samples of one conversation concurrently (within the
    /// concurrency limit): request `i` carries `seed = i`, so each sample is
    /// cached on its own and a recompile replays all k. Results come back in
    /// seed order; a sample stopped by the budget is its
    /// [`TeacherError::BudgetExhausted`], the others are kept.
    pub async fn sample_k(
        self: &Arc<Self>,
        messages: &[Message],
        k: u32,
        temperature: f32,
        max_tokens: u32,
    ) -> Vec<Result<Completion, TeacherError>> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..k {
            let me = Arc::clone(self);
            let req = ChatRequest {
                messages: messages.to_vec(),
                temperature,
                max_tokens,
                seed: Some(u64::from(i)),
            };
            set.spawn(async move { (i, me.complete(&req).await) });
        }
        let mut out: Vec<Option<Result<Completion, TeacherError>>> = (0..k).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((i, r)) => out[i as usize] = Some(r),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        out.into_iter()
            .map(|r| r.expect("every sample task reports"))
            .collect()
    }

    async fn call(&self, req: &ChatRequest) -> Result<(wire::Parsed, u32), (TeacherError, u32)> {
        let url = self.config.endpoint();
        let body = match self.config.provider {
            Provider::OpenAi => {
                serde_json::to_vec(&wire::OpenAiRequest::new(&self.config.model, req))
            }
            Provider::Anthropic => {
                serde_json::to_vec(&wire::AnthropicRequest::new(&self.config.model, req))
            }
        }
        .expect("request structs always serialize");
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.attempt(&url, body.clone()).await;
            match outcome {
                Attempt::Done(p) => return Ok((p, attempt)),
                Attempt::Fail(e) => return Err((e, attempt)),
                Attempt::Retry { error, wait } => {
                    if attempt > self.config.max_retries {
                        return Err((with_attempts(error, attempt), attempt));
                    }
                    let delay = match wait {
                        Some(w) => w,
                        None => self.backoff(attempt),
                    }
                    .min(self.config.max_backoff);
                    tracing::debug!(%url, attempt, ?delay, %error, "teacher call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Exponential back-off with "equal jitter": half the doubled delay plus
    /// a random share of the other half.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.config.max_backoff);
        exp / 2 + exp.mul_f64(fastrand::f64() / 2.0)
    }

    async fn attempt(&self, url: &str, body: Vec<u8>) -> Attempt {
        let mut rb = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        rb = match (self.config.provider, &self.key) {
            (Provider::OpenAi, Some(k)) => rb.bearer_auth(k),
            (Provider::Anthropic, Some(k)) => rb.header("x-api-key", k),
            (_, None) => rb,
        };
        if self.config.provider == Provider::Anthropic {
            rb = rb.header("anthropic-version", ANTHROPIC_VERSION);
        }
        let started = Instant::now();
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                TeacherError::Timeout {
                    url: url.to_owned(),
                    timeout: self.config.timeout,
                    attempts: 1,
                }
            } else {
                TeacherError::Unreachable {
                    url: url.to_owned(),
                    message: error_chain(&e),
                    attempts: 1,
                }
            }
        };
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    error: transport(e),
                    wait: None,
                }
            }
        };
        let status = resp.status();
        let wait = retry_after(resp.headers());
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    error: transport(e),
                    wait: None,
                }
            }
        };
        tracing::trace!(url, status = status.as_u16(), elapsed = ?started.elapsed(), "teacher response");
        if status.is_success() {
            let parsed = match self.config.provider {
                Provider::OpenAi => wire::parse_openai(&bytes),
                Provider::Anthropic => wire::parse_anthropic(&bytes),
            }
            .and_then(|p| {
                // Some compatible servers omit usage; that is fine for a
                // free local teacher but would make a priced one unmetered.
                if !p.metered && self.config.price.is_some() {
                    Err(MalformedResponse::Unmetered {
                        model: self.config.model.clone(),
                    })
                } else {
                    Ok(p)
                }
            });
            return match parsed {
                Ok(p) => Attempt::Done(p),
                Err(reason) => Attempt::Fail(TeacherError::Malformed {
                    url: url.to_owned(),
                    reason,
                    excerpt: excerpt(&bytes),
                }),
            };
        }
        let error = TeacherError::Http {
            url: url.to_owned(),
            status: status.as_u16(),
            message: wire::error_message(&bytes).unwrap_or_else(|| excerpt(&bytes)),
            attempts: 1,
        };
        if status.as_u16() == 429 || status.is_server_error() {
            Attempt::Retry { error, wait }
        } else {
            Attempt::Fail(error)
        }
    }
}

fn with_attempts(e: TeacherError, n: u32) -> TeacherError {
    match e {
        TeacherError::Http {
            url,
            status,
            message,
            ..
        } => TeacherError::Http {
            url,
            status,
            message,
            attempts: n,
        },
        TeacherError::Timeout { url, timeout, .. } => TeacherError::Timeout {
            url,
            timeout,
            attempts: n,
        },
        TeacherError::Unreachable { url, message, .. } => TeacherError::Unreachable {
            url,
            message,
            attempts: n,
        },
        other => other,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    s.into_owned()
}

/// The wait a 429/5xx answer asks for: `retry-after-ms` (milliseconds), or
/// `Retry-After` as seconds (integer or decimal) or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let v = get("retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn spec_parsing() {
        let s = TeacherSpec::parse("openai:gpt-4o-mini").unwrap();
        assert_eq!(
            (s.provider, s.model.as_str()),
            (Provider::OpenAi, "gpt-4o-mini")
        );
        assert_eq!(
            TeacherSpec::parse("anthropic:claude-x:1").unwrap().model,
            "claude-x:1"
        );
        for bad in ["gpt", "google:x", "openai:", "openai: "] {
            assert!(TeacherSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolve_reads_env_defaults_and_settings() {
        let none = BTreeMap::new();
        let c = TeacherConfig::resolve("openai:m", None, &none, None, env(&[])).unwrap();
        assert_eq!(c.endpoint(), "https://api.openai.com/v1/chat/completions");
        assert_eq!(c.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        let c = TeacherConfig::resolve(
            "anthropic:m",
            None,
            &none,
            None,
            env(&[("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")]),
        )
        .unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:9/v1/messages");
        let s = TeacherSettings {
            base_url: Some("http://localhost:11434/v1".into()),
            api_key_env: Some(String::new()),
            ..Default::default()
        };
        let c = TeacherConfig::resolve(
            "openai:m",
            Some(&s),
            &none,
            None,
            env(&[("OPENAI_BASE_URL", "http://x")]),
        )
        .unwrap();
        assert_eq!(c.base_url, "http://localhost:11434/v1");
        assert_eq!(c.api_key_env, None);
        let e = TeacherConfig::resolve("openai:m", None, &none, Some(1.0), env(&[])).unwrap_err();
        assert!(matches!(e, TeacherError::NoPrice { .. }), "{e}");
        let bad = TeacherSettings {
            concurrency: Some(0),
            ..Default::default()
        };
        assert!(TeacherConfig::resolve("openai:m", Some(&bad), &none, None, env(&[])).is_err());
    }

    #[test]
    fn missing_key_names_the_variable() {
        let c =
            TeacherConfig::resolve("anthropic:m", None, &BTreeMap::new(), None, env(&[])).unwrap();
        let e = Teacher::with_env(c.clone(), env(&[])).unwrap_err();
        assert!(matches!(&e, TeacherError::MissingKey { var, .. } if var == "ANTHROPIC_API_KEY"));
        assert!(
            e.to_string().contains("ANTHROPIC_API_KEY is not set"),
            "{e}"
        );
        let t = Teacher::with_env(c, env(&[("ANTHROPIC_API_KEY", "sk-secret")])).unwrap();
        assert!(!format!("{t:?}").contains("sk-secret"));
    }

    #[test]
    fn price_and_retry_after() {
        let p = Price {
            input_per_mtok: 2.5,
            output_per_mtok: 10.0,
        };
        assert!((p.cost(1_000_000, 500_000) - 7.5).abs() < 1e-12);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
