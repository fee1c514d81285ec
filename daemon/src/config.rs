//! kolmd's configuration, read in two stages (as ripgrep does): raw values
//! from the TOML file, then `KOLM_*` environment variables, then flags, each
//! layer overriding the one before; [`RawConfig::resolve`] then checks every
//! value and gives the validated [`Config`]. `docs/kolmd.md` documents every
//! key; the comments on [`RawConfig`] say the same.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default address: loopback only, and a port that collides with
/// neither Ollama (11434), LM Studio (1234) nor llama.cpp's server (8080).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11480";

/// Why a configuration was refused. Each message names the key and where
/// it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key} = `{value}` (from {origin}) is not valid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        origin: String,
        reason: String,
    },
    #[error(
        "kolmd would listen on {addr}, which is not a loopback address, and no API key is \
         configured: anyone on the network could use it. Set `api_keys` in the config file or \
         KOLM_API_KEY, or listen on 127.0.0.1"
    )]
    OpenWithoutKey { addr: SocketAddr },
}

/// How long a model stays loaded after its last request: one type for the
/// config file, the HTTP API and the gRPC API, with one grammar
/// (`kolm_proto::keep_alive`).
pub use kolm_proto::KeepAlive;

/// A duration in the keep-alive grammar (`30s`, `1h30m`, `250ms`, a bare
/// number of seconds), never negative.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    kolm_proto::keep_alive::parse_duration(text).map_err(|e| e.to_string())
}

/// Parses a byte size: a number of bytes or a number with a unit
/// (`KB`/`MB`/`GB` are powers of 1000, `KiB`/`MiB`/`GiB` and `K`/`M`/`G`
/// powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a size like 4096, 4MiB or 2GB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => return Err(format!("`{t}`: unknown unit `{other}`")),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{t}` is out of range"));
    }
    Ok(bytes as u64)
}

