//! The callbacks of a client: what was sent, every attempt, and how to send again.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use hermod_shared::wire::{CallbackDelivery, DeliveryStatus, RecoverRequest, RecoverResult};
use hermod_shared::{CommandId, ErrorCode, Problem};
use serde::Deserialize;

use crate::domain::error::{ApiError, ApiResult};
use crate::engine::callbacks;
use crate::engine::commands;
use crate::engine::AppState;
use crate::http::extract::AuthClient;
use crate::http::extract::{self, Body};
use crate::store::now_ms;

/// Most deliveries in one listing.
const LIST_MAX: i64 = 100;

fn parse_time(field: &str, value: &str) -> ApiResult<i64> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{field} must be an RFC 3339 time between 1970 and 9999"),
        )
    };
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).map_err(|_| bad())?;
    // Inside the years `rfc3339` writes back, so a time read is a time written.
    if !(0..=253_402_300_799).contains(&t.unix_timestamp()) {
        return Err(bad());
    }
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The callbacks of a command, each with every attempt.
#[utoipa::path(
    get, path = "/command/{id}/callbacks", tag = "callbacks",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = Vec<CallbackDelivery>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn for_command(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<CallbackDelivery>>> {
    let id = CommandId::parse(&id).ok_or(ErrorCode::CommandNotFound)?;
    // The command may already be gone from history; its callbacks are still listed.
    let list = callbacks::for_command(&state.db, &client.pk, id.as_str()).await?;
    if list.is_empty() {
        commands::get(&state, &client, id.as_str()).await?;
    }
    Ok(Json(list))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending`, `delivered` or `dead`.
    pub status: Option<DeliveryStatus>,
    /// RFC 3339; 24 hours ago by default.
    pub since: Option<String>,
    /// RFC 3339; now by default.
    pub until: Option<String>,
    /// At most 100 (the default).
    pub limit: Option<i64>,
}

/// The client's callbacks, newest first.
#[utoipa::path(
    get, path = "/command/callbacks", tag = "callbacks",
    params(ListQuery),
    responses((status = 200, body = Vec<CallbackDelivery>), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn for_client(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    uri: Uri,
) -> ApiResult<Json<Vec<CallbackDelivery>>> {
    let q: ListQuery = extract::query(&uri)?;
    let now = now_ms();
    let since = q
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?
        .unwrap_or(now - 86_400_000);
    let until = q
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?
        .unwrap_or(now + 1);
    let limit = q.limit.unwrap_or(LIST_MAX);
    if !(1..=LIST_MAX).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit is 1 to {LIST_MAX}"),
        ));
    }
    Ok(Json(
        callbacks::for_client(&state.db, &client.pk, q.status, since, until, limit).await?,
    ))
}

/// Send one callback again, with a fresh retry schedule. Re-enables a receiver that answered 410.
#[utoipa::path(
    post, path = "/command/callbacks/{event_id}/redeliver", tag = "callbacks",
    params(("event_id" = String, Path, description = "The webhook-id")),
    responses((status = 202, body = CallbackDelivery), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn redeliver(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    Path(event_id): Path<String>,
) -> ApiResult<(StatusCode, Json<CallbackDelivery>)> {
    let delivery = callbacks::redeliver(&state.db, &client.pk, &event_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such callback of this client"))?;
    state.outbox.notify_one();
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

/// Send again every dead callback of the client created in a time range (after fixing the
/// receiver). Re-enables a receiver that answered 410.
#[utoipa::path(
    post, path = "/command/callbacks/recover", tag = "callbacks",
    request_body = RecoverRequest,
    responses((status = 202, body = RecoverResult), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn recover(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<RecoverResult>)> {
    let req: RecoverRequest = extract::json(&headers, &body, false)?;
    let since = parse_time("since", &req.since)?;
    let until = req
        .until
        .as_deref()
        .map(|u| parse_time("until", u))
        .transpose()?
        .unwrap_or(now_ms() + 1);
    if since >= until {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "since must be before until"));
    }
    let requeued = callbacks::recover(&state.db, &client.pk, since, until).await?;
    state.outbox.notify_one();
    Ok((StatusCode::ACCEPTED, Json(RecoverResult { requeued })))
}
