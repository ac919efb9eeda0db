//! The client API under `/command`: server systems create, read, long-poll and cancel
//! commands, and read the devices of their group.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hermod_shared::approval::current_qr_frame;
use hermod_shared::enrolment;
use hermod_shared::wire::{CommandView, CreateCommand, DeviceView};
use hermod_shared::{sha256_hex, CommandId, CommandStatus, CommandType, ErrorCode, Problem};
use serde::Deserialize;

use crate::domain::error::{ApiError, ApiResult};
use crate::engine::commands;
use crate::engine::devices;
use crate::engine::AppState;
use crate::http::edge_channel::EdgeCaller;
use crate::http::extract::AuthClient;
use crate::http::extract::{self, Body};
use crate::store::now_ms;
use crate::store::tenants;

/// Longest accepted `Idempotency-Key`.
const IDEMPOTENCY_KEY_MAX: usize = 255;

/// Create a command of a built-in type (`provision`, `authenticate`, `sign`, `certificate`,
/// `ping`) or a custom type (`x-…`) for a device or a user of the client's group.
#[utoipa::path(
    post, path = "/command/{type}", tag = "commands",
    params(
        ("type" = String, Path, description = "provision, authenticate, sign, certificate, ping, or x-<name>"),
        ("Idempotency-Key" = Option<String>, Header, description = "Repeating a request with the same key returns the first command (at most 255 characters)"),
    ),
    request_body = CreateCommand,
    responses(
        (status = 201, description = "Created (or replayed for the same Idempotency-Key)", body = CommandView),
        (status = 400, description = "Malformed JSON, unknown type, bad timeout/lifespan, a binding_message that cannot be shown as it is, or binding_message/number_matching on a provision", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid client credentials (`invalid_credentials`), or a disabled client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such device or user in the client's group", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Idempotency-Key reused with another request", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's commands-per-second quota is used up (RateLimit-* and Retry-After say when to retry)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    edge: Option<axum::Extension<EdgeCaller>>,
    Path(command_type): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let command_type = CommandType::parse(&command_type)
        .map_err(|code| ApiError::new(code, format!("{command_type:?} is not a command type")))?;
    let req: CreateCommand = extract::json(&headers, &body, false)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_MAX)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        "Idempotency-Key must be 1-255 visible characters",
                    )
                })?,
        ),
    };
    let request_hash = sha256_hex(&[command_type.as_str().as_bytes(), b"\n", &body].concat());
    let quota = tenants::take_command(&state.db, &client).await?;
    let (row, replayed) = commands::create(&state, &client, command_type, req, idempotency_key, &request_hash).await?;
    let mut view = row.view(now_ms(), Some((state.keys.current(), &state.public_url)));
    // The QR code's secret is shown to its client here only (and again to a replay of this
    // create), never in a read, a long-poll or a callback.
    view.qr_start_secret = row.approval().map(|a| a.qr_secret);
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    if let Some(quota) = quota {
        crate::http::error::insert_headers(response.headers_mut(), &quota.headers(1));
    }
    response.headers_mut().insert(
        header::LOCATION,
        format!("/command/{}", row.id).parse().expect("ids are header-safe"),
    );
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", "true".parse().expect("static"));
    }
    if edge.is_some() && !replayed {
        tell_edge_mailboxes(&state, &row, &mut response).await?;
    }
    Ok(response)
}

/// Behind the edge, names the devices whose mailbox just changed, so that the edge wakes their
/// idle polls (`Hermod-Mailbox-Devices`; the edge keeps the header to itself).
pub(crate) async fn tell_edge_mailboxes(
    state: &AppState,
    row: &crate::store::commands::CommandRow,
    response: &mut Response,
) -> ApiResult<()> {
    let devices = commands::addressed_devices(state, row).await?;
    if !devices.is_empty() {
        let value = devices.join(",").parse().map_err(|_| ErrorCode::Internal)?;
        response.headers_mut().insert(MAILBOX_DEVICES_HEADER, value);
    }
    Ok(())
}

/// The response header that lists the devices whose mailbox changed (edge only).
pub const MAILBOX_DEVICES_HEADER: &str = "hermod-mailbox-devices";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait for the status to change (long-poll), at most `commands.max-wait` (60 by default).
    pub wait: Option<u32>,
}

fn command_id(id: &str) -> ApiResult<CommandId> {
    CommandId::parse(id).ok_or_else(|| ErrorCode::CommandNotFound.into())
}

