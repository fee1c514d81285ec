//! API errors in OpenAI's shape, `{"error":{"message","type","param","code"}}`,
//! each with its HTTP status, and the mapping from scheduler and engine
//! errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kolm_runtime::RuntimeError;
use serde_json::json;

use crate::request::RequestError;
use crate::scheduler::SchedulerError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    /// 401.
    #[error("invalid or missing API key: send `Authorization: Bearer KEY`")]
    Unauthorized,
    /// 404 for a model.
    #[error("{0}")]
    ModelNotFound(String),
    /// 404 for a path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413.
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 503 with Retry-After.
    #[error("{0}")]
    Overloaded(String),
    /// 503, the daemon is stopping.
    #[error("kolmd is shutting down")]
    ShuttingDown,
    /// 507: the model cannot fit in memory at all.
    #[error("{0}")]
    InsufficientMemory(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming the parameter.
    pub fn invalid(message: impl Into<String>, param: &'static str) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param),
            code: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded(_) | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientMemory(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` object.
    pub fn body(&self) -> serde_json::Value {
        let (kind, param, code) = match self {
            ApiError::InvalidRequest { param, code, .. } => {
                ("invalid_request_error", *param, *code)
            }
            ApiError::Unauthorized => ("invalid_request_error", None, Some("invalid_api_key")),
            ApiError::ModelNotFound(_) => (
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            ApiError::NoRoute(_) => ("invalid_request_error", None, Some("not_found")),
            ApiError::MethodNotAllowed => {
                ("invalid_request_error", None, Some("method_not_allowed"))
            }
            ApiError::PayloadTooLarge(_) => {
                ("invalid_request_error", None, Some("request_too_large"))
            }
            ApiError::Overloaded(_) => ("server_error", None, Some("overloaded")),
            ApiError::ShuttingDown => ("server_error", None, Some("shutting_down")),
            ApiError::InsufficientMemory(_) => {
                ("server_error", Some("model"), Some("insufficient_memory"))
            }
            ApiError::Internal(_) => ("server_error", None, None),
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let code = match &e {
            RuntimeError::PromptTooLong { .. } => Some("context_length_exceeded"),
            RuntimeError::NoChatTemplate => Some("no_chat_template"),
            RuntimeError::InvalidGrammar(_) => Some("invalid_response_format"),
            _ => None,
        };
        let param = match &e {
            RuntimeError::PromptTooLong { .. } | RuntimeError::EmptyPrompt => Some("messages"),
            RuntimeError::InvalidGrammar(_) => Some("response_format"),
            RuntimeError::NoChatTemplate | RuntimeError::Template(_) => Some("messages"),
            _ => None,
        };
        match e {
            RuntimeError::QueueFull(_) => ApiError::Overloaded(e.to_string()),
            // The daemon's only cancellation is the end of its shutdown grace.
            RuntimeError::Cancelled => ApiError::ShuttingDown,
            RuntimeError::Unloaded => ApiError::Overloaded(
                "the model was unloaded while the request waited; retry".into(),
            ),
            e if e.is_invalid_request() => ApiError::InvalidRequest {
                message: e.to_string(),
                param,
                code,
            },
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::ModelNotFound(_) => ApiError::ModelNotFound(e.to_string()),
            SchedulerError::Runtime(r) => r.into(),
            SchedulerError::Busy { .. } => ApiError::Overloaded(e.to_string()),
            SchedulerError::TooLarge { .. } => ApiError::InsufficientMemory(e.to_string()),
            SchedulerError::ShuttingDown => ApiError::ShuttingDown,
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Invalid { message, param } => ApiError::InvalidRequest {
                message,
                param: Some(param),
                code: (param == "response_format").then_some("invalid_response_format"),
            },
            RequestError::NoChatTemplate { model } => ApiError::InvalidRequest {
                message: format!(
                    "the model `{model}` has no chat template; use /v1/completions with a \
                     prompt instead"
                ),
                param: Some("messages"),
                code: Some("no_chat_template"),
            },
            RequestError::Scheduler(e) => e.into(),
            RequestError::Runtime(e) => e.into(),
            e @ RequestError::Recall(_) => ApiError::Internal(e.to_string()),
        }
    }
}
