//! A real round trip over a Unix socket in a temporary directory: a fixture
//! service (not the daemon) answers Status and streams three Generate
//! messages; the client connects with `connect_unix`.

use std::os::unix::fs::PermissionsExt;
use std::pin::Pin;
use std::time::Duration;

use kolm_proto::daemon::v1::daemon_server::Daemon;
use kolm_proto::daemon::v1::{
    generate_request, ChatMessage, ChatMessages, EmbedRequest, EmbedResponse, FinishReason,
    GenerateRequest, GenerateResponse, Hardware, InstallProgress, InstallRequest,
    ListArtifactsRequest, ListArtifactsResponse, ListLoadedRequest, ListLoadedResponse,
    LoadRequest, LoadResponse, RemoveRequest, RemoveResponse, StatusRequest, StatusResponse,
    Timings, UnloadRequest, UnloadResponse, Usage,
};
use kolm_proto::{bind_unix, connect_unix, serve_unix, BindError, SOCKET_MODE};
use tokio::sync::oneshot;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers Status and Generate; everything else is unimplemented.
struct Fixture;

#[tonic::async_trait]
impl Daemon for Fixture {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            version: "0.0.0-test".into(),
            uptime_seconds: 42,
            hardware: Some(Hardware {
                cpu_model: "Test CPU".into(),
                physical_cores: 2,
                ..Default::default()
            }),
            listen: None,
            loaded_models: 1,
            drift: None,
        }))
    }

    async fn list_artifacts(
        &self,
        _: Request<ListArtifactsRequest>,
    ) -> Result<Response<ListArtifactsResponse>, Status> {
        Err(Status::unimplemented("fixture"))
    }

    type InstallStream = ResponseStream<InstallProgress>;

    async fn install(
        &self,
        _: Request<InstallRequest>,
    ) -> Result<Response<Self::InstallStream>, Status> {
        Err(Status::unimplemented("fixture"))
    }

    async fn remove(&self, _: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        Err(Status::unimplemented("fixture"))
    }

    async fn load(&self, _: Request<LoadRequest>) -> Result<Response<LoadResponse>, Status> {
        Err(Status::unimplemented("fixture"))
    }

    async fn unload(&self, _: Request<UnloadRequest>) -> Result<Response<UnloadResponse>, Status> {
        Err(Status::unimplemented("fixture"))
    }

    async fn list_loaded(
        &self,
        _: Request<ListLoadedRequest>,
    ) -> Result<Response<ListLoadedResponse>, Status> {
        Err(Status::unimplemented("fixture"))
    }

    type GenerateStream = ResponseStream<GenerateResponse>;

    /// Streams "<last chat message>" back in three messages.
    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let request = request.into_inner();
        let Some(generate_request::Prompt::Messages(chat)) = request.prompt else {
            return Err(Status::invalid_argument("the fixture wants chat messages"));
        };
        let last = chat
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let messages = vec![
            Ok(GenerateResponse {
                text: "you said: ".into(),
                ..Default::default()
            }),
            Ok(GenerateResponse {
                text: last,
                ..Default::default()
            }),
            Ok(GenerateResponse {
                text: String::new(),
                finish_reason: FinishReason::Stop.into(),
                usage: Some(Usage {
                    prompt_tokens: 5,
                    completion_tokens: 3,
                }),
                timings: Some(Timings {
                    ttft_ms: 1.5,
                    tokens_per_second: 100.0,
                    total_ms: 31.5,
                }),
                ..Default::default()
            }),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn embed(&self, _: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        Err(Status::unimplemented("fixture"))
    }

    type CompileStream = ResponseStream<kolm_proto::daemon::v1::CompileEvent>;

    async fn compile(
        &self,
        _: Request<kolm_proto::daemon::v1::CompileRequest>,
    ) -> Result<Response<Self::CompileStream>, Status> {
        Err(Status::unimplemented("fixture"))
    }
}

#[tokio::test]
async fn round_trip_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    // A parent that does not exist yet: bind_unix creates it (0700).
    let path = dir.path().join("run").join("kolmd.sock");

    let listener = bind_unix(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, SOCKET_MODE, "socket mode {mode:o}");
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "directory mode {dir_mode:o}");

    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_unix(Fixture, listener, async {
        let _ = stopped.await;
    }));

    let mut client = connect_unix(&path).await.unwrap();

    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.version, "0.0.0-test");
    assert_eq!(status.uptime_seconds, 42);
    assert_eq!(status.loaded_models, 1);
    assert_eq!(status.hardware.unwrap().cpu_model, "Test CPU");

    let request = GenerateRequest {
        model: "demo".into(),
        prompt: Some(generate_request::Prompt::Messages(ChatMessages {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: "hello".into(),
            }],
        })),
        temperature: Some(0.0),
        keep_alive: Some("5m".into()),
        ..Default::default()
    };
    let mut stream = client.generate(request).await.unwrap().into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.next().await {
        messages.push(message.unwrap());
    }
    assert_eq!(messages.len(), 3);
    let text: String = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(text, "you said: hello");
    assert!(messages[..2]
        .iter()
        .all(|m| m.finish_reason() == FinishReason::Unspecified && m.usage.is_none()));
    let last = &messages[2];
    assert_eq!(last.finish_reason(), FinishReason::Stop);
    assert_eq!(last.usage.unwrap().completion_tokens, 3);
    assert_eq!(last.timings.unwrap().tokens_per_second, 100.0);

    // An error status crosses the socket with its code and message.
    let err = client
        .generate(GenerateRequest {
            model: "demo".into(),
            prompt: Some(generate_request::Prompt::Text("raw".into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "the fixture wants chat messages");

    // While the server runs, a second bind is refused and the socket kept.
    match bind_unix(&path) {
        Err(BindError::InUse { path: p }) => assert_eq!(p, path),
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(path.exists());

    // Shutdown removes the socket file; then the daemon is "not running".
    drop(client);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(!path.exists(), "socket file left behind");
    let err = connect_unix(&path).await.unwrap_err();
    assert!(err.is_not_running(), "{err:?}");
    assert!(err.to_string().starts_with("kolmd is not running"), "{err}");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_reported_as_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kolmd.sock");

    // A socket file nobody listens on, as a killed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let err = connect_unix(&path).await.unwrap_err();
    assert!(err.is_not_running(), "{err:?}");

    let _listener = bind_unix(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, SOCKET_MODE);
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kolmd.sock");
    std::fs::write(&path, b"not a socket").unwrap();

    match bind_unix(&path) {
        Err(BindError::NotASocket { path: p }) => assert_eq!(p, path),
        other => panic!("expected NotASocket, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");

    // Nothing listens there either (Linux answers ECONNREFUSED).
    let err = connect_unix(&path).await.unwrap_err();
    assert!(err.is_not_running(), "{err:?}");
}
