//! Hosted tenants: tenants → groups → clients, each client with up to two active API keys,
//! tenant admin keys, per-tenant quotas. Every change is written with its audit record in one
//! transaction. Secrets are made here from 256 random bits, returned once and kept as SHA-256.
//! Config-file clients (the default tenant) are read-only here: the file stays their source.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hermod_shared::admin::{
    hosted_client_id, valid_name, AdminKeyView, ClientCreated, ClientKeyView, ClientView, CreateClient, CreateGroup,
    CreateTenant, GroupView, IssuedAdminKey, IssuedClientKey, Quotas, TenantCreated, TenantView, UpdateClient,
    MAX_ACTIVE_CLIENT_KEYS, NAME_MAX,
};
use hermod_shared::credential::ClientCredential;
use hermod_shared::ratelimit::RateDecision;
use hermod_shared::webhook::WebhookSecret;
use hermod_shared::wire::rfc3339;
use hermod_shared::{sha256_hex, ErrorCode};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::domain::error::{ApiError, ApiResult};
use crate::store::audit::Record;
use crate::store::clients::{group_id, Client};
use crate::store::{now_ms, random_id, Db};

/// The window of the commands-per-second quota.
const RATE_WINDOW_MS: i64 = 1000;

fn secret_256() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, detail)
}

fn check_name(what: &str, name: &str) -> ApiResult<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(bad(format!(
            "{what} must be 1-{NAME_MAX} of a-z, 0-9, '-' and '_', starting with a letter or digit"
        )))
    }
}

fn opt_time(ms: Option<i64>) -> Option<String> {
    ms.map(rfc3339)
}

/// Whether a unique constraint refused the write (both dialects).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

// ---- tenants --------------------------------------------------------------------------------

const TENANT_COLUMNS: &str = "t.id, t.name, t.created_at, t.max_commands_per_second, t.max_devices,
    (SELECT COUNT(*) FROM devices d JOIN groups g ON g.id = d.group_id WHERE g.tenant_id = t.id AND d.revoked_at IS NULL) AS devices";

fn tenant_view(row: &AnyRow) -> sqlx::Result<TenantView> {
    let limit = |v: Option<i64>| v.map(|n| n.clamp(0, i64::from(u32::MAX)) as u32);
    Ok(TenantView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: rfc3339(row.try_get("created_at")?),
        quotas: Quotas {
            max_commands_per_second: limit(row.try_get("max_commands_per_second")?),
            max_devices: limit(row.try_get("max_devices")?),
        },
        devices: row.try_get::<i64, _>("devices")?.max(0) as u64,
    })
}

pub async fn tenant(db: &Db, tenant_id: &str) -> ApiResult<TenantView> {
    let row = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants t WHERE t.id = $1"))
        .bind(tenant_id)
        .fetch_optional(&db.read)
        .await?
        .ok_or(ErrorCode::NotFound)?;
    Ok(tenant_view(&row)?)
}

pub async fn tenants(db: &Db) -> ApiResult<Vec<TenantView>> {
    let rows = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants t ORDER BY t.id"))
        .fetch_all(&db.read)
        .await?;
    Ok(rows.iter().map(tenant_view).collect::<sqlx::Result<_>>()?)
}

/// Creates a tenant and its first admin key (the operator's job).
pub async fn create_tenant(db: &Db, req: CreateTenant, actor: &str) -> ApiResult<TenantCreated> {
    check_name("id", &req.id)?;
    let name = req.name.clone().unwrap_or_else(|| req.id.clone());
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(bad("name must be 1-200 printable characters"));
    }
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query(
        "INSERT INTO tenants (id, name, created_at, max_commands_per_second, max_devices) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&req.id)
    .bind(&name)
    .bind(now)
    .bind(req.quotas.max_commands_per_second.map(i64::from))
    .bind(req.quotas.max_devices.map(i64::from))
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "a tenant with this id or name exists",
            ))
        }
        other => other?,
    };
    Record {
        tenant_id: &req.id,
        actor,
        action: "tenant.create",
        target: Some(&req.id),
        detail: Some(json!({ "name": name, "quotas": req.quotas })),
    }
    .write(&mut tx, now)
    .await?;
    let admin_key = issue_admin_key_in(&mut tx, &req.id, actor, now).await?;
    tx.commit().await?;
    Ok(TenantCreated {
        tenant: tenant(db, &req.id).await?,
        admin_key,
    })
}

