//! The connection to kolmd's gRPC control API: where its socket is, how to
//! reach it, and what its error statuses mean for kolmctl's messages and exit
//! codes. Verbs that can work offline ask [`connect`] and fall back when it
//! says the daemon is not running; the others use [`connect_required`].

use std::path::PathBuf;

use kolm_artifact::ErrorKind;
use kolm_proto::daemon::v1::daemon_client::DaemonClient;
use kolm_store::Home;
use tonic::transport::Channel;

/// The variable that overrides the socket path (kolmd reads it too).
pub const SOCKET_ENV: &str = "KOLM_GRPC_SOCKET";

/// kolmd's gRPC socket: `$KOLM_GRPC_SOCKET`, else `run/kolmd.sock` under the
/// kolm home.
pub fn socket_path(home: &Home) -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home.socket_path())
}

/// A client of a running kolmd, with the runtime that drives it.
#[derive(Debug)]
pub struct Daemon {
    pub runtime: tokio::runtime::Runtime,
    pub client: DaemonClient<Channel>,
}

impl Daemon {
    /// Runs one call to completion, turning its status into an error that
    /// keeps the daemon's message and error class.
    pub fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, DaemonError> {
        self.runtime.block_on(call).map_err(DaemonError::from)
    }
}

/// The daemon when it runs, `None` when nothing listens on its socket.
pub fn connect(home: &Home) -> anyhow::Result<Option<Daemon>> {
    let path = socket_path(home);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(kolm_proto::connect_unix(&path)) {
        Ok(client) => Ok(Some(Daemon { runtime, client })),
        Err(e) if e.is_not_running() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The daemon, or an error saying how to start it.
pub fn connect_required(home: &Home) -> anyhow::Result<Daemon> {
    connect(home)?.ok_or_else(|| {
        anyhow::anyhow!(
            "kolmd is not running (nothing listens on {}): start it with `kolmd`, or point \
             {SOCKET_ENV} at its socket",
            socket_path(home).display()
        )
    })
}

/// An error status from kolmd.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DaemonError {
    pub code: tonic::Code,
    pub message: String,
    /// The artifact error's class, when the daemon sent one.
    pub kind: Option<ErrorKind>,
}

impl From<tonic::Status> for DaemonError {
    fn from(status: tonic::Status) -> Self {
        let kind = status
            .metadata()
            .get("kolm-error-kind")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| match v {
                "malformed" => Some(ErrorKind::Malformed),
                "bad_signature" => Some(ErrorKind::BadSignature),
                "untrusted" => Some(ErrorKind::Untrusted),
                "integrity" => Some(ErrorKind::Integrity),
                _ => None,
            });
        let message = match status.code() {
            tonic::Code::Unavailable if status.message().is_empty() => {
                "kolmd went away during the call".to_owned()
            }
            _ => status.message().to_owned(),
        };
        DaemonError {
            code: status.code(),
            message,
            kind,
        }
    }
}
