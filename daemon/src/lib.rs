//! kolmd, the resident daemon: it loads installed `.kolm` artifacts from the
//! store onto the hardware it finds, schedules them (load on first use,
//! keep-alive, memory fit, LRU eviction, pinning, bounded queues) and serves
//! an OpenAI-compatible HTTP API.
//!
//! - [`config`] — flags, `KOLM_*` environment and TOML file → [`config::Config`].
//! - [`hardware`] — cores, free RAM, GPUs (NVML behind the `nvml` feature).
//! - [`scheduler`] — which artifacts are loaded, sharing bases, for how long.
//! - [`http`] — the axum server and [`http::run`].
//! - [`metrics`] — Prometheus counters and histograms.

pub mod config;
pub mod hardware;
pub mod http;
pub mod metrics;
pub mod scheduler;

pub use config::Config;
pub use http::{run, AppState, HttpOptions};
pub use scheduler::Scheduler;

/// Builds the application state from a validated configuration.
pub fn state_from_config(config: &Config) -> Result<AppState, kolm_store::StoreError> {
    let home = match &config.home {
        Some(p) => kolm_store::Home::at(p),
        None => kolm_store::Home::from_env()?,
    };
    let scheduler = Scheduler::new(
        home,
        scheduler::SchedulerConfig::from(config),
        hardware::Hardware::detect(),
    );
    Ok(AppState::new(
        scheduler,
        HttpOptions {
            api_keys: config.api_keys.clone(),
            max_body: config.max_body,
            cors_origins: config.cors_origins.clone(),
            shutdown_grace: config.shutdown_grace,
        },
    ))
}
