//! The HTTP server: an OpenAI-compatible API (`/v1/...`), `/health` and
//! `/metrics`, with Bearer keys compared in constant time, a body limit,
//! optional CORS, and a graceful stop. [`run`] serves a bound listener until
//! a shutdown future resolves (mini-redis style, no globals).

mod error;
mod extract;
mod openai;
mod wire;

use std::future::{Future, IntoFuture};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;
pub use extract::{ApiJson, BodyLimit};

use crate::state::AppState;

/// The router with every route and layer.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::get_model))
        .route("/kolm/v1/loaded", get(openai::loaded))
        .route("/kolm/v1/load", post(openai::load))
        .route("/kolm/v1/unload", post(openai::unload))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let mut app = Router::new()
        .route("/health", get(health))
        .merge(api)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(state.options.max_body))
        .layer(Extension(BodyLimit(state.options.max_body)));
    if let Some(cors) = cors_layer(&state.options.cors_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests run for the grace period, cancels what is left, and
/// unloads every model.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    state: AppState,
) -> std::io::Result<()> {
    let grace = state.options.shutdown_grace;
    let scheduler = state.scheduler.clone();
    let cancel = state.cancel.clone();
    let expiry = tokio::spawn(scheduler.clone().run_expiry(cancel.clone()));
    let stopping = CancellationToken::new();
    let app = router(state);
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stopping.clone().cancelled_owned())
            .into_future(),
    );
    tokio::select! {
        result = &mut server => {
            cancel.cancel();
            scheduler.shutdown();
            return result.map_err(std::io::Error::other)?;
        }
        () = shutdown => {}
    }
    tracing::info!(
        grace_seconds = grace.as_secs_f64(),
        "shutting down: no new connections; in-flight requests may finish"
    );
    stopping.cancel();
    if tokio::time::timeout(grace, &mut server).await.is_err() {
        tracing::warn!("the grace period is over: cancelling the requests still running");
        cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
    }
    cancel.cancel();
    scheduler.shutdown();
    let _ = expiry.await;
    tracing::info!("stopped");
    Ok(())
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.accepts(presented) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    state.metrics.request(&route, status.as_u16());
    tracing::debug!(%method, path, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    response
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn health(State(state): State<AppState>) -> Response {
    let loading = state.scheduler.loading();
    let loaded = state.scheduler.list_loaded().len();
    let status = if loading > 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = wire::Health {
        status: if loading > 0 { "loading" } else { "ok" },
        loading,
        loaded,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.scheduler, &state.drift);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