/// Replaces a tenant's quotas (the operator's job). Takes effect with the next request.
pub async fn set_quotas(db: &Db, tenant_id: &str, quotas: Quotas, actor: &str) -> ApiResult<TenantView> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let updated = sqlx::query("UPDATE tenants SET max_commands_per_second = $1, max_devices = $2 WHERE id = $3")
        .bind(quotas.max_commands_per_second.map(i64::from))
        .bind(quotas.max_devices.map(i64::from))
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ErrorCode::NotFound.into());
    }
    Record {
        tenant_id,
        actor,
        action: "tenant.quotas.set",
        target: Some(tenant_id),
        detail: Some(json!(quotas)),
    }
    .write(&mut tx, now)
    .await?;
    tx.commit().await?;
    tenant(db, tenant_id).await
}

// ---- admin keys -----------------------------------------------------------------------------

async fn issue_admin_key_in(
    conn: &mut AnyConnection,
    tenant_id: &str,
    actor: &str,
    now: i64,
) -> ApiResult<IssuedAdminKey> {
    let id = random_id("adm_");
    let token = format!("{id}.{}", secret_256());
    sqlx::query("INSERT INTO admin_keys (id, tenant_id, key_hash, created_by, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(tenant_id)
        .bind(sha256_hex(token.as_bytes()))
        .bind(actor)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Record {
        tenant_id,
        actor,
        action: "admin.key.issue",
        target: Some(&id),
        detail: None,
    }
    .write(&mut *conn, now)
    .await?;
    Ok(IssuedAdminKey {
        id,
        token,
        created_at: rfc3339(now),
    })
}

pub async fn issue_admin_key(db: &Db, tenant_id: &str, actor: &str) -> ApiResult<IssuedAdminKey> {
    tenant(db, tenant_id).await?;
    let mut tx = db.begin_write().await?;
    let key = issue_admin_key_in(&mut tx, tenant_id, actor, now_ms()).await?;
    tx.commit().await?;
    Ok(key)
}

pub async fn admin_keys(db: &Db, tenant_id: &str) -> ApiResult<Vec<AdminKeyView>> {
    tenant(db, tenant_id).await?;
    let keys = key_rows(db, "admin_keys", "created_by", "tenant_id", tenant_id).await?;
    Ok(keys
        .into_iter()
        .map(|k| AdminKeyView {
            id: k.id,
            created_by: k.origin,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        })
        .collect())
}

/// One key of either kind, as listed (never the key itself).
struct KeyRow {
    id: String,
    origin: String,
    created_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

async fn key_rows(db: &Db, table: &str, origin: &str, owner: &str, owner_id: &str) -> ApiResult<Vec<KeyRow>> {
    let rows = sqlx::query(&format!(
        "SELECT id, {origin} AS origin, created_at, last_used_at, revoked_at FROM {table} WHERE {owner} = $1 ORDER BY created_at, id"
    ))
    .bind(owner_id)
    .fetch_all(&db.read)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(KeyRow {
                id: r.try_get("id")?,
                origin: r.try_get("origin")?,
                created_at: rfc3339(r.try_get("created_at")?),
                last_used_at: opt_time(r.try_get("last_used_at")?),
                revoked_at: opt_time(r.try_get("revoked_at")?),
            })
        })
        .collect::<sqlx::Result<_>>()
        .map_err(Into::into)
}

pub async fn revoke_admin_key(db: &Db, tenant_id: &str, key_id: &str, actor: &str) -> ApiResult<()> {
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM admin_keys WHERE id = $1 AND tenant_id = $2")
        .bind(key_id)
        .bind(tenant_id)
        .fetch_optional(&db.read)
        .await?;
    exists.ok_or(ErrorCode::NotFound)?;
    revoke(db, tenant_id, actor, "admin.key.revoke", key_id, || {
        sqlx::query("UPDATE admin_keys SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL")
    })
    .await?;
    Ok(())
}