/// How many layers to offload to a GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuLayers {
    /// All of them when the engine was built with GPU support and a GPU is
    /// found, else none.
    Auto,
    /// Exactly this many (0 keeps everything on the CPU).
    Fixed(u32),
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One layer of raw, unchecked settings. Every key is optional; missing keys
/// fall through to the layer below and finally to the defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `listen`: address and port of the HTTP API (default 127.0.0.1:11480;
    /// env KOLM_LISTEN; flag --listen). A non-loopback address needs an API key.
    pub listen: Option<String>,
    /// `api_keys`: accepted Bearer keys (env KOLM_API_KEY for one key,
    /// KOLM_API_KEYS for a comma-separated list). Empty: no authentication,
    /// allowed on loopback only.
    pub api_keys: Option<Vec<String>>,
    /// `home`: the kolm home holding the store (default $KOLM_HOME, else the
    /// platform data directory; env KOLM_HOME).
    pub home: Option<PathBuf>,
    /// `slots`: sequences decoded together per loaded artifact (default 4;
    /// env KOLM_SLOTS).
    pub slots: Option<u32>,
    /// `context`: tokens each slot holds, prompt plus output (default 4096;
    /// env KOLM_CONTEXT).
    pub context: Option<u32>,
    /// `batch`: most tokens decoded in one step (default 512; env KOLM_BATCH).
    pub batch: Option<u32>,
    /// `threads`: CPU threads per decode (default: the physical cores; env
    /// KOLM_THREADS).
    pub threads: Option<u32>,
    /// `queue`: requests that may wait for a slot per artifact; past it, 503
    /// at once (default 64; env KOLM_QUEUE).
    pub queue: Option<u32>,
    /// `keep_alive`: how long a model stays loaded after its last request
    /// (`5m`, `30s`, `0` unloads at once, `-1` keeps it; default 5m; env
    /// KOLM_KEEP_ALIVE). Requests may set their own.
    pub keep_alive: Option<String>,
    /// `gpu_layers`: `auto` or a number of layers to offload (default auto;
    /// env KOLM_GPU_LAYERS).
    pub gpu_layers: Option<String>,
    /// `memory_limit`: most bytes all loaded models may take together
    /// (weights plus KV caches), e.g. `8GiB` (default: no limit beyond free
    /// RAM; env KOLM_MEMORY_LIMIT).
    pub memory_limit: Option<String>,
    /// `memory_reserve`: RAM left free for everything else (default 256MiB;
    /// env KOLM_MEMORY_RESERVE).
    pub memory_reserve: Option<String>,
    /// `max_body`: largest request body, e.g. `4MiB` (default 4MiB; env
    /// KOLM_MAX_BODY); larger bodies get 413.
    pub max_body: Option<String>,
    /// `cors_origins`: origins allowed to call the API from a browser, or
    /// `["*"]` (default none: CORS off; env KOLM_CORS_ORIGINS, comma-separated).
    pub cors_origins: Option<Vec<String>>,
    /// `log_format`: `text` or `json` (default text; env KOLM_LOG_FORMAT).
    /// The level comes from KOLM_LOG or RUST_LOG (default `info`).
    pub log_format: Option<String>,
    /// `shutdown_grace`: how long in-flight requests may run after SIGTERM
    /// or SIGINT before they are cancelled (default 30s; env
    /// KOLM_SHUTDOWN_GRACE).
    pub shutdown_grace: Option<String>,
    /// `grpc_socket`: the Unix socket of the gRPC control API, created with
    /// permissions 0600 (default `run/kolmd.sock` under the home; `off`
    /// disables it; env KOLM_GRPC_SOCKET). `kolmctl` finds it the same way.
    pub grpc_socket: Option<String>,
    /// `grpc_listen`: also serve the gRPC control API on this TCP
    /// `ADDRESS:PORT` (default off; env KOLM_GRPC_LISTEN). It takes the same
    /// API keys as HTTP (`authorization: Bearer KEY` metadata); a
    /// non-loopback address needs one.
    pub grpc_listen: Option<String>,
    /// `draft`: `auto` drafts tokens with no draft model (grammar-forced
    /// tokens, the artifact's recipe pack, prompt lookup), each checked by
    /// the model, where they pay; `eager` drafts all they offer whatever
    /// it costs; `off` decodes token by token (default auto; env
    /// KOLM_DRAFT). A request may turn it off for itself.
    pub draft: Option<String>,
    /// `draft_max`: most tokens drafted per sequence per step, 1 to 32
    /// (default 8; env KOLM_DRAFT_MAX).
    pub draft_max: Option<u32>,
    /// `verify_retries`: when a chat's answer fails its artifact's
    /// verifier, sample again up to this many times, 0 to
    /// [`MAX_VERIFY_RETRIES`] (default 0; env KOLM_VERIFY_RETRIES). A
    /// request's `verify.retries` wins; streamed requests are not retried.
    pub verify_retries: Option<u32>,
    /// `drift`: log the answers a compiled artifact handles poorly in the
    /// drift database under the kolm home (`docs/drift.md`; default true;
    /// env KOLM_DRIFT).
    pub drift: Option<bool>,
    /// `drift_redact`: store a digest of each drifted input and no text of
    /// the input or the answer (default false; env KOLM_DRIFT_REDACT).
    pub drift_redact: Option<bool>,
    /// `drift_max_entries`: entries kept, the oldest deleted first
    /// (default 10000; env KOLM_DRIFT_MAX_ENTRIES).
    pub drift_max_entries: Option<u32>,
    /// `drift_max_age`: entries older than this are deleted (default
    /// `720h`, 30 days; env KOLM_DRIFT_MAX_AGE).
    pub drift_max_age: Option<String>,
    /// `[artifacts.NAME]`: settings for one artifact, by name, over the
    /// daemon-wide ones (`verify_retries`, `drift`).
    pub artifacts: Option<BTreeMap<String, RawArtifactConfig>>,
}

/// The most retries a request or the configuration may ask for.
pub const MAX_VERIFY_RETRIES: u32 = 8;

