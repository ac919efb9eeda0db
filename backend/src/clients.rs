//! Clients: the server systems that send commands. Config-file clients live in the default
//! tenant and are synchronised into the database at start; credentials are checked against
//! the stored SHA-256 of the key, in constant time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use hermod_shared::credential::ClientCredential;
use hermod_shared::{sha256_hex, ErrorCode};
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::config::AllowedClient;
use crate::db::{now_ms, random_id, Db};
use crate::error::{ApiError, ApiResult};

pub const DEFAULT_TENANT: &str = "default";

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Client {
    pub pk: String,
    pub client_id: String,
    pub tenant_id: String,
    pub group_id: String,
}

/// Makes the database's config-sourced clients match the file: new ones added, changed ones
/// updated, removed ones disabled (their commands stay in history until their lifespan ends).
pub async fn sync_config_clients(db: &Db, clients: &[AllowedClient]) -> anyhow::Result<()> {
    let now = now_ms();
    let mut tx = db.write.begin().await?;
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(DEFAULT_TENANT)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    for c in clients {
        let group_id = format!("{DEFAULT_TENANT}/{}", c.group);
        sqlx::query(
            "INSERT INTO groups (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&group_id)
        .bind(DEFAULT_TENANT)
        .bind(&c.group)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let secrets = (!c.callback_signing_secrets.is_empty()).then(|| c.callback_signing_secrets.join(" "));
        sqlx::query(
            "INSERT INTO clients (id, tenant_id, group_id, client_id, key_hash, callback_url, callback_basic_auth, callback_secrets, source, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'config', $9)
             ON CONFLICT (client_id) DO UPDATE SET group_id = excluded.group_id, key_hash = excluded.key_hash,
                 callback_url = excluded.callback_url, callback_basic_auth = excluded.callback_basic_auth,
                 callback_secrets = excluded.callback_secrets, disabled_at = NULL,
                 callback_disabled_at = CASE WHEN clients.callback_url = excluded.callback_url THEN clients.callback_disabled_at ELSE NULL END",
        )
        .bind(random_id("cl_"))
        .bind(DEFAULT_TENANT)
        .bind(&group_id)
        .bind(&c.client_id)
        .bind(sha256_hex(c.key.as_bytes()))
        .bind(&c.callback_url)
        .bind(&c.callback_basic_auth)
        .bind(secrets)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    let rows = sqlx::query("SELECT client_id FROM clients WHERE source = 'config' AND disabled_at IS NULL")
        .fetch_all(&mut *tx)
        .await?;
    for row in rows {
        let id: String = row.try_get(0)?;
        if !clients.iter().any(|c| c.client_id == id) {
            sqlx::query("UPDATE clients SET disabled_at = $1 WHERE client_id = $2")
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            tracing::info!(client_id = %id, "client no longer in the config file: disabled");
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The credential a request carries, if any (not yet checked).
pub fn credential(headers: &HeaderMap) -> Option<ClientCredential> {
    if let Some(v) = headers.get("x-api-key") {
        return ClientCredential::from_api_key(v.to_str().ok()?);
    }
    ClientCredential::from_authorization(headers.get("authorization")?.to_str().ok()?)
}

pub async fn authenticate(db: &Db, headers: &HeaderMap) -> ApiResult<Client> {
    let cred = credential(headers).ok_or(ErrorCode::InvalidCredentials)?;
    let row = sqlx::query(
        "SELECT id, client_id, tenant_id, group_id, key_hash FROM clients WHERE client_id = $1 AND disabled_at IS NULL",
    )
    .bind(&cred.client_id)
    .fetch_optional(&db.read)
    .await?;
    let presented = sha256_hex(cred.key.as_bytes());
    // Compare against something even for an unknown client, so timing says nothing.
    let stored: String = match &row {
        Some(r) => r.try_get("key_hash")?,
        None => "0".repeat(64),
    };
    let matches: bool = presented.as_bytes().ct_eq(stored.as_bytes()).into();
    match row {
        Some(r) if matches => Ok(Client {
            pk: r.try_get("id")?,
            client_id: r.try_get("client_id")?,
            tenant_id: r.try_get("tenant_id")?,
            group_id: r.try_get("group_id")?,
        }),
        _ => Err(ErrorCode::InvalidCredentials.into()),
    }
}

/// Extractor: the request's client, or a 401 problem.
pub struct AuthClient(pub Client);

impl FromRequestParts<AppState> for AuthClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(&state.db, &parts.headers).await.map(AuthClient)
    }
}