/// Revokes a key at once (idempotent): `update` binds `now, key id, owner`.
async fn revoke<'q>(
    db: &Db,
    tenant_id: &str,
    actor: &str,
    action: &str,
    key_id: &'q str,
    update: impl FnOnce() -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
) -> ApiResult<bool> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let done = update()
        .bind(now)
        .bind(key_id)
        .bind(tenant_id.to_owned())
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if done {
        Record {
            tenant_id,
            actor,
            action,
            target: Some(key_id),
            detail: None,
        }
        .write(&mut tx, now)
        .await?;
    }
    tx.commit().await?;
    Ok(done)
}

// ---- groups ---------------------------------------------------------------------------------

pub async fn create_group(db: &Db, tenant_id: &str, req: CreateGroup, actor: &str) -> ApiResult<GroupView> {
    check_name("name", &req.name)?;
    tenant(db, tenant_id).await?;
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query("INSERT INTO groups (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(group_id(tenant_id, &req.name))
        .bind(tenant_id)
        .bind(&req.name)
        .bind(now)
        .execute(&mut *tx)
        .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => return Err(ApiError::new(ErrorCode::Conflict, "the group exists")),
        other => other?,
    };
    Record {
        tenant_id,
        actor,
        action: "group.create",
        target: Some(&req.name),
        detail: None,
    }
    .write(&mut tx, now)
    .await?;
    tx.commit().await?;
    Ok(GroupView {
        name: req.name,
        created_at: rfc3339(now),
    })
}

pub async fn groups(db: &Db, tenant_id: &str) -> ApiResult<Vec<GroupView>> {
    tenant(db, tenant_id).await?;
    let rows = sqlx::query("SELECT name, created_at FROM groups WHERE tenant_id = $1 ORDER BY name")
        .bind(tenant_id)
        .fetch_all(&db.read)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(GroupView {
                name: r.try_get("name")?,
                created_at: rfc3339(r.try_get("created_at")?),
            })
        })
        .collect::<sqlx::Result<_>>()
        .map_err(Into::into)
}

// ---- clients --------------------------------------------------------------------------------

const CLIENT_COLUMNS: &str = "c.id, c.client_id, c.name, g.name AS group_name, c.source, c.callback_url,
    c.callback_basic_auth, c.callback_disabled_at, c.created_at, c.disabled_at,
    (SELECT COUNT(*) FROM client_keys k WHERE k.client_pk = c.id AND k.revoked_at IS NULL) AS active_keys";

fn client_view(row: &AnyRow) -> sqlx::Result<ClientView> {
    let auth: Option<String> = row.try_get("callback_basic_auth")?;
    let url: Option<String> = row.try_get("callback_url")?;
    Ok(ClientView {
        warnings: hermod_shared::admin::callback_warnings(url.as_deref(), auth.is_some()),
        client_id: row.try_get("client_id")?,
        name: row.try_get("name")?,
        group: row.try_get("group_name")?,
        source: row.try_get("source")?,
        callback_url: url.map(|u| crate::domain::egress::redacted(&u)),
        callback_basic_auth: auth.is_some(),
        callback_disabled_at: opt_time(row.try_get("callback_disabled_at")?),
        active_keys: row.try_get::<i64, _>("active_keys")?.max(0) as u32,
        created_at: rfc3339(row.try_get("created_at")?),
        disabled_at: opt_time(row.try_get("disabled_at")?),
    })
}

async fn client_row(db: &Db, tenant_id: &str, name: &str) -> ApiResult<AnyRow> {
    Ok(sqlx::query(&format!(
        "SELECT {CLIENT_COLUMNS} FROM clients c JOIN groups g ON g.id = c.group_id WHERE c.tenant_id = $1 AND c.name = $2"
    ))
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(&db.read)
    .await?
    .ok_or(ErrorCode::NotFound)?)
}

pub async fn client(db: &Db, tenant_id: &str, name: &str) -> ApiResult<ClientView> {
    Ok(client_view(&client_row(db, tenant_id, name).await?)?)
}

