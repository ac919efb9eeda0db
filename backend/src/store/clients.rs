//! Clients: the server systems that send commands. Config-file clients live in the default
//! tenant and are synchronised into the database at start; hosted clients are made through the
//! admin API (see `tenants`). A client has up to two active keys (a rotation); credentials are
//! checked against the stored SHA-256 of each, in constant time.

use hermod_shared::credential::ClientCredential;
use hermod_shared::{sha256_hex, ErrorCode};
use sqlx::Row;

use crate::config::AllowedClient;
use crate::domain::error::ApiResult;
use crate::store::{now_ms, random_id, Db};

pub const DEFAULT_TENANT: &str = "default";

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Client {
    pub pk: String,
    pub client_id: String,
    pub tenant_id: String,
    pub group_id: String,
    /// The key it authenticated with.
    pub key_id: String,
    /// Its tenant's quota of commands per second, if any.
    pub max_commands_per_second: Option<u32>,
}

/// Makes the database's config-sourced clients match the file: new ones added, changed ones
/// updated (a changed key replaces the old one at once), removed ones disabled (their commands
/// stay in history until their lifespan ends). A hosted client's id is never taken over.
pub async fn sync_config_clients(db: &Db, clients: &[AllowedClient]) -> anyhow::Result<()> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(DEFAULT_TENANT)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    for c in clients {
        let group_id = group_id(DEFAULT_TENANT, &c.group);
        sqlx::query(
            "INSERT INTO groups (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&group_id)
        .bind(DEFAULT_TENANT)
        .bind(&c.group)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let secrets = (!c.callback_signing_secrets.is_empty()).then(|| {
            c.callback_signing_secrets
                .iter()
                .map(|s| s.expose())
                .collect::<Vec<_>>()
                .join(" ")
        });
        let pk: Option<String> = sqlx::query_scalar(
            "INSERT INTO clients (id, tenant_id, group_id, client_id, name, callback_url, callback_basic_auth, callback_secrets, source, created_at)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7, 'config', $8)
             ON CONFLICT (client_id) DO UPDATE SET group_id = excluded.group_id,
                 callback_url = excluded.callback_url, callback_basic_auth = excluded.callback_basic_auth,
                 callback_secrets = excluded.callback_secrets, disabled_at = NULL,
                 callback_disabled_at = CASE WHEN clients.callback_url = excluded.callback_url THEN clients.callback_disabled_at ELSE NULL END
             WHERE clients.source = 'config'
             RETURNING id",
        )
        .bind(random_id("cl_"))
        .bind(DEFAULT_TENANT)
        .bind(&group_id)
        .bind(&c.client_id)
        .bind(&c.callback_url)
        .bind(c.callback_basic_auth.as_ref().map(|a| a.expose()))
        .bind(secrets)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let pk = pk.ok_or_else(|| {
            anyhow::anyhow!(
                "allowed-clients: client-id {} is taken by a client made through the admin API",
                c.client_id
            )
        })?;
        let key_hash = sha256_hex(c.key.expose().as_bytes());
        sqlx::query(
            "UPDATE client_keys SET revoked_at = $1 WHERE client_pk = $2 AND source = 'config' AND revoked_at IS NULL AND key_hash <> $3",
        )
        .bind(now)
        .bind(&pk)
        .bind(&key_hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO client_keys (id, client_pk, key_hash, source, created_at)
             SELECT $1, $2, $3, 'config', $4 WHERE NOT EXISTS
                 (SELECT 1 FROM client_keys WHERE client_pk = $2 AND source = 'config' AND revoked_at IS NULL)",
        )
        .bind(random_id("key_"))
        .bind(&pk)
        .bind(&key_hash)
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

/// The id of a tenant's group.
pub fn group_id(tenant_id: &str, group: &str) -> String {
    format!("{tenant_id}/{group}")
}

/// The client a request authenticates as: its id must name an enabled client and its key one of
/// that client's active keys (compared in constant time, also for an unknown id).
pub async fn authenticate(db: &Db, cred: &ClientCredential) -> ApiResult<Client> {
    let rows: Vec<super::sqlite::ClientKeyRow> = match &db.sqlite_read {
        Some(readers) => {
            let id = cred.client_id.clone();
            readers
                .run(move |c| Ok(super::sqlite::client_keys(c, AUTHENTICATE_SQL, &id)?))
                .await?
        }
        None => {
            let rows = sqlx::query(AUTHENTICATE_SQL)
                .bind(&cred.client_id)
                .fetch_all(&db.read)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get(0)?,
                        r.try_get(1)?,
                        r.try_get(2)?,
                        r.try_get(3)?,
                        r.try_get(4)?,
                        r.try_get(5)?,
                        r.try_get(6)?,
                    ))
                })
                .collect::<sqlx::Result<_>>()?
        }
    };
    let hashes: Vec<String> = rows.iter().map(|r| r.6.clone()).collect();
    let (pk, client_id, tenant_id, group_id, rate, key_id, _) = cred
        .matching_key(&hashes)
        .map(|i| rows[i].clone())
        .ok_or(ErrorCode::InvalidCredentials)?;
    Ok(Client {
        pk,
        client_id,
        tenant_id,
        group_id,
        key_id,
        max_commands_per_second: rate.map(|r| r.clamp(0, i64::from(u32::MAX)) as u32),
    })
}

/// An enabled client's active keys, with what a request needs to know of the client.
pub const AUTHENTICATE_SQL: &str =
    "SELECT c.id, c.client_id, c.tenant_id, c.group_id, t.max_commands_per_second, k.id AS key_id, k.key_hash
     FROM clients c JOIN client_keys k ON k.client_pk = c.id AND k.revoked_at IS NULL
     JOIN tenants t ON t.id = c.tenant_id
     WHERE c.client_id = $1 AND c.disabled_at IS NULL";
