//! The device API under `/ms`: enrolment, then signed requests (mailbox, response, lifesign).
//! Every answer carries the server's time (`Hermod-Server-Time`, and `server_time` in bodies).

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hermod_shared::wire::{
    ClaimAccepted, ClaimRequest, DeviceResponse, DeviceView, EnrolRequest, EnrolResponse, MailboxPage, PushRegistered,
    PushRegistration, PushStatus, PushTransport, ResponseAccepted,
};
use hermod_shared::{sha256_hex, CommandId, ErrorCode, Problem};
use serde::{Deserialize, Serialize};

use crate::domain::error::{ApiError, ApiResult};
use crate::engine::commands;
use crate::engine::devices;
use crate::engine::mailbox;
use crate::engine::AppState;
use crate::http::extract::{self, Body};
use crate::store::now_ms;

/// Enrol a device with the token of a `provision` command (from its link or QR code).
#[utoipa::path(
    post, path = "/ms/enrol", tag = "device",
    request_body = EnrolRequest,
    responses(
        (status = 201, description = "Enrolled; the device secret is shown only now", body = EnrolResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Invalid, used or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant is at its `max_devices` quota (`quota_exceeded`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn enrol(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<(axum::http::StatusCode, Json<EnrolResponse>)> {
    let req: EnrolRequest = extract::json(&headers, &body, false)?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(commands::enrol(&state, req).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MailboxQuery {
    /// The `cursor` of the previous page (0 at first).
    pub cursor: Option<i64>,
    /// Seconds to wait for a command when the mailbox is empty (long-poll), at most `commands.max-wait`.
    pub wait: Option<u32>,
}

/// Read the mailbox after a cursor; with `wait`, long-poll until something arrives.
#[utoipa::path(
    get, path = "/ms/mailbox", tag = "device",
    params(MailboxQuery),
    responses(
        (status = 200, body = MailboxPage),
        (status = 401, description = "Bad signature, stale timestamp or replayed nonce", body = Problem, content_type = "application/problem+json"),
    ),
    security(("device_signature" = []))
)]
pub async fn mailbox(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<MailboxPage>> {
    let device = devices::verify_request(&state, &method, &uri, &headers, &body).await?;
    let q: MailboxQuery = extract::query(&uri)?;
    let wait = extract::wait(q.wait, &state)?;
    Ok(Json(
        mailbox::poll(&state, &device, q.cursor.unwrap_or(0).max(0), wait).await?,
    ))
}

/// Answer a command: approve (with data such as a signature) or decline. Sending the same
/// answer again gets the same reply.
#[utoipa::path(
    post, path = "/ms/commands/{id}/response", tag = "device",
    params(("id" = String, Path)),
    request_body = DeviceResponse,
    responses(
        (status = 200, body = ResponseAccepted),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not addressed to this device", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already answered otherwise, or cancelled", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired", body = Problem, content_type = "application/problem+json"),
    ),
    security(("device_signature" = []))
)]
pub async fn respond(
    State(state): State<AppState>,
    edge: Option<axum::Extension<crate::http::edge_channel::EdgeCaller>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let device = devices::verify_request(&state, &method, &uri, &headers, &body).await?;
    let response: DeviceResponse = extract::json(&headers, &body, false)?;
    let id = CommandId::parse(&id).ok_or(ErrorCode::CommandNotFound)?;
    let row = commands::respond(&state, &device, id.as_str(), response, &sha256_hex(&body)).await?;
    let now = now_ms();
    let mut answer = Json(ResponseAccepted {
        id,
        status: row.status_at(now),
        server_time: now,
    })
    .into_response();
    // Behind the edge, the user's other devices are woken to see the command withdrawn.
    if edge.is_some() && row.device_id.is_none() {
        crate::http::client_api::tell_edge_mailboxes(&state, &row, &mut answer).await?;
    }
    Ok(answer)
}

/// Claim a command created for nobody ("log in on another device") with a frame of its
/// animated QR code, scanned from the client's screen: a frame at most `commands.qr-max-age`
/// seconds old (5 by default). The first device to claim it gets it (the command is then
/// delivered to it and in its mailbox; its client sees the device and user); the same device
/// claiming again gets the same answer.
#[utoipa::path(
    post, path = "/ms/claim", tag = "device",
    request_body = ClaimRequest,
    responses(
        (status = 200, body = ClaimAccepted),
        (status = 400, description = "Not a genuine frame of the command (`invalid_qr_frame`), or too old (`qr_frame_stale`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No command of the device's group waits to be claimed with this QR code (`qr_frame_unknown`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Claimed by another device first (`already_claimed`), cancelled, or answered", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired", body = Problem, content_type = "application/problem+json"),
    ),
    security(("device_signature" = []))
)]
pub async fn claim(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<ClaimAccepted>> {
    let device = devices::verify_request(&state, &method, &uri, &headers, &body).await?;
    let request: ClaimRequest = extract::json(&headers, &body, false)?;
    if request.frame.len() > 256 {
        return Err(ErrorCode::InvalidQrFrame.into());
    }
    let row = commands::claim(&state, &device, &request.frame).await?;
    Ok(Json(ClaimAccepted {
        command: row.mailbox_command(),
        server_time: now_ms(),
    }))
}

/// What the server offers for waking this device, and what the device registered.
#[utoipa::path(
    get, path = "/ms/push", tag = "device",
    responses((status = 200, body = PushStatus), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("device_signature" = []))
)]
pub async fn push_status(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<PushStatus>> {
    let device = devices::verify_request(&state, &method, &uri, &headers, &body).await?;
    let registration = crate::store::push::get(&state.db, &device.id).await?;
    Ok(Json(PushStatus {
        webpush_vapid_public_key: state.push.vapid.as_ref().map(|v| v.public_key.clone()),
        registration: registration.map(|r| PushRegistered {
            transport: PushTransport::Webpush,
            endpoint: r.endpoint,
        }),
    }))
}

/// Register how to wake this device when it is not long-polling: a Web Push subscription made
/// with the server's VAPID public key (`GET /ms/push`). Replaces an earlier registration. A push
/// carries `{"hermod":"wake"}` only; the device then polls its mailbox.
#[utoipa::path(
    put, path = "/ms/push", tag = "device",
    request_body = PushRegistration,
    responses(
        (status = 200, body = PushRegistered),
        (status = 400, description = "Not a valid subscription (`invalid_request`), an endpoint the egress policy refuses, or Web Push is not configured", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ),
    security(("device_signature" = []))
)]
pub async fn push_register(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<PushRegistered>> {
    let device = devices::verify_request(&state, &method, &uri, &headers, &body).await?;
    let request: PushRegistration = extract::json(&headers, &body, false)?;
    if state.push.vapid.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "this server sends no Web Push (push.webpush.vapid-private-key is not set)",
        ));
    }
    crate::domain::push::web_push(&request.endpoint, &request.keys.p256dh, &request.keys.auth)?;
    state
        .egress
        .check(&request.endpoint)
        .map_err(|refusal| ApiError::new(ErrorCode::InvalidRequest, format!("endpoint: {refusal}")))?;
    let registration = crate::store::push::Registration {
        device_id: device.id.clone(),
        transport: "webpush".into(),
        endpoint: request.endpoint.clone(),
        p256dh: Some(request.keys.p256dh),
        auth: Some(request.keys.auth),
    };
    crate::store::push::put(&state.db, &registration, now_ms()).await?;
    Ok(Json(PushRegistered {
        transport: PushTransport::Webpush,
        endpoint: request.endpoint,
    }))
}