/// The row of a client the admin API may change: an enabled, API-made client of the tenant.
async fn mutable_client(db: &Db, tenant_id: &str, name: &str) -> ApiResult<(String, ClientView)> {
    let row = client_row(db, tenant_id, name).await?;
    let view = client_view(&row)?;
    if view.source == "config" {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this client comes from the config file; change it there",
        ));
    }
    if view.disabled_at.is_some() {
        return Err(ErrorCode::NotFound.into());
    }
    Ok((row.try_get("id")?, view))
}

pub async fn clients(db: &Db, tenant_id: &str) -> ApiResult<Vec<ClientView>> {
    tenant(db, tenant_id).await?;
    let rows = sqlx::query(&format!(
        "SELECT {CLIENT_COLUMNS} FROM clients c JOIN groups g ON g.id = c.group_id WHERE c.tenant_id = $1 ORDER BY c.name"
    ))
    .bind(tenant_id)
    .fetch_all(&db.read)
    .await?;
    Ok(rows.iter().map(client_view).collect::<sqlx::Result<_>>()?)
}

fn check_callback(url: Option<&str>, basic_auth: Option<&str>) -> ApiResult<()> {
    use crate::domain::callback;
    if let Some(url) = url {
        callback::callback_url(url).map_err(|rule| bad(format!("callback_url {rule}")))?;
    }
    if let Some(auth) = basic_auth {
        callback::basic_auth(auth).map_err(|rule| bad(format!("callback_basic_auth {rule}")))?;
    }
    Ok(())
}

/// Creates a client in one of the tenant's groups, with its callback signing secret (shown
/// once). Its keys are issued separately.
pub async fn create_client(db: &Db, tenant_id: &str, req: CreateClient, actor: &str) -> ApiResult<ClientCreated> {
    check_name("name", &req.name)?;
    check_name("group", &req.group)?;
    check_callback(req.callback_url.as_deref(), req.callback_basic_auth.as_deref())?;
    tenant(db, tenant_id).await?;
    let group = group_id(tenant_id, &req.group);
    let group_exists: Option<String> = sqlx::query_scalar("SELECT id FROM groups WHERE id = $1")
        .bind(&group)
        .fetch_optional(&db.read)
        .await?;
    if group_exists.is_none() {
        return Err(bad(format!("the tenant has no group {:?}", req.group)));
    }
    let secret = WebhookSecret::from_bytes(rand::random()).expose();
    let client_id = hosted_client_id(tenant_id, &req.name);
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query(
        "INSERT INTO clients (id, tenant_id, group_id, client_id, name, callback_url, callback_basic_auth, callback_secrets, source, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'api', $9)",
    )
    .bind(random_id("cl_"))
    .bind(tenant_id)
    .bind(&group)
    .bind(&client_id)
    .bind(&req.name)
    .bind(&req.callback_url)
    .bind(&req.callback_basic_auth)
    .bind(&secret)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => return Err(ApiError::new(ErrorCode::Conflict, "the client exists")),
        other => other?,
    };
    Record {
        tenant_id,
        actor,
        action: "client.create",
        target: Some(&client_id),
        detail: Some(json!({ "group": req.group, "callback_url": req.callback_url })),
    }
    .write(&mut tx, now)
    .await?;
    tx.commit().await?;
    Ok(ClientCreated {
        client: client(db, tenant_id, &req.name).await?,
        callback_signing_secret: secret,
    })
}