/// Read a command; with `wait`, long-poll until its status changes or it ends.
#[utoipa::path(
    get, path = "/command/{id}", tag = "commands",
    params(("id" = String, Path), WaitQuery),
    responses(
        (status = 200, body = CommandView),
        (status = 400, description = "wait too long", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "More long-polls open for this client than `long-polls.per-client` (`rate_limited`, Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such command of this client", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn read(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    Path(id): Path<String>,
    uri: Uri,
) -> ApiResult<Json<CommandView>> {
    let q: WaitQuery = extract::query(&uri)?;
    let wait = extract::wait(q.wait, &state)?;
    let id = command_id(&id)?;
    let row = commands::wait_for_change(&state, &client, id.as_str(), wait).await?;
    Ok(Json(
        row.view(now_ms(), Some((state.keys.current(), &state.public_url))),
    ))
}

/// Cancel an open command. The device sees the cancellation in its mailbox. Cancelling a
/// cancelled command again answers the same.
#[utoipa::path(
    delete, path = "/command/{id}", tag = "commands",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = CommandView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already answered", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Already expired", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    edge: Option<axum::Extension<EdgeCaller>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = command_id(&id)?;
    let row = commands::cancel(&state, &client, id.as_str()).await?;
    let mut response = Json(row.view(now_ms(), Some((state.keys.current(), &state.public_url)))).into_response();
    if edge.is_some() {
        tell_edge_mailboxes(&state, &row, &mut response).await?;
    }
    Ok(response)
}

/// The QR code (SVG) of an open command: for a `provision`, its enrolment link; for any other
/// command, the animated QR code's current frame (`hermod.{qr_start_token}.{t}.{code}`, a new
/// one every second; see `qr_start_secret`), for clients that do not draw it themselves.
#[utoipa::path(
    get, path = "/command/{id}/qr", tag = "commands",
    params(("id" = String, Path)),
    responses(
        (status = 200, content_type = "image/svg+xml", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The command is no longer open (for a provision: no longer pending)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn qr(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = command_id(&id)?;
    let row = commands::get(&state, &client, id.as_str()).await?;
    let svg = qr_code(&state, &row, now_ms())?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}

/// The QR code (SVG) a command shows at `now`: a `provision`'s enrolment link while pending,
/// any other command's current animated frame while open.
pub(crate) fn qr_code(state: &AppState, row: &crate::store::commands::CommandRow, now: i64) -> ApiResult<String> {
    let text = if row.is_provision() {
        if row.status_at(now) != CommandStatus::Pending {
            return Err(ErrorCode::CommandExpired.into());
        }
        let id = command_id(&row.id)?;
        let token = state.keys.current().issue_token(&id);
        enrolment::deep_link(&state.public_url, &token)
    } else {
        let status = row.status_at(now);
        if status.is_final() {
            return Err(ApiError::new(
                ErrorCode::CommandExpired,
                format!("the command is {}: its QR code is gone", status.as_str()),
            ));
        }
        let approval = row.approval().ok_or(ErrorCode::Internal)?;
        current_qr_frame(&approval.qr_token, &approval.qr_secret, row.created_at, now)
    };
    // `public-url` is bounded by the config's validation, so a deep link always fits; should
    // one not, the caller gets an error, never a panic.
    enrolment::qr_svg(&text).ok_or_else(|| {
        tracing::error!("the enrolment link does not fit in a QR code: shorten public-url");
        ApiError::from(ErrorCode::Internal)
    })
}

/// A device of the client's group, with when it was last seen.
#[utoipa::path(
    get, path = "/command/devices/{device_id}", tag = "devices",
    params(("device_id" = String, Path)),
    responses(
        (status = 200, body = DeviceView),
        (status = 404, description = "No such device in the client's group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn device(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    Path(device_id): Path<String>,
) -> ApiResult<Json<DeviceView>> {
    let row = devices::get_for_client(&state, &client, &device_id).await?;
    Ok(Json(with_push(&state, vec![row]).await?.remove(0)))
}

/// The devices' views, each with its push transport when it registered one.
async fn with_push(state: &AppState, rows: Vec<crate::store::devices::DeviceRow>) -> ApiResult<Vec<DeviceView>> {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let registered = crate::store::push::registered(&state.db, &ids).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut view = r.view();
            if registered.contains(&r.id) {
                view.push = Some(hermod_shared::wire::PushTransport::Webpush);
            }
            view
        })
        .collect())
}

/// Revoke a device of the client's group: its signed requests are refused from now on, and it
/// no longer counts against the tenant's device quota.
#[utoipa::path(
    delete, path = "/command/devices/{device_id}", tag = "devices",
    params(("device_id" = String, Path)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such device in the client's group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn revoke_device(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    Path(device_id): Path<String>,
) -> ApiResult<StatusCode> {
    devices::revoke(&state, &client, &device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The devices of a user in the client's group.
#[utoipa::path(
    get, path = "/command/users/{user_id}/devices", tag = "devices",
    params(("user_id" = String, Path)),
    responses((status = 200, body = Vec<DeviceView>)),
    security(("api_key" = []), ("basic" = []))
)]
pub async fn user_devices(
    State(state): State<AppState>,
    AuthClient(client): AuthClient,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Vec<DeviceView>>> {
    let rows = devices::list_for_user(&state, &client, &user_id).await?;
    Ok(Json(with_push(&state, rows).await?))
}
