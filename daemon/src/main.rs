//! `kolmd [--config FILE] [--listen ADDR:PORT]`: reads the configuration,
//! sets up logging, binds the HTTP listener and the gRPC socket (and TCP
//! port, if configured) and serves until SIGTERM or SIGINT.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kolmd::config::{Config, GrpcSocket, LogFormat, RawConfig};

/// The kolm daemon: serves installed artifacts over an OpenAI-compatible API.
#[derive(Debug, Parser)]
#[command(name = "kolmd", version)]
struct Args {
    /// A TOML configuration file (see docs/kolmd.md for every key).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address and port to listen on (default 127.0.0.1:11480).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let flags = RawConfig {
        listen: args.listen,
        ..RawConfig::default()
    };
    let config = Config::load(args.config.as_deref(), |k| std::env::var(k).ok(), flags)
        .context("kolmd cannot start")?;
    init_logging(config.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let state = kolmd::state_from_config(&config).context("cannot open the kolm home")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let grpc_unix = match &config.grpc_socket {
        GrpcSocket::Off => None,
        GrpcSocket::Default => Some(state.scheduler.home().socket_path()),
        GrpcSocket::At(path) => Some(path.clone()),
    }
    .map(|path| {
        kolm_proto::bind_unix(&path)
            .map(|l| (l, path.clone()))
            .with_context(|| format!("cannot serve the gRPC API on {}", path.display()))
    })
    .transpose()?;
    let grpc_tcp = match config.grpc_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen for gRPC on {a}"))?,
        ),
        None => None,
    };
    let listeners = kolmd::Listeners {
        http: listener,
        grpc_unix,
        grpc_tcp,
    };
    for grpc in listeners.describe().grpc {
        tracing::info!("gRPC control API on {grpc}");
    }
    tracing::info!(
        home = %state.scheduler.home().root().display(),
        slots = config.slots,
        context = config.context,
        threads = config.threads,
        queue = config.queue,
        "kolmd {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    kolmd::serve(listeners, shutdown_signal(), state)
        .await
        .context("the server failed")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// kolmd's own events at `info`; llama.cpp's load-time chatter (hundreds of
/// lines per model) only from `warn`. `KOLM_LOG=info,llama-cpp-2=info`
/// brings it back.
const DEFAULT_LOG_FILTER: &str = "info,llama-cpp-2=warn,llama_cpp_2=error";

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KOLM_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
