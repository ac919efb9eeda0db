//! The one error type of the HTTP API: every failure becomes the same problem+json shape.
//! Internal causes are logged and never sent to the caller.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hermod_shared::{ErrorCode, Problem};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: Option<String>,
    /// Headers the answer carries besides the problem (`RateLimit-*`, `Retry-After`).
    pub headers: Vec<(String, String)>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: Some(detail.into()),
            headers: Vec::new(),
        }
    }

    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers = headers;
        self
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self {
            code,
            detail: None,
            headers: Vec::new(),
        }
    }
}

impl From<crate::domain::command::Refusal> for ApiError {
    fn from(r: crate::domain::command::Refusal) -> Self {
        Self {
            code: r.code,
            detail: r.detail.map(Into::into),
            headers: Vec::new(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error");
        ErrorCode::Internal.into()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = %e, "internal error");
        ErrorCode::Internal.into()
    }
}

/// Adds `(name, value)` pairs (as `RateDecision::headers` gives them) to an answer's headers.
pub fn insert_headers(headers: &mut axum::http::HeaderMap, pairs: &[(String, String)]) {
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem::new(self.code, self.detail);
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(Problem::CONTENT_TYPE));
        insert_headers(headers, &self.headers);
        if self.code == ErrorCode::InvalidCredentials && !headers.contains_key(header::WWW_AUTHENTICATE) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"hermod\""),
            );
        }
        response
    }
}
