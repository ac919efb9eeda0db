//! `/generate-client`: the seeds' "generate client" page, an `allowed-clients` entry with a
//! fresh key to paste into `hermod-conf.yml`. It reveals nothing of the server.

use axum::extract::State;
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::domain::error::ApiResult;
use crate::engine::AppState;
use crate::http::extract;
use crate::tools::gen_client::{self, NewClient};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GenerateQuery {
    /// Defaults to `client`.
    #[serde(alias = "clientId")]
    pub client_id: Option<String>,
    /// Defaults to `default`.
    pub group: Option<String>,
}

/// A new `allowed-clients` entry with a fresh 256-bit key (text/plain YAML).
#[utoipa::path(
    get, path = "/generate-client", tag = "admin",
    params(GenerateQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 400, body = hermod_shared::Problem, content_type = "application/problem+json"))
)]
pub async fn generate_client(State(_state): State<AppState>, uri: Uri) -> ApiResult<Response> {
    let q: GenerateQuery = extract::query(&uri)?;
    let client = NewClient::generate(
        q.client_id.as_deref().unwrap_or("client"),
        q.group.as_deref().unwrap_or("default"),
    )?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        gen_client::render(&client),
    )
        .into_response())
}