/// Changes a client's callback URL or basic auth; a new URL clears a 410 stop.
pub async fn update_client(
    db: &Db,
    tenant_id: &str,
    name: &str,
    req: UpdateClient,
    actor: &str,
) -> ApiResult<ClientView> {
    check_callback(
        req.callback_url.clone().flatten().as_deref(),
        req.callback_basic_auth.clone().flatten().as_deref(),
    )?;
    let (pk, before) = mutable_client(db, tenant_id, name).await?;
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    if let Some(url) = &req.callback_url {
        sqlx::query(
            "UPDATE clients SET callback_url = $1,
                 callback_disabled_at = CASE WHEN callback_url = $1 THEN callback_disabled_at ELSE NULL END
             WHERE id = $2",
        )
        .bind(url)
        .bind(&pk)
        .execute(&mut *tx)
        .await?;
    }
    if req.callback_enabled == Some(true) {
        sqlx::query("UPDATE clients SET callback_disabled_at = NULL WHERE id = $1")
            .bind(&pk)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(auth) = &req.callback_basic_auth {
        sqlx::query("UPDATE clients SET callback_basic_auth = $1 WHERE id = $2")
            .bind(auth)
            .bind(&pk)
            .execute(&mut *tx)
            .await?;
    }
    Record {
        tenant_id,
        actor,
        action: "client.update",
        target: Some(&before.client_id),
        // The password itself is never logged.
        detail: Some(json!({
            "callback_url": req.callback_url,
            "callback_basic_auth": req.callback_basic_auth.map(|a| if a.is_some() { "set" } else { "cleared" }),
            "callback_enabled": req.callback_enabled,
        })),
    }
    .write(&mut tx, now)
    .await?;
    tx.commit().await?;
    client(db, tenant_id, name).await
}

/// Disables a client and revokes its keys at once; its commands stay in history.
pub async fn disable_client(db: &Db, tenant_id: &str, name: &str, actor: &str) -> ApiResult<()> {
    let (pk, view) = mutable_client(db, tenant_id, name).await?;
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query("UPDATE clients SET disabled_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&pk)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE client_keys SET revoked_at = $1 WHERE client_pk = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(&pk)
        .execute(&mut *tx)
        .await?;
    Record {
        tenant_id,
        actor,
        action: "client.disable",
        target: Some(&view.client_id),
        detail: None,
    }
    .write(&mut tx, now)
    .await?;
    tx.commit().await?;
    Ok(())
}

// ---- client keys ----------------------------------------------------------------------------

/// Issues a key (256 bits, shown once). A client holds at most two active keys: to rotate,
/// issue the new one, move the client over, then revoke the old one.
pub async fn issue_client_key(db: &Db, tenant_id: &str, name: &str, actor: &str) -> ApiResult<IssuedClientKey> {
    let (pk, view) = mutable_client(db, tenant_id, name).await?;
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    // Serialise issues for this client, so two at once cannot pass the count together.
    sqlx::query(&format!("SELECT id FROM clients WHERE id = $1{}", db.for_update()))
        .bind(&pk)
        .fetch_one(&mut *tx)
        .await?;
    let active: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM client_keys WHERE client_pk = $1 AND revoked_at IS NULL")
            .bind(&pk)
            .fetch_one(&mut *tx)
            .await?;
    if active >= MAX_ACTIVE_CLIENT_KEYS as i64 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("a client has at most {MAX_ACTIVE_CLIENT_KEYS} active keys: revoke one first"),
        ));
    }
    let id = random_id("key_");
    let key = secret_256();
    sqlx::query("INSERT INTO client_keys (id, client_pk, key_hash, source, created_at) VALUES ($1, $2, $3, 'api', $4)")
        .bind(&id)
        .bind(&pk)
        .bind(sha256_hex(key.as_bytes()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Record {
        tenant_id,
        actor,
        action: "client.key.issue",
        target: Some(&id),
        detail: Some(json!({ "client_id": view.client_id })),
    }
    .write(&mut tx, now)
    .await?;
    tx.commit().await?;
    let credential = ClientCredential {
        client_id: view.client_id.clone(),
        key: key.clone(),
    }
    .token();
    Ok(IssuedClientKey {
        id,
        client_id: view.client_id,
        key,
        credential,
        created_at: rfc3339(now),
    })
}

async fn client_pk(db: &Db, tenant_id: &str, name: &str) -> ApiResult<String> {
    Ok(client_row(db, tenant_id, name).await?.try_get("id")?)
}

pub async fn client_keys(db: &Db, tenant_id: &str, name: &str) -> ApiResult<Vec<ClientKeyView>> {
    let pk = client_pk(db, tenant_id, name).await?;
    let keys = key_rows(db, "client_keys", "source", "client_pk", &pk).await?;
    Ok(keys
        .into_iter()
        .map(|k| ClientKeyView {
            id: k.id,
            source: k.origin,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        })
        .collect())
}

/// Revokes a client key at once (idempotent); the edge stops accepting it within its cache
/// bound (`CLIENT_CACHE_TTL_SECS`).
pub async fn revoke_client_key(db: &Db, tenant_id: &str, name: &str, key_id: &str, actor: &str) -> ApiResult<()> {
    let (pk, _) = mutable_client(db, tenant_id, name).await?;
    let exists: Option<String> = sqlx::query_scalar("SELECT id FROM client_keys WHERE id = $1 AND client_pk = $2")
        .bind(key_id)
        .bind(&pk)
        .fetch_optional(&db.read)
        .await?;
    exists.ok_or(ErrorCode::NotFound)?;
    revoke(db, tenant_id, actor, "client.key.revoke", key_id, || {
        sqlx::query(
            "UPDATE client_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL
             AND client_pk IN (SELECT id FROM clients WHERE tenant_id = $3)",
        )
    })
    .await?;
    Ok(())
}

// ---- quotas ---------------------------------------------------------------------------------

/// Counts a command against its tenant's per-second quota (a one-second window shared by all
/// replicas through the database). `None` when the tenant has no such quota.
pub async fn take_command(db: &Db, client: &Client) -> ApiResult<Option<RateDecision>> {
    let Some(limit) = client.max_commands_per_second else {
        return Ok(None);
    };
    let now = now_ms();
    let window = now - now.rem_euclid(RATE_WINDOW_MS);
    let count: i64 = sqlx::query_scalar(
        "INSERT INTO tenant_usage (tenant_id, window_start, commands) VALUES ($1, $2, 1)
         ON CONFLICT (tenant_id) DO UPDATE SET
             commands = CASE WHEN tenant_usage.window_start = excluded.window_start THEN tenant_usage.commands + 1 ELSE 1 END,
             window_start = excluded.window_start
         RETURNING commands",
    )
    .bind(&client.tenant_id)
    .bind(window)
    .fetch_one(&db.write)
    .await?;
    let decision = RateDecision {
        allowed: count <= i64::from(limit),
        limit,
        remaining: (i64::from(limit) - count).clamp(0, i64::from(limit)) as u32,
        reset_secs: ((window + RATE_WINDOW_MS - now + 999) / 1000).max(1),
    };
    if decision.allowed {
        Ok(Some(decision))
    } else {
        Err(ApiError::new(
            ErrorCode::RateLimited,
            format!("the tenant may create {limit} commands per second"),
        )
        .with_headers(decision.headers(1)))
    }
}

/// Refuses an enrolment that would take the group's tenant past its device quota. Runs in the
/// enrolment's transaction; on PostgreSQL it locks the tenant row so two enrolments cannot
/// both take the last place.
pub async fn check_device_quota(conn: &mut AnyConnection, db: &Db, group: &str) -> ApiResult<()> {
    let tenant: Option<(String, Option<i64>)> =
        sqlx::query_as("SELECT t.id, t.max_devices FROM tenants t JOIN groups g ON g.tenant_id = t.id WHERE g.id = $1")
            .bind(group)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((tenant_id, Some(_))) = tenant else {
        return Ok(());
    };
    let limit: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT max_devices FROM tenants WHERE id = $1{}",
        db.for_update()
    ))
    .bind(&tenant_id)
    .fetch_one(&mut *conn)
    .await?;
    let Some(limit) = limit else { return Ok(()) };
    let devices: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM devices d JOIN groups g ON g.id = d.group_id WHERE g.tenant_id = $1 AND d.revoked_at IS NULL",
    )
    .bind(&tenant_id)
    .fetch_one(&mut *conn)
    .await?;
    if devices < limit {
        return Ok(());
    }
    let limit = limit.clamp(0, i64::from(u32::MAX)) as u32;
    let decision = RateDecision {
        allowed: false,
        limit,
        remaining: 0,
        reset_secs: 0,
    };
    let mut headers = decision.headers(0);
    headers.retain(|(name, _)| name != "retry-after" && name != "ratelimit-reset" && name != "ratelimit-policy");
    Err(ApiError::new(
        ErrorCode::QuotaExceeded,
        format!("the tenant may have {limit} devices; revoke one or raise the quota"),
    )
    .with_headers(headers))
}
