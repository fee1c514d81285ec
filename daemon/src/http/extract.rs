//! A JSON body extractor whose failures are OpenAI-shaped errors (axum's own
//! `Json` answers malformed bodies with plain text): a body over the limit
//! is a 413, anything that does not parse or fit the request type a 400
//! naming the place.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The request body, parsed as `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::InvalidRequest {
                    message: format!("cannot read the request body: {e}"),
                    param: None,
                    code: None,
                }
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::InvalidRequest {
                message: "the request body is empty; send a JSON object".into(),
                param: None,
                code: None,
            });
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error_free(&mut de).map_err(|e| ApiError::InvalidRequest {
            message: format!("the request body is not valid JSON for this endpoint: {e}"),
            param: None,
            code: None,
        })?;
        Ok(ApiJson(value))
    }
}

fn serde_path_to_error_free<'de, T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, serde_json::Error> {
    let value = T::deserialize(&mut *de)?;
    de.end()?;
    Ok(value)
}

/// The configured body limit, put in request extensions so the extractor
/// can name it in its 413.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);
