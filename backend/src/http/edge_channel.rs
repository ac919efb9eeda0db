//! The backend's side of the signed channel from the edge (see `hermod_shared::edge`): when an
//! edge secret is configured, every API request must carry a valid, fresh, unreplayed
//! assertion, and the caller it names must be the caller the request authenticates as.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hermod_shared::edge::{self, AssertionError, Caller};
use hermod_shared::ErrorCode;

use crate::domain::error::ApiError;
use crate::engine::AppState;
use crate::store::now_ms;

/// The verified caller of a request that came through the edge.
#[derive(Debug, Clone)]
pub struct EdgeCaller(pub Caller);

fn refuse(e: AssertionError) -> Response {
    ApiError::new(ErrorCode::InvalidEdgeAssertion, e.to_string()).into_response()
}

pub async fn require_assertion(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(secret) = state.settings.edge.secret.clone() else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.settings.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return ApiError::from(ErrorCode::BodyTooLarge).into_response(),
    };
    let uri: &Uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map(|o| &o.0)
        .unwrap_or(&parts.uri);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let header = parts.headers.get(edge::HEADER_ASSERTION).and_then(|v| v.to_str().ok());
    let now = now_ms();
    let assertion = match edge::verify(
        secret.expose().as_bytes(),
        header,
        parts.method.as_str(),
        &path,
        &bytes,
        now / 1000,
    ) {
        Ok(a) => a,
        Err(e) => return refuse(e),
    };
    let fresh = sqlx::query(
        "INSERT INTO nonces (device_id, nonce, expires_at) VALUES ('edge', $1, $2) ON CONFLICT (device_id, nonce) DO NOTHING",
    )
    .bind(&assertion.nonce)
    .bind((assertion.timestamp + edge::WINDOW_SECS + 1) * 1000)
    .execute(&state.db.write)
    .await;
    match fresh {
        Ok(r) if r.rows_affected() == 1 => {}
        Ok(_) => return refuse(AssertionError::Replayed),
        Err(e) => return ApiError::from(e).into_response(),
    }
    // The assertion must name the caller the request itself claims to be; the backend then
    // authenticates that caller as usual (so a revoked key fails here at once).
    let claimed = if let Some(client) = crate::http::extract::credential(&parts.headers) {
        Caller::Client(client.client_id)
    } else if let Some(device) = parts.headers.get(hermod_shared::signing::HEADER_DEVICE) {
        Caller::Device(device.to_str().unwrap_or_default().to_owned())
    } else {
        Caller::Anonymous
    };
    let internal = parts.uri.path().starts_with("/edge/");
    let consistent = match &assertion.caller {
        Caller::Edge => internal && claimed == Caller::Anonymous,
        caller => !internal && *caller == claimed,
    };
    if !consistent {
        return refuse(AssertionError::Forged);
    }
    parts.extensions.insert(EdgeCaller(assertion.caller));
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// `GET /edge/clients/{client_id}`: a client's active key hashes, for the edge to cache. Only the edge
/// reaches it (an `edge` assertion); without an edge secret it does not exist.
pub async fn client_for_edge(
    State(state): State<AppState>,
    caller: Option<axum::Extension<EdgeCaller>>,
    axum::extract::Path(client_id): axum::extract::Path<String>,
) -> Result<axum::Json<hermod_shared::wire::EdgeClient>, ApiError> {
    match caller {
        Some(axum::Extension(EdgeCaller(Caller::Edge))) if state.settings.edge.secret.is_some() => {}
        _ => return Err(ErrorCode::NotFound.into()),
    }
    let key_hashes: Vec<String> = sqlx::query_scalar(
        "SELECT k.key_hash FROM clients c JOIN client_keys k ON k.client_pk = c.id AND k.revoked_at IS NULL
         WHERE c.client_id = $1 AND c.disabled_at IS NULL ORDER BY k.created_at",
    )
    .bind(&client_id)
    .fetch_all(&state.db.read)
    .await?;
    if key_hashes.is_empty() {
        return Err(ErrorCode::NotFound.into());
    }
    Ok(axum::Json(hermod_shared::wire::EdgeClient { client_id, key_hashes }))
}

#[derive(Debug, serde::Deserialize)]
pub struct ReconcileQuery {
    pub cursor: i64,
}

/// `GET /edge/mailboxes/{device_id}?cursor=N`: whether an active device has anything after its
/// cursor, answered at once (no wait, nothing marked delivered), and the device counted as seen.
/// The edge asks this at its reconciliation interval instead of forwarding a long-poll that the
/// backend would hold. Only the edge reaches it.
pub async fn mailbox_for_edge(
    State(state): State<AppState>,
    caller: Option<axum::Extension<EdgeCaller>>,
    axum::extract::Path(device_id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<ReconcileQuery>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    match caller {
        Some(axum::Extension(EdgeCaller(Caller::Edge))) if state.settings.edge.secret.is_some() => {}
        _ => return Err(ErrorCode::NotFound.into()),
    }
    let device: Option<crate::store::devices::DeviceRow> = sqlx::query_as(&format!(
        "SELECT {} FROM devices WHERE id = $1 AND revoked_at IS NULL",
        crate::store::devices::COLUMNS
    ))
    .bind(&device_id)
    .fetch_optional(&state.db.read)
    .await?;
    let Some(device) = device else {
        return Err(ErrorCode::DeviceNotFound.into());
    };
    let pending = crate::engine::mailbox::has_items(&state, &device, q.cursor.max(0)).await?;
    sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
        .bind(crate::store::now_ms())
        .bind(&device.id)
        .execute(&state.db.write)
        .await?;
    Ok(axum::Json(serde_json::json!({ "pending": pending })))
}
