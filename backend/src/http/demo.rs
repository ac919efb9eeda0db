//! `/demo`: a page for trying phishing-resistant approval with the device simulator. It enrols
//! a device by QR code, then starts a login that the device claims by scanning the animated QR
//! code, and shows the verification code and the outcome. Served only while
//! `demo-page-client` names an `allowed-clients` entry: the page's calls act as that client
//! (so they count against its tenant's quota and show in its history), and they can do no
//! more than create a provision or a claim-by-QR login and follow the commands they made. The
//! QR secret never reaches the page: it gets each frame as an SVG.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hermod_shared::credential::ClientCredential;
use hermod_shared::wire::CreateCommand;
use hermod_shared::{sha256_hex, CommandType, ErrorCode, UserId};
use serde::{Deserialize, Serialize};

use crate::domain::error::ApiResult;
use crate::engine::commands;
use crate::engine::AppState;
use crate::http::extract::{self, Body};
use crate::store::clients::{self, Client};
use crate::store::now_ms;

const PAGE: &str = include_str!("demo/page.html");
const SCRIPT: &str = include_str!("demo/demo.js");
/// What the page may load: itself, and the QR codes it is served.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'";
/// How long a demo command stays open.
const TIMEOUT: u32 = 300;
/// What a demo login asks the device to show.
pub const LOGIN_TEXT: &str = "Log in to the Hermod demo";

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// The client the page acts as, authenticated with its configured key like any request.
async fn demo_client(state: &AppState) -> ApiResult<Client> {
    let name = state.settings.demo_page_client.as_deref().ok_or(ErrorCode::NotFound)?;
    let entry = state
        .settings
        .allowed_clients
        .iter()
        .find(|c| c.client_id == name)
        .ok_or(ErrorCode::NotFound)?;
    clients::authenticate(
        &state.db,
        &ClientCredential {
            client_id: entry.client_id.clone(),
            key: entry.key.expose().to_owned(),
        },
    )
    .await
}

async fn create(
    state: &AppState,
    command_type: CommandType,
    req: CreateCommand,
) -> ApiResult<crate::store::commands::CommandRow> {
    let client = demo_client(state).await?;
    crate::store::tenants::take_command(&state.db, &client).await?;
    let hash = sha256_hex(serde_json::to_string(&req).unwrap_or_default().as_bytes());
    let (row, _) = commands::create(state, &client, command_type, req, None, &hash).await?;
    Ok(row)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolStart {
    user_id: UserId,
}

#[derive(Debug, Serialize)]
pub struct Started {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_code: Option<String>,
}

/// Starts an enrolment for a user: a `provision` whose link the page shows as a QR code.
pub async fn enrol(State(state): State<AppState>, headers: HeaderMap, Body(body): Body) -> ApiResult<Response> {
    let start: EnrolStart = extract::json(&headers, &body, false)?;
    let req = CreateCommand {
        user_id: Some(start.user_id),
        timeout: Some(TIMEOUT),
        ..Default::default()
    };
    let row = create(&state, CommandType::Provision, req).await?;
    let view = row.view(now_ms(), Some((state.keys.current(), &state.public_url)));
    let started = Started {
        id: row.id,
        link: view.enrolment.map(|e| e.link),
        verification_code: None,
    };
    Ok((StatusCode::CREATED, Json(started)).into_response())
}

/// Starts a login for whoever claims it: an `authenticate` for nobody, shown as an animated QR
/// code with its verification code.
pub async fn login(State(state): State<AppState>) -> ApiResult<Response> {
    let req = CreateCommand {
        binding_message: Some(LOGIN_TEXT.to_owned()),
        timeout: Some(TIMEOUT),
        ..Default::default()
    };
    let row = create(&state, CommandType::Authenticate, req).await?;
    let started = Started {
        verification_code: row.approval().map(|a| a.verification_code()),
        id: row.id,
        link: None,
    };
    Ok((StatusCode::CREATED, Json(started)).into_response())
}

#[derive(Debug, Serialize)]
pub struct Followed {
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answered_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Where a demo command is (only the demo client's commands).
pub async fn command(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Followed>> {
    let client = demo_client(&state).await?;
    let row = commands::get(&state, &client, &id).await?;
    Ok(Json(Followed {
        status: row.status_at(now_ms()).as_str().to_owned(),
        user_id: row.user_id,
        device_id: row.device_id,
        answered_by: row.answered_by,
        reason: row.reason,
    }))
}

/// A demo command's QR code now (a login's current frame).
pub async fn qr(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let client = demo_client(&state).await?;
    let row = commands::get(&state, &client, &id).await?;
    let svg = crate::http::client_api::qr_code(&state, &row, now_ms())?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}
