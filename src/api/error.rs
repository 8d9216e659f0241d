//! The one place errors become HTTP responses, and the JSON/path extractors whose rejections
//! go through it. Every error body is `{"message", "validations": [{"field", "detail"}]}`;
//! no body ever echoes a request value (serde's messages have their quoted input redacted).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::error;

use crate::secrets::{Violation, safe_serde_message};
use crate::store::StoreError;
use crate::vault::VaultError;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in one line.
    pub message: String,
    /// Each broken rule, naming its field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<Violation>,
}

/// An API error: a status and a message safe to show.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                message: message.into(),
                validations: Vec::new(),
            },
        }
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <token> (keyport token create)",
        )
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 400 with one violation.
    pub fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        Self::from(VaultError::Invalid(vec![Violation::new(field, detail)]))
    }

    /// An internal failure: logged in full here, shown as a bare 500.
    pub(crate) fn internal(e: &dyn std::fmt::Display) -> Self {
        error!(error = %e, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the keyport log",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        let (status, validations) = match &e {
            VaultError::Invalid(v) => (StatusCode::BAD_REQUEST, v.clone()),
            VaultError::Conflict(v) => (StatusCode::CONFLICT, v.clone()),
            VaultError::NotFound { .. } => (StatusCode::NOT_FOUND, Vec::new()),
            VaultError::Store(StoreError::KeyRotated { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, Vec::new())
            }
            _ => return Self::internal(&e),
        };
        // Invalid/Conflict display as every violation, `field: detail; …`.
        let message = e.to_string();
        Self {
            status,
            body: ErrorBody {
                message,
                validations,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s: 400 for bad JSON, wrong types and unknown
/// fields, 413 for bodies over the limit, 415 without a JSON content type.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    let status = rejection.status();
    let message = match rejection {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            let detail = text
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .unwrap_or(&text);
            format!("invalid request body: {}", safe_serde_message(detail))
        }
        JsonRejection::JsonSyntaxError(_) => "request body is not valid JSON".to_string(),
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON (Content-Type: application/json)".to_string()
        }
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".to_string(),
        _ => "cannot read the request body".to_string(),
    };
    // The contract has 400 for every malformed body (axum says 422 for wrong types) and
    // keeps 413 and 415 as they are.
    let status = match status {
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE => status,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, message)
}

/// `axum::extract::Path` whose rejections are 400 [`ApiError`]s.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("bad path: {}", safe_serde_message(&e.body_text())),
                )
            })
    }
}

/// `axum::extract::Query` whose rejections are 400 [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("bad query: {}", safe_serde_message(&e.body_text())),
                )
            })
    }
}
