//! The one error type: what a refused or failed request gets, as data (a stable code, a detail,
//! and headers such as `Retry-After`). The HTTP layer turns it into problem+json
//! (`http::error`); internal causes are logged where they arise and never sent to the caller.

use hermod_shared::ErrorCode;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: Option<String>,
    /// Headers the answer carries besides the problem (`RateLimit-*`, `Retry-After`).
    pub headers: Vec<(String, String)>,
    /// The request failed because its database connection died under it: a request that is
    /// safe to repeat (a read) is tried once more on a fresh connection.
    pub connection_lost: bool,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: Some(detail.into()),
            headers: Vec::new(),
            connection_lost: false,
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
            connection_lost: false,
        }
    }
}

impl From<super::command::Refusal> for ApiError {
    fn from(r: super::command::Refusal) -> Self {
        Self {
            code: r.code,
            detail: r.detail.map(Into::into),
            headers: Vec::new(),
            connection_lost: false,
        }
    }
}
