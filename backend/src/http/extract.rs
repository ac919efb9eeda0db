//! Request extraction that answers every malformed input with the same problem+json.

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::{FromRequest, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use hermod_shared::credential::ClientCredential;
use hermod_shared::ErrorCode;
use serde::de::DeserializeOwned;

use crate::domain::error::{ApiError, ApiResult};
use crate::engine::AppState;
use crate::store::audit::KeyKind;
use crate::store::clients::{self, Client};

/// The raw body, within the configured size limit.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.settings.max_body_bytes;
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("the limit is {limit} bytes"),
            )),
            Err(rejection) => Err(ApiError::new(ErrorCode::InvalidRequest, rejection.body_text())),
        }
    }
}

/// Parses a JSON body; an empty body is read as `{}` when `empty_is_object`.
pub fn json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8], empty_is_object: bool) -> ApiResult<T> {
    if body.is_empty() && empty_is_object {
        return serde_json::from_slice(b"{}").map_err(|e| ApiError::new(ErrorCode::MalformedJson, e.to_string()));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !(mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")) {
        return Err(ErrorCode::UnsupportedMediaType.into());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::new(ErrorCode::MalformedJson, e.to_string()))
}

/// Parses the query string.
pub fn query<T: DeserializeOwned>(uri: &Uri) -> ApiResult<T> {
    serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))
}

/// A long-poll's `wait`, checked against the configured maximum.
pub fn wait(seconds: Option<u32>, state: &AppState) -> ApiResult<std::time::Duration> {
    let max = state.settings.commands.max_wait;
    match seconds {
        Some(s) if s > max => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("wait is at most {max} seconds"),
        )),
        s => Ok(std::time::Duration::from_secs(u64::from(s.unwrap_or(0)))),
    }
}

/// The credential a request carries, if any (not yet checked).
pub fn credential(headers: &HeaderMap) -> Option<ClientCredential> {
    if let Some(v) = headers.get("x-api-key") {
        return ClientCredential::from_api_key(v.to_str().ok()?);
    }
    ClientCredential::from_authorization(headers.get("authorization")?.to_str().ok()?)
}

/// Extractor: the request's client, or a 401 problem.
pub struct AuthClient(pub Client);

impl FromRequestParts<AppState> for AuthClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let cred = credential(&parts.headers).ok_or(ErrorCode::InvalidCredentials)?;
        let client = clients::authenticate(&state.db, &cred).await?;
        state
            .key_use
            .note(&state.db, KeyKind::Client, &client.tenant_id, &client.key_id, || {
                (
                    format!("client:{}", client.client_id),
                    format!("{} {}", parts.method, parts.uri.path()),
                )
            });
        Ok(AuthClient(client))
    }
}
