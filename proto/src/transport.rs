//! The API over a Unix socket: a client ([`connect_unix`]), a listener
//! bound with permissions 0600 ([`bind_unix`]) and a server on it
//! ([`serve_unix`], or [`unix_incoming`] for a server built by hand).
//!
//! The socket is the daemon's access control: only its user (and root) can
//! connect. There is no TLS and no token on it.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Server, Uri};

use crate::daemon::v1::daemon_client::DaemonClient;
use crate::daemon::v1::daemon_server::{Daemon, DaemonServer};

/// The socket file's permissions: read and write for the owner only.
pub const SOCKET_MODE: u32 = 0o600;

/// The URI tonic puts in requests over the socket. HTTP/2 needs an
/// authority; nothing resolves or checks this one.
const PLACEHOLDER_URI: &str = "http://[::]:50051";

/// Why [`connect_unix`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket file is missing, or nothing accepts on it: the daemon is
    /// not running. Clients that can work offline fall back here.
    #[error("kolmd is not running: nothing listens on {}", path.display())]
    NotRunning {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// Anything else, e.g. permission denied on another user's socket.
    #[error("cannot connect to kolmd on {}", path.display())]
    Transport {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ConnectError {
    /// Whether the daemon is simply not running ([`ConnectError::NotRunning`]).
    pub fn is_not_running(&self) -> bool {
        matches!(self, ConnectError::NotRunning { .. })
    }
}

/// Connects to the daemon's socket at `path` and returns a client on it.
///
/// The connection is made now, so an error means the daemon cannot be
/// reached; after that the channel reconnects by itself if the daemon
/// restarts.
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<DaemonClient<Channel>, ConnectError> {
    let path = path.as_ref().to_path_buf();
    let socket = path.clone();
    let connected = Endpoint::from_static(PLACEHOLDER_URI)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await;
    match connected {
        Ok(channel) => Ok(DaemonClient::new(channel)),
        Err(source) if is_not_running(&source) => Err(ConnectError::NotRunning { path, source }),
        Err(source) => Err(ConnectError::Transport { path, source }),
    }
}

/// Whether the I/O error under a transport error says that nothing listens.
fn is_not_running(error: &tonic::transport::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            );
        }
        source = e.source();
    }
    false
}

/// Why [`bind_unix`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something answers on the socket already: another daemon runs.
    #[error("another process is listening on {}", path.display())]
    InUse { path: PathBuf },
    /// The path is a file, directory or symlink, not a socket; it is left
    /// alone.
    #[error("{} exists and is not a socket; not removing it", path.display())]
    NotASocket { path: PathBuf },
    /// An I/O step failed; `action` says which (`create the directory of`,
    /// `probe`, `remove the stale socket`, `bind`, `set permissions 0600 on`).
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds a Unix socket at `path` that only its owner can use (mode 0600).
///
/// - A missing parent directory is created with mode 0700; an existing one
///   is left as it is.
/// - An existing socket file is removed only if nothing answers on it (a
///   daemon that died without cleaning up); if something answers, this
///   fails with [`BindError::InUse`]. Anything that is not a socket is never
///   removed.
/// - Between the bind and the chmod the socket has the umask's
///   permissions; put it in a directory only the user can enter (as the
///   runtime directory is) to close that window.
///
/// Like [`UnixListener::bind`], it must be called inside a Tokio runtime.
pub fn bind_unix(path: impl AsRef<Path>) -> Result<UnixListener, BindError> {
    let path = path.as_ref();
    let io_error = |action: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| BindError::Io {
            action,
            path,
            source,
        }
    };

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_error("create the directory of", path))?;
        }
    }

    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(BindError::InUse {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_error("remove the stale socket", path)(e))
                    }
                    _ => {}
                }
            }
            // Removed between the two calls: nothing to clean up.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("probe", path)(e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("probe", path)(e)),
    }

    let listener = UnixListener::bind(path).map_err(io_error("bind", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(io_error("set permissions 0600 on", path))?;
    Ok(listener)
}

/// The listener's connections as the stream that
/// [`Server::serve_with_incoming_shutdown`] takes, for a server built by
/// hand (with layers, limits or more services than [`serve_unix`] adds).
pub fn unix_incoming(listener: UnixListener) -> UnixListenerStream {
    UnixListenerStream::new(listener)
}

/// Serves `service` on `listener` until `shutdown` completes, then lets
/// in-flight calls finish and removes the socket file (if it is still the
/// one this listener bound).
pub async fn serve_unix<S, F>(
    service: S,
    listener: UnixListener,
    shutdown: F,
) -> Result<(), tonic::transport::Error>
where
    S: Daemon,
    F: Future<Output = ()>,
{
    // The socket's identity, to remove only our own file afterwards.
    let socket = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .and_then(|p| {
            let meta = std::fs::symlink_metadata(&p).ok()?;
            Some((p, meta.dev(), meta.ino()))
        });
    let served = Server::builder()
        .add_service(DaemonServer::new(service))
        .serve_with_incoming_shutdown(unix_incoming(listener), shutdown)
        .await;
    if let Some((path, dev, ino)) = socket {
        let same = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.file_type().is_socket() && m.dev() == dev && m.ino() == ino);
        if same {
            let _ = std::fs::remove_file(&path);
        }
    }
    served
}
