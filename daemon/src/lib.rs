//! kolmd, the resident daemon: it loads installed `.kolm` artifacts from the
//! store onto the hardware it finds, schedules them (load on first use,
//! keep-alive, memory fit, LRU eviction, pinning, bounded queues) and serves
//! an OpenAI-compatible HTTP API and the gRPC control API (`kolm.daemon.v1`).
//!
//! - [`config`] — flags, `KOLM_*` environment and TOML file → [`config::Config`].
//! - [`hardware`] — cores, free RAM, GPUs (NVML behind the `nvml` feature).
//! - [`scheduler`] — which artifacts are loaded, sharing bases, for how long.
//! - [`request`] — the one request path both APIs take: checks, defaults,
//!   grounding, chat rendering, the engine request.
//! - [`serving`] — a compiled artifact's chats get the defaults it was
//!   evaluated with.
//! - [`state`] — [`AppState`], shared by every handler of both APIs.
//! - [`http`] — the axum server and [`http::run`].
//! - [`grpc`] — the control API over the same state.
//! - [`serve`] — runs both until shutdown, then stops them together.
//! - [`metrics`] — Prometheus counters and histograms.
//! - [`drift`] — the drift log: answers a compiled artifact handles poorly,
//!   written off the request path.

pub mod compile;
pub mod config;
pub mod drift;
pub mod grpc;
pub mod hardware;
pub mod http;
pub mod metrics;
pub mod request;
pub mod scheduler;
pub mod serving;
pub mod state;
pub mod verify;

pub use config::Config;
pub use http::run;
pub use state::{AppState, HttpOptions};

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use kolm_proto::daemon::v1::daemon_server::DaemonServer;
pub use scheduler::Scheduler;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

/// Builds the application state from a validated configuration.
pub fn state_from_config(config: &Config) -> Result<AppState, kolm_store::StoreError> {
    let home = match &config.home {
        Some(p) => kolm_store::Home::at(p),
        None => kolm_store::Home::from_env()?,
    };
    let drift = drift::DriftLog::open(home.root(), config.drift.clone());
    let scheduler = Scheduler::new(
        home,
        scheduler::SchedulerConfig::from(config),
        hardware::Hardware::detect(),
    );
    Ok(AppState::new(
        scheduler,
        drift,
        HttpOptions {
            api_keys: config.api_keys.clone(),
            max_body: config.max_body,
            cors_origins: config.cors_origins.clone(),
            shutdown_grace: config.shutdown_grace,
        },
    ))
}

/// What kolmd listens on.
#[derive(Debug)]
pub struct Listeners {
    /// The OpenAI-compatible HTTP API.
    pub http: TcpListener,
    /// The gRPC control API on a Unix socket (bound 0600) and its path.
    pub grpc_unix: Option<(UnixListener, PathBuf)>,
    /// The gRPC control API on TCP, behind the API keys.
    pub grpc_tcp: Option<TcpListener>,
}

impl Listeners {
    /// The addresses, as `Status` reports them.
    pub fn describe(&self) -> grpc::Listening {
        let mut listening = grpc::Listening::default();
        if let Ok(a) = self.http.local_addr() {
            listening.http.push(a.to_string());
        }
        if let Some((_, path)) = &self.grpc_unix {
            listening.grpc.push(format!("unix:{}", path.display()));
        }
        if let Some(Ok(a)) = self.grpc_tcp.as_ref().map(TcpListener::local_addr) {
            listening.grpc.push(a.to_string());
        }
        listening
    }
}

/// Serves HTTP and gRPC until `shutdown` resolves. Then both stop
/// accepting, in-flight requests of either get the grace period, and what
/// is left is cancelled (see [`http::run`]).
pub async fn serve(
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    state: AppState,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
    }
    let service = grpc::ControlService::new(state.clone(), listeners.describe());
    let mut grpc_tasks = Vec::new();
    if let Some((listener, _)) = listeners.grpc_unix {
        let service = service.clone();
        let stop = stop.clone();
        grpc_tasks.push(tokio::spawn(async move {
            if let Err(e) = kolm_proto::serve_unix(service, listener, stop.cancelled_owned()).await
            {
                tracing::error!("the gRPC socket server failed: {e}");
            }
        }));
    }
    if let Some(listener) = listeners.grpc_tcp {
        let auth = state.clone();
        let stop = stop.clone();
        let service =
            DaemonServer::with_interceptor(service.clone(), move |request: tonic::Request<()>| {
                let presented = request
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                if auth.accepts(presented) {
                    Ok(request)
                } else {
                    Err(tonic::Status::unauthenticated(
                        "a valid API key is required: send `authorization: Bearer KEY`",
                    ))
                }
            });
        grpc_tasks.push(tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("the gRPC TCP server failed: {e}");
            }
        }));
    }
    let drift = std::sync::Arc::clone(&state.drift);
    let served = http::run(listeners.http, stop.clone().cancelled_owned(), state).await;
    stop.cancel();
    for task in grpc_tasks {
        // In-flight calls were cancelled with the grace period; this only
        // waits for the servers to notice.
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    // What the drift writer holds is written before the process ends.
    let _ = tokio::task::spawn_blocking(move || drift.close()).await;
    served
}
