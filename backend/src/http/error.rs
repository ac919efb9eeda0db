//! The one error type on the wire: every failure becomes the same problem+json shape.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hermod_shared::{ErrorCode, Problem};

use crate::domain::error::ApiError;

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

/// Marks an answer whose request failed because its database connection died (see
/// `http::server::retry_safe_once`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLost;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let connection_lost = self.connection_lost;
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
        if connection_lost {
            response.extensions_mut().insert(ConnectionLost);
        }
        response
    }
}