/// `[artifacts.NAME]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArtifactConfig {
    /// `verify_retries` for this artifact.
    pub verify_retries: Option<u32>,
    /// `drift` for this artifact.
    pub drift: Option<bool>,
}

/// Where, whether and how long drift is logged.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftSettings {
    /// Logged unless turned off for the artifact.
    pub enabled: bool,
    /// Artifacts (by name) whose setting differs from `enabled`.
    pub per_artifact: BTreeMap<String, bool>,
    /// A digest of the input, no text.
    pub redact: bool,
    /// Entries kept.
    pub max_entries: u32,
    /// Age past which entries are deleted.
    pub max_age: Duration,
}

impl DriftSettings {
    /// Whether answers of the artifact `name` are logged.
    pub fn enabled_for(&self, name: &str) -> bool {
        self.per_artifact.get(name).copied().unwrap_or(self.enabled)
    }
}

/// How many times an answer that fails its verifier is sampled again
/// unless its request says: daemon-wide, and per artifact name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyRetries {
    pub default: u32,
    pub per_artifact: BTreeMap<String, u32>,
}

impl VerifyRetries {
    /// The retries of an answer on the artifact `name`.
    pub fn for_artifact(&self, name: &str) -> u32 {
        self.per_artifact.get(name).copied().unwrap_or(self.default)
    }
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads the `KOLM_*` variables from `lookup` (the process environment
    /// in `kolmd`, a map in tests).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<RawConfig, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let number = |key: &'static str, env: &str| -> Result<Option<u32>, ConfigError> {
            get(env)
                .map(|v| {
                    v.trim().parse().map_err(|_| ConfigError::Invalid {
                        key,
                        value: v.clone(),
                        origin: env.to_owned(),
                        reason: "not a non-negative whole number".into(),
                    })
                })
                .transpose()
        };
        let flag = |key: &'static str, env: &str| -> Result<Option<bool>, ConfigError> {
            get(env)
                .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => Ok(true),
                    "0" | "false" | "no" | "off" => Ok(false),
                    _ => Err(ConfigError::Invalid {
                        key,
                        value: v.clone(),
                        origin: env.to_owned(),
                        reason: "expected true or false".into(),
                    }),
                })
                .transpose()
        };
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let mut keys = get("KOLM_API_KEYS").map(list);
        if let Some(k) = get("KOLM_API_KEY") {
            keys.get_or_insert_with(Vec::new).push(k.trim().to_owned());
        }
        Ok(RawConfig {
            listen: get("KOLM_LISTEN"),
            api_keys: keys,
            home: get("KOLM_HOME").map(PathBuf::from),
            slots: number("slots", "KOLM_SLOTS")?,
            context: number("context", "KOLM_CONTEXT")?,
            batch: number("batch", "KOLM_BATCH")?,
            threads: number("threads", "KOLM_THREADS")?,
            queue: number("queue", "KOLM_QUEUE")?,
            keep_alive: get("KOLM_KEEP_ALIVE"),
            gpu_layers: get("KOLM_GPU_LAYERS"),
            memory_limit: get("KOLM_MEMORY_LIMIT"),
            memory_reserve: get("KOLM_MEMORY_RESERVE"),
            max_body: get("KOLM_MAX_BODY"),
            cors_origins: get("KOLM_CORS_ORIGINS").map(list),
            log_format: get("KOLM_LOG_FORMAT"),
            shutdown_grace: get("KOLM_SHUTDOWN_GRACE"),
            grpc_socket: get("KOLM_GRPC_SOCKET"),
            grpc_listen: get("KOLM_GRPC_LISTEN"),
            draft: get("KOLM_DRAFT"),
            draft_max: number("draft_max", "KOLM_DRAFT_MAX")?,
            verify_retries: number("verify_retries", "KOLM_VERIFY_RETRIES")?,
            drift: flag("drift", "KOLM_DRIFT")?,
            drift_redact: flag("drift_redact", "KOLM_DRIFT_REDACT")?,
            drift_max_entries: number("drift_max_entries", "KOLM_DRIFT_MAX_ENTRIES")?,
            drift_max_age: get("KOLM_DRIFT_MAX_AGE"),
            artifacts: None,
        })
    }

    /// `self` with every key that `over` sets replaced.
    pub fn overridden_by(self, over: RawConfig) -> RawConfig {
        RawConfig {
            listen: over.listen.or(self.listen),
            api_keys: over.api_keys.or(self.api_keys),
            home: over.home.or(self.home),
            slots: over.slots.or(self.slots),
            context: over.context.or(self.context),
            batch: over.batch.or(self.batch),
            threads: over.threads.or(self.threads),
            queue: over.queue.or(self.queue),
            keep_alive: over.keep_alive.or(self.keep_alive),
            gpu_layers: over.gpu_layers.or(self.gpu_layers),
            memory_limit: over.memory_limit.or(self.memory_limit),
            memory_reserve: over.memory_reserve.or(self.memory_reserve),
            max_body: over.max_body.or(self.max_body),
            cors_origins: over.cors_origins.or(self.cors_origins),
            log_format: over.log_format.or(self.log_format),
            shutdown_grace: over.shutdown_grace.or(self.shutdown_grace),
            grpc_socket: over.grpc_socket.or(self.grpc_socket),
            grpc_listen: over.grpc_listen.or(self.grpc_listen),
            draft: over.draft.or(self.draft),
            draft_max: over.draft_max.or(self.draft_max),
            verify_retries: over.verify_retries.or(self.verify_retries),
            drift: over.drift.or(self.drift),
            drift_redact: over.drift_redact.or(self.drift_redact),
            drift_max_entries: over.drift_max_entries.or(self.drift_max_entries),
            drift_max_age: over.drift_max_age.or(self.drift_max_age),
            artifacts: over.artifacts.or(self.artifacts),
        }
    }

    /// Checks every value and fills in defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let invalid = |key: &'static str, value: &str, reason: String| ConfigError::Invalid {
            key,
            value: value.to_owned(),
            origin: "the configuration".into(),
            reason,
        };
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "listen",
                &listen_text,
                "expected ADDRESS:PORT, e.g. 127.0.0.1:11480".into(),
            )
        })?;
        let api_keys = self.api_keys.unwrap_or_default();
        if api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid(
                "api_keys",
                "",
                "an API key may not be empty".into(),
            ));
        }
        if !listen.ip().is_loopback() && api_keys.is_empty() {
            return Err(ConfigError::OpenWithoutKey { addr: listen });
        }
        let grpc_listen = match self.grpc_listen.as_deref().map(str::trim) {
            None | Some("off") => None,
            Some(v) => Some(v.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "grpc_listen",
                    v,
                    "expected ADDRESS:PORT, e.g. 127.0.0.1:11481".into(),
                )
            })?),
        };
        if let Some(addr) = grpc_listen {
            if !addr.ip().is_loopback() && api_keys.is_empty() {
                return Err(ConfigError::OpenWithoutKey { addr });
            }
        }
        let grpc_socket = match self.grpc_socket.as_deref().map(str::trim) {
            None => GrpcSocket::Default,
            Some("off") => GrpcSocket::Off,
            Some(p) => GrpcSocket::At(PathBuf::from(p)),
        };
        let positive = |key: &'static str, v: Option<u32>, default: u32, min: u32, max: u32| {
            let v = v.unwrap_or(default);
            if v < min || v > max {
                return Err(invalid(
                    key,
                    &v.to_string(),
                    format!("must be between {min} and {max}"),
                ));
            }
            Ok(v)
        };
        let slots = positive("slots", self.slots, 4, 1, 256)?;
        let context = positive("context", self.context, 4096, 64, 1 << 20)?;
        let batch = positive("batch", self.batch, 512, 1, 1 << 16)?.max(slots);
        let threads = positive("threads", self.threads, physical_cores(), 1, 1024)?;
        let queue = positive("queue", self.queue, 64, 0, 1 << 20)?;
        let keep_alive = match &self.keep_alive {
            Some(v) => kolm_proto::parse_keep_alive(v)
                .map_err(|r| invalid("keep_alive", v, r.to_string()))?,
            None => KeepAlive::Duration(Duration::from_secs(300)),
        };
        let gpu_layers = match self.gpu_layers.as_deref().map(str::trim) {
            None | Some("auto") => GpuLayers::Auto,
            Some(v) => GpuLayers::Fixed(v.parse().map_err(|_| {
                invalid(
                    "gpu_layers",
                    v,
                    "expected `auto` or a number of layers".into(),
                )
            })?),
        };
        let size = |key: &'static str, v: &Option<String>| {
            v.as_deref()
                .map(|s| parse_size(s).map_err(|r| invalid(key, s, r)))
                .transpose()
        };
        let memory_limit = size("memory_limit", &self.memory_limit)?;
        let memory_reserve = size("memory_reserve", &self.memory_reserve)?.unwrap_or(256 << 20);
        let max_body = size("max_body", &self.max_body)?.unwrap_or(4 << 20);
        if max_body < 1024 {
            return Err(invalid(
                "max_body",
                &max_body.to_string(),
                "must be at least 1KiB".into(),
            ));
        }
        let cors_origins = self.cors_origins.unwrap_or_default();
        for origin in &cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid(
                    "cors_origins",
                    origin,
                    "an origin is `*` or starts with http:// or https://".into(),
                ));
            }
        }
        let log_format = match self.log_format.as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(v) => return Err(invalid("log_format", v, "expected `text` or `json`".into())),
        };
        let shutdown_grace = match &self.shutdown_grace {
            Some(v) => parse_duration(v).map_err(|r| invalid("shutdown_grace", v, r))?,
            None => Duration::from_secs(30),
        };
        let draft = match self.draft.as_deref().map(str::trim) {
            None | Some("auto") => DraftMode::Auto,
            Some("eager") => DraftMode::Eager,
            Some("off") => DraftMode::Off,
            Some(v) => {
                return Err(invalid(
                    "draft",
                    v,
                    "expected `auto`, `eager` or `off`".into(),
                ))
            }
        };
        let draft_max = positive("draft_max", self.draft_max, 8, 1, 32)?;
        let verify_retries = positive(
            "verify_retries",
            self.verify_retries,
            0,
            0,
            MAX_VERIFY_RETRIES,
        )?;
        let mut per_artifact = BTreeMap::new();
        let mut drift_per_artifact = BTreeMap::new();
        for (name, raw) in self.artifacts.unwrap_or_default() {
            if let Some(on) = raw.drift {
                drift_per_artifact.insert(name.clone(), on);
            }
            if let Some(n) = raw.verify_retries {
                if n > MAX_VERIFY_RETRIES {
                    return Err(ConfigError::Invalid {
                        key: "verify_retries",
                        value: n.to_string(),
                        origin: format!("[artifacts.{name}]"),
                        reason: format!("must be between 0 and {MAX_VERIFY_RETRIES}"),
                    });
                }
                per_artifact.insert(name, n);
            }
        }
        let verify_retries = VerifyRetries {
            default: verify_retries,
            per_artifact,
        };
        let drift_max_age = match &self.drift_max_age {
            Some(v) => parse_duration(v).map_err(|r| invalid("drift_max_age", v, r))?,
            None => Duration::from_secs(30 * 24 * 3600),
        };
        let drift = DriftSettings {
            enabled: self.drift.unwrap_or(true),
            per_artifact: drift_per_artifact,
            redact: self.drift_redact.unwrap_or(false),
            max_entries: positive(
                "drift_max_entries",
                self.drift_max_entries,
                10_000,
                1,
                u32::MAX,
            )?,
            max_age: drift_max_age,
        };
        Ok(Config {
            listen,
            api_keys,
            home: self.home,
            slots,
            context,
            batch,
            threads,
            queue,
            keep_alive,
            gpu_layers,
            memory_limit,
            memory_reserve,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            cors_origins,
            log_format,
            shutdown_grace,
            grpc_socket,
            grpc_listen,
            draft,
            draft_max,
            verify_retries,
            drift,
        })
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub api_keys: Vec<String>,
    pub home: Option<PathBuf>,
    pub slots: u32,
    pub context: u32,
    pub batch: u32,
    pub threads: u32,
    pub queue: u32,
    pub keep_alive: KeepAlive,
    pub gpu_layers: GpuLayers,
    pub memory_limit: Option<u64>,
    pub memory_reserve: u64,
    pub max_body: usize,
    pub cors_origins: Vec<String>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub grpc_socket: GrpcSocket,
    pub grpc_listen: Option<SocketAddr>,
    pub draft: DraftMode,
    pub draft_max: u32,
    /// Retries of an answer that fails its verifier, unless the request
    /// says otherwise.
    pub verify_retries: VerifyRetries,
    /// The drift log's settings.
    pub drift: DriftSettings,
}