/// Stop waking this device by push.
#[utoipa::path(
    delete, path = "/ms/push", tag = "device",
    responses((status = 204, description = "Removed (or there was none)"), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("device_signature" = []))
)]
pub async fn push_remove(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<axum::http::StatusCode> {
    let device = devices::verify_request(&state, &method, &uri, &headers, &body).await?;
    crate::store::push::remove(&state.db, &device.id, None).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lifesign {
    pub device: DeviceView,
    pub server_time: i64,
}

/// Tell the server the device is alive (clients see `last_seen_at`).
#[utoipa::path(
    post, path = "/ms/lifesign", tag = "device",
    responses((status = 200, body = Lifesign), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("device_signature" = []))
)]
pub async fn lifesign(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<Lifesign>> {
    let device = devices::verify_request(&state, &method, &uri, &headers, &body).await?;
    let device = devices::reload(&state, &device.id).await?;
    Ok(Json(Lifesign {
        device: device.view(),
        server_time: now_ms(),
    }))
}

/// Move the device to the server's current key after a key rotation: the answer holds its new
/// secret; the device signs with it from then on (no re-enrolment).
#[utoipa::path(
    post, path = "/ms/rekey", tag = "device",
    responses((status = 200, body = hermod_shared::wire::RekeyResponse), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("device_signature" = []))
)]
pub async fn rekey(
    State(state): State<AppState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<hermod_shared::wire::RekeyResponse>> {
    let device = devices::verify_request(&state, &method, &uri, &headers, &body).await?;
    let key = state.keys.current();
    let id = hermod_shared::DeviceId::parse(&device.id).ok_or(hermod_shared::ErrorCode::Internal)?;
    Ok(Json(hermod_shared::wire::RekeyResponse {
        device_secret: key.device_secret(&id).to_base64(),
        key_id: key.id().to_owned(),
        server_time: now_ms(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerTime {
    /// Unix milliseconds.
    pub server_time: i64,
}

/// The server's clock, for a device to correct its own before signing.
#[utoipa::path(get, path = "/ms/time", tag = "device", responses((status = 200, body = ServerTime)))]
pub async fn time() -> Json<ServerTime> {
    Json(ServerTime { server_time: now_ms() })
}
