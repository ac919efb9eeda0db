//! The admin API under `/admin`, for hosted tenants: the operator creates tenants and sets their
//! quotas; a tenant's admins manage its groups, clients, keys and admin keys, and read its audit
//! log. Authenticated with `Authorization: Bearer` (the operator token or a tenant admin token);
//! a tenant admin asking about another tenant gets 404, as if it did not exist.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use hermod_shared::admin::{
    AdminKeyView, AuditPage, ClientCreated, ClientKeyView, ClientView, CreateClient, CreateGroup, CreateTenant,
    GroupView, IssuedAdminKey, IssuedClientKey, Quotas, TenantCreated, TenantView, UpdateClient,
};
use hermod_shared::{ErrorCode, Problem};
use serde::Deserialize;

use crate::domain::error::{ApiError, ApiResult};
use crate::engine::AppState;
use crate::http::admin_auth::Admin;
use crate::http::extract::{self, Body};
use crate::store::audit;
use crate::store::tenants;

type Created<T> = (StatusCode, Json<T>);

/// Create a tenant and its first admin token (operator only).
#[utoipa::path(
    post, path = "/admin/tenants", tag = "admin",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created; `admin_key.token` is shown only here", body = TenantCreated),
        (status = 400, description = "Bad id or name", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the operator", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant exists", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = []))
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Created<TenantCreated>> {
    admin.require_operator()?;
    let req: CreateTenant = extract::json(&headers, &body, false)?;
    let created = tenants::create_tenant(&state.db, req, &admin.actor()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every tenant (operator only).
#[utoipa::path(
    get, path = "/admin/tenants", tag = "admin",
    responses((status = 200, body = Vec<TenantView>), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn list_tenants(State(state): State<AppState>, admin: Admin) -> ApiResult<Json<Vec<TenantView>>> {
    admin.require_operator()?;
    Ok(Json(tenants::tenants(&state.db).await?))
}

/// A tenant, its quotas and its device count.
#[utoipa::path(
    get, path = "/admin/tenants/{tenant}", tag = "admin",
    params(("tenant" = String, Path)),
    responses((status = 200, body = TenantView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    admin: Admin,
    Path(tenant): Path<String>,
) -> ApiResult<Json<TenantView>> {
    admin.require_tenant(&tenant)?;
    Ok(Json(tenants::tenant(&state.db, &tenant).await?))
}

/// Replace a tenant's quotas (operator only); `null` or absent is unlimited.
#[utoipa::path(
    put, path = "/admin/tenants/{tenant}/quotas", tag = "admin",
    params(("tenant" = String, Path)),
    request_body = Quotas,
    responses(
        (status = 200, body = TenantView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = []))
)]
pub async fn set_quotas(
    State(state): State<AppState>,
    admin: Admin,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<TenantView>> {
    admin.require_tenant(&tenant)?;
    admin.require_operator()?;
    let quotas: Quotas = extract::json(&headers, &body, false)?;
    Ok(Json(
        tenants::set_quotas(&state.db, &tenant, quotas, &admin.actor()).await?,
    ))
}

/// Issue another admin token for the tenant (shown once).
#[utoipa::path(
    post, path = "/admin/tenants/{tenant}/admin-keys", tag = "admin",
    params(("tenant" = String, Path)),
    responses((status = 201, body = IssuedAdminKey), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn issue_admin_key(
    State(state): State<AppState>,
    admin: Admin,
    Path(tenant): Path<String>,
) -> ApiResult<Created<IssuedAdminKey>> {
    admin.require_tenant(&tenant)?;
    let key = tenants::issue_admin_key(&state.db, &tenant, &admin.actor()).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// The tenant's admin tokens (never their secrets).
#[utoipa::path(
    get, path = "/admin/tenants/{tenant}/admin-keys", tag = "admin",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<AdminKeyView>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn list_admin_keys(
    State(state): State<AppState>,
    admin: Admin,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Vec<AdminKeyView>>> {
    admin.require_tenant(&tenant)?;
    Ok(Json(tenants::admin_keys(&state.db, &tenant).await?))
}

/// Revoke an admin token, at once.
#[utoipa::path(
    delete, path = "/admin/tenants/{tenant}/admin-keys/{key_id}", tag = "admin",
    params(("tenant" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn revoke_admin_key(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, key_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    admin.require_tenant(&tenant)?;
    tenants::revoke_admin_key(&state.db, &tenant, &key_id, &admin.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create a group: clients in one group share its devices.
#[utoipa::path(
    post, path = "/admin/tenants/{tenant}/groups", tag = "admin",
    params(("tenant" = String, Path)),
    request_body = CreateGroup,
    responses(
        (status = 201, body = GroupView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = []))
)]
pub async fn create_group(
    State(state): State<AppState>,
    admin: Admin,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Created<GroupView>> {
    admin.require_tenant(&tenant)?;
    let req: CreateGroup = extract::json(&headers, &body, false)?;
    let group = tenants::create_group(&state.db, &tenant, req, &admin.actor()).await?;
    Ok((StatusCode::CREATED, Json(group)))
}

#[utoipa::path(
    get, path = "/admin/tenants/{tenant}/groups", tag = "admin",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<GroupView>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn list_groups(
    State(state): State<AppState>,
    admin: Admin,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Vec<GroupView>>> {
    admin.require_tenant(&tenant)?;
    Ok(Json(tenants::groups(&state.db, &tenant).await?))
}

/// Create a client in a group; the answer holds its callback signing secret, shown only here.
/// Its API keys are issued with `POST …/keys`.
#[utoipa::path(
    post, path = "/admin/tenants/{tenant}/clients", tag = "admin",
    params(("tenant" = String, Path)),
    request_body = CreateClient,
    responses(
        (status = 201, body = ClientCreated),
        (status = 400, description = "Bad name, unknown group, bad callback URL or basic auth", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = []))
)]
pub async fn create_client(
    State(state): State<AppState>,
    admin: Admin,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Created<ClientCreated>> {
    admin.require_tenant(&tenant)?;
    let req: CreateClient = extract::json(&headers, &body, false)?;
    if let Some(url) = &req.callback_url {
        crate::engine::egress::check_tenant_url(&state.egress, url)?;
    }
    let created = tenants::create_client(&state.db, &tenant, req, &admin.actor()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get, path = "/admin/tenants/{tenant}/clients", tag = "admin",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<ClientView>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn list_clients(
    State(state): State<AppState>,
    admin: Admin,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Vec<ClientView>>> {
    admin.require_tenant(&tenant)?;
    Ok(Json(tenants::clients(&state.db, &tenant).await?))
}

#[utoipa::path(
    get, path = "/admin/tenants/{tenant}/clients/{client}", tag = "admin",
    params(("tenant" = String, Path), ("client" = String, Path, description = "The client's name")),
    responses((status = 200, body = ClientView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn get_client(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, client)): Path<(String, String)>,
) -> ApiResult<Json<ClientView>> {
    admin.require_tenant(&tenant)?;
    Ok(Json(tenants::client(&state.db, &tenant, &client).await?))
}

/// Change a client's callback URL or basic auth (absent fields stay, `null` clears).
#[utoipa::path(
    patch, path = "/admin/tenants/{tenant}/clients/{client}", tag = "admin",
    params(("tenant" = String, Path), ("client" = String, Path)),
    request_body = UpdateClient,
    responses(
        (status = 200, body = ClientView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A config-file client", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = []))
)]
pub async fn update_client(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, client)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Json<ClientView>> {
    admin.require_tenant(&tenant)?;
    let req: UpdateClient = extract::json(&headers, &body, false)?;
    if let Some(Some(url)) = &req.callback_url {
        crate::engine::egress::check_tenant_url(&state.egress, url)?;
    }
    Ok(Json(
        tenants::update_client(&state.db, &tenant, &client, req, &admin.actor()).await?,
    ))
}

/// Disable a client and revoke all its keys at once.
#[utoipa::path(
    delete, path = "/admin/tenants/{tenant}/clients/{client}", tag = "admin",
    params(("tenant" = String, Path), ("client" = String, Path)),
    responses((status = 204), (status = 409, description = "A client from the config file: change it there", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn disable_client(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, client)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    admin.require_tenant(&tenant)?;
    tenants::disable_client(&state.db, &tenant, &client, &admin.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Issue an API key (256 bits, shown once). At most two are active: to rotate, issue the new
/// key, move the client over, revoke the old one.
#[utoipa::path(
    post, path = "/admin/tenants/{tenant}/clients/{client}/keys", tag = "admin",
    params(("tenant" = String, Path), ("client" = String, Path)),
    responses(
        (status = 201, body = IssuedClientKey),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Two keys are active already", body = Problem, content_type = "application/problem+json"),
    ),
    security(("admin_token" = []))
)]
pub async fn issue_client_key(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, client)): Path<(String, String)>,
) -> ApiResult<Created<IssuedClientKey>> {
    admin.require_tenant(&tenant)?;
    let key = tenants::issue_client_key(&state.db, &tenant, &client, &admin.actor()).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// A client's keys, active and revoked (never the keys themselves).
#[utoipa::path(
    get, path = "/admin/tenants/{tenant}/clients/{client}/keys", tag = "admin",
    params(("tenant" = String, Path), ("client" = String, Path)),
    responses((status = 200, body = Vec<ClientKeyView>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn list_client_keys(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, client)): Path<(String, String)>,
) -> ApiResult<Json<Vec<ClientKeyView>>> {
    admin.require_tenant(&tenant)?;
    Ok(Json(tenants::client_keys(&state.db, &tenant, &client).await?))
}

/// Revoke a key: the backend refuses it at once, the edge within `CLIENT_CACHE_TTL_SECS`
/// (30 s by default).
#[utoipa::path(
    delete, path = "/admin/tenants/{tenant}/clients/{client}/keys/{key_id}", tag = "admin",
    params(("tenant" = String, Path), ("client" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 409, description = "A client from the config file: change it there", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn revoke_client_key(
    State(state): State<AppState>,
    admin: Admin,
    Path((tenant, client, key_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    admin.require_tenant(&tenant)?;
    tenants::revoke_client_key(&state.db, &tenant, &client, &key_id, &admin.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries after this cursor (`next_cursor` of the previous page); 0 for the first.
    pub after: Option<i64>,
    /// At most this many (1-500, 100 by default).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The tenant's audit log, oldest first: admin actions, and each key's use at most once a minute.
#[utoipa::path(
    get, path = "/admin/tenants/{tenant}/audit", tag = "admin",
    params(("tenant" = String, Path), AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, description = "`limit` outside 1-500, a bad `after`, or an unknown query parameter", body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("admin_token" = []))
)]
pub async fn audit_log(
    State(state): State<AppState>,
    admin: Admin,
    Path(tenant): Path<String>,
    uri: Uri,
) -> ApiResult<Json<AuditPage>> {
    admin.require_tenant(&tenant)?;
    let query: AuditQuery = extract::query(&uri)?;
    if query.limit.is_some_and(|l| l == 0 || l > audit::PAGE_MAX) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit must be 1-{}", audit::PAGE_MAX),
        ));
    }
    tenants::tenant(&state.db, &tenant).await?;
    let page = audit::page(&state.db, &tenant, query.after.unwrap_or(0), query.limit.unwrap_or(100)).await?;
    Ok(Json(page))
}