/// Whether kolmd drafts (`docs/kolmd.md`, "Drafting").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftMode {
    /// Draft where it pays: the engine adapts per sequence and per batch.
    Auto,
    /// Draft everything the sources offer, up to `draft_max`, whatever it
    /// costs (to measure an artifact's acceptance).
    Eager,
    /// Never draft.
    Off,
}

/// Where the gRPC control API's Unix socket goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcSocket {
    /// `run/kolmd.sock` under the kolm home.
    Default,
    /// This path.
    At(PathBuf),
    /// No socket.
    Off,
}

impl Config {
    /// Builds the configuration from a file (if any), the environment and
    /// flags, in increasing precedence.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: RawConfig,
    ) -> Result<Config, ConfigError> {
        let base = match file {
            Some(path) => RawConfig::from_file(path)?,
            None => RawConfig::default(),
        };
        base.overridden_by(RawConfig::from_env(env)?)
            .overridden_by(flags)
            .resolve()
    }
}

/// The machine's physical cores (logical ones when that is unknown).
pub fn physical_cores() -> u32 {
    sysinfo::System::physical_core_count()
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .clamp(1, 1024) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_loopback_and_sane() {
        let c = Config::load(None, env(&[]), RawConfig::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.keep_alive, KeepAlive::Duration(Duration::from_secs(300)));
        assert!(c.threads >= 1);
        assert_eq!(c.gpu_layers, GpuLayers::Auto);
        assert_eq!((c.draft, c.draft_max), (DraftMode::Auto, 8));
    }

    #[test]
    fn drafting_is_configured_and_checked() {
        let c = Config::load(
            None,
            env(&[("KOLM_DRAFT", "off"), ("KOLM_DRAFT_MAX", "16")]),
            RawConfig::default(),
        )
        .unwrap();
        assert_eq!((c.draft, c.draft_max), (DraftMode::Off, 16));
        let c = Config::load(None, env(&[("KOLM_DRAFT", "eager")]), RawConfig::default()).unwrap();
        assert_eq!(c.draft, DraftMode::Eager);
        let e = Config::load(None, env(&[("KOLM_DRAFT", "on")]), RawConfig::default()).unwrap_err();
        assert!(
            e.to_string().contains("draft") && e.to_string().contains("`auto`"),
            "{e}"
        );
        for bad in ["0", "33"] {
            let e = Config::load(None, env(&[("KOLM_DRAFT_MAX", bad)]), RawConfig::default())
                .unwrap_err();
            assert!(e.to_string().contains("draft_max"), "{e}");
        }
    }

    #[test]
    fn verify_retries_default_per_artifact_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kolmd.toml");
        std::fs::write(
            &file,
            "verify_retries = 2\n[artifacts.orders]\nverify_retries = 5\n[artifacts.plain]\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[]), RawConfig::default()).unwrap();
        assert_eq!(c.verify_retries.for_artifact("orders"), 5);
        assert_eq!(c.verify_retries.for_artifact("plain"), 2);
        assert_eq!(c.verify_retries.for_artifact("other"), 2);
        let c = Config::load(None, env(&[]), RawConfig::default()).unwrap();
        assert_eq!(c.verify_retries.for_artifact("orders"), 0);
        let e = Config::load(
            None,
            env(&[("KOLM_VERIFY_RETRIES", "9")]),
            RawConfig::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("verify_retries"), "{e}");
        std::fs::write(&file, "[artifacts.orders]\nverify_retries = 99\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), RawConfig::default()).unwrap_err();
        assert!(
            e.to_string().contains("[artifacts.orders]") && e.to_string().contains("8"),
            "{e}"
        );
        std::fs::write(&file, "[artifacts.orders]\nretries = 1\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), RawConfig::default()).unwrap_err();
        assert!(e.to_string().contains("retries"), "{e}");
    }

    #[test]
    fn drift_is_on_by_default_off_per_artifact_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kolmd.toml");
        let c = Config::load(None, env(&[]), RawConfig::default()).unwrap();
        assert!(c.drift.enabled_for("orders") && !c.drift.redact);
        assert_eq!(c.drift.max_entries, 10_000);
        assert_eq!(c.drift.max_age, Duration::from_secs(30 * 24 * 3600));
        std::fs::write(
            &file,
            "drift_redact = true\ndrift_max_age = \"2h\"\n[artifacts.orders]\ndrift = false\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[]), RawConfig::default()).unwrap();
        assert!(!c.drift.enabled_for("orders") && c.drift.enabled_for("other"));
        assert!(c.drift.redact);
        assert_eq!(c.drift.max_age, Duration::from_secs(7200));
        let c = Config::load(
            Some(&file),
            env(&[("KOLM_DRIFT", "off"), ("KOLM_DRIFT_MAX_ENTRIES", "5")]),
            RawConfig::default(),
        )
        .unwrap();
        assert!(
            !c.drift.enabled_for("other"),
            "the environment turns it off"
        );
        assert!(!c.drift.enabled_for("orders"));
        assert_eq!(c.drift.max_entries, 5);
        for (k, v, says) in [
            ("KOLM_DRIFT", "maybe", "true or false"),
            ("KOLM_DRIFT_MAX_ENTRIES", "0", "drift_max_entries"),
            ("KOLM_DRIFT_MAX_AGE", "1d", "drift_max_age"),
        ] {
            let e = Config::load(None, env(&[(k, v)]), RawConfig::default()).unwrap_err();
            assert!(e.to_string().contains(says), "{k}={v}: {e}");
        }
    }

    #[test]
    fn flags_win_over_env_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kolmd.toml");
        std::fs::write(&file, "slots = 2\ncontext = 1024\nqueue = 3\n").unwrap();
        let flags = RawConfig {
            slots: Some(7),
            ..RawConfig::default()
        };
        let c = Config::load(
            Some(&file),
            env(&[("KOLM_SLOTS", "5"), ("KOLM_CONTEXT", "2048")]),
            flags,
        )
        .unwrap();
        assert_eq!((c.slots, c.context, c.queue), (7, 2048, 3));
    }

    #[test]
    fn non_loopback_without_a_key_is_refused() {
        let e = Config::load(
            None,
            env(&[("KOLM_LISTEN", "0.0.0.0:9")]),
            RawConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::OpenWithoutKey { .. }), "{e}");
        let ok = Config::load(
            None,
            env(&[("KOLM_LISTEN", "0.0.0.0:9"), ("KOLM_API_KEY", "k")]),
            RawConfig::default(),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::load(None, env(&[("KOLM_SLOTS", "x")]), RawConfig::default()).unwrap_err();
        assert!(e.to_string().contains("KOLM_SLOTS"), "{e}");
        let e = Config::load(
            None,
            env(&[("KOLM_KEEP_ALIVE", "5 parsecs")]),
            RawConfig::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("keep_alive"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "slotz = 2\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), RawConfig::default()).unwrap_err();
        assert!(e.to_string().contains("slotz"), "{e}");
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("-1").is_err(), "a grace is never negative");
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert!(parse_size("4 parsecs").is_err());
    }
}
