//! Devices: enrolled authenticators. Every device request is signed with the device's secret
//! (derived from the server key) and carries a nonce that is refused if seen again.

use axum::http::{HeaderMap, Method, Uri};
use hermod_shared::signing::{self, DeviceSecret, SignatureError, SignedHeaders};
use hermod_shared::ErrorCode;

use crate::domain::error::{ApiError, ApiResult};
use crate::engine::AppState;
use crate::store::clients::Client;
use crate::store::devices::{DeviceRow, COLUMNS};
use crate::store::now_ms;

/// `last_seen_at` is written at most this often (ms) per device, to keep polls cheap.
const LAST_SEEN_RESOLUTION_MS: i64 = 5_000;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks a signed device request: the headers, the device, the signature over the method,
/// the path and query as sent, the timestamp and the body; then records the nonce.
pub async fn verify_request(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<DeviceRow> {
    let refuse = |e: SignatureError| ApiError::new(e.into(), e.to_string());
    let signed = SignedHeaders::parse(
        header(headers, signing::HEADER_DEVICE),
        header(headers, signing::HEADER_TIMESTAMP),
        header(headers, signing::HEADER_NONCE),
        header(headers, signing::HEADER_SIGNATURE),
    )
    .map_err(refuse)?;
    // The signature is checked first: the secret derives from a server key and the id the
    // request names, so a request that is not the device's own touches no row, and an unknown
    // device is answered like a wrong signature (ids are not to be probed). Each key of the
    // ring is tried, newest first (a ring holds a few).
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let now = now_ms();
    let window = state.settings.devices.signature_window;
    let mut signed_with = None;
    let mut failure = SignatureError::Mismatch;
    for key in state.keys.newest_first() {
        let secret: DeviceSecret = key.device_secret(&signed.device);
        match signing::verify(&secret, &signed, method.as_str(), path, body, now / 1000, window) {
            Ok(()) => {
                signed_with = Some(key.id().to_owned());
                break;
            }
            // Stale, future or malformed: the same whichever the key.
            Err(e @ (SignatureError::Stale | SignatureError::Future | SignatureError::Malformed)) => {
                return Err(refuse(e))
            }
            Err(e) => failure = e,
        }
    }
    let signed_with = signed_with.ok_or_else(|| refuse(failure))?;
    let expires_at = (signed.timestamp + window + 1) * 1000;
    // Then one step: the device is enrolled and not revoked, and the nonce is new.
    let found = match &state.db.sqlite {
        Some(writer) => {
            let (id, nonce) = (signed.device.as_str().to_owned(), signed.nonce.clone());
            writer
                .run(move |c| {
                    Ok(crate::store::sqlite::use_nonce(
                        c,
                        &id,
                        &nonce,
                        expires_at,
                        now,
                        LAST_SEEN_RESOLUTION_MS,
                    )?)
                })
                .await?
        }
        None => sqlx::query_as::<_, VerifiedDevice>(&USE_NONCE_PG)
            .bind(signed.device.as_str())
            .bind(&signed.nonce)
            .bind(expires_at)
            .bind(now)
            .bind(LAST_SEEN_RESOLUTION_MS)
            .fetch_optional(&state.db.write)
            .await?
            .map(|v| (v.device, v.fresh)),
    };
    match found {
        None => Err(refuse(SignatureError::Mismatch)),
        Some((_, false)) => Err(refuse(SignatureError::Replayed)),
        // Signed with its own key.
        Some((device, true)) if device.key_id() == signed_with => Ok(device),
        // Signed with the current key, which only Hermod's answer to an enrolment or a rekey
        // can have given it: the device has moved on; its row follows.
        Some((mut device, true)) if signed_with == state.keys.current().id() => {
            sqlx::query("UPDATE devices SET key_id = $1 WHERE id = $2")
                .bind(&signed_with)
                .bind(&device.id)
                .execute(&state.db.write)
                .await?;
            device.key_id = Some(signed_with);
            Ok(device)
        }
        Some(_) => Err(refuse(SignatureError::Mismatch)),
    }
}

#[derive(sqlx::FromRow)]
struct VerifiedDevice {
    #[sqlx(flatten)]
    device: DeviceRow,
    fresh: bool,
}

/// The enrolled device a request names, with its nonce recorded (`fresh` is false for a nonce
/// seen before) and, for a fresh one, when it was last seen (at most every `$5` ms), in one
/// statement: `$1` device, `$2` nonce, `$3` when the nonce may be forgotten, `$4` now.
static USE_NONCE_PG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH d AS (SELECT {COLUMNS} FROM devices WHERE id = $1 AND revoked_at IS NULL),
         n AS (INSERT INTO nonces (device_id, nonce, expires_at) SELECT id, $2, $3 FROM d
               ON CONFLICT (device_id, nonce) DO NOTHING RETURNING 1),
         seen AS (UPDATE devices SET last_seen_at = $4
                  WHERE id = $1 AND EXISTS (SELECT 1 FROM n) AND (last_seen_at IS NULL OR last_seen_at < $4 - $5))
         SELECT {COLUMNS}, EXISTS (SELECT 1 FROM n) AS fresh FROM d"
    )
});

/// A device of the client's group.
pub async fn get_for_client(state: &AppState, client: &Client, device_id: &str) -> ApiResult<DeviceRow> {
    let row: Option<DeviceRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM devices WHERE id = $1 AND group_id = $2 AND revoked_at IS NULL"
    ))
    .bind(device_id)
    .bind(&client.group_id)
    .fetch_optional(&state.db.read)
    .await?;
    row.ok_or_else(|| ErrorCode::DeviceNotFound.into())
}

/// Revokes a device of the client's group: its signed requests fail from now on, it no longer
/// counts against its tenant's device quota, and commands cannot be addressed to it.
pub async fn revoke(state: &AppState, client: &Client, device_id: &str) -> ApiResult<()> {
    let now = crate::store::now_ms();
    let mut tx = state.db.begin_write().await?;
    let done = sqlx::query("UPDATE devices SET revoked_at = $1 WHERE id = $2 AND group_id = $3 AND revoked_at IS NULL")
        .bind(now)
        .bind(device_id)
        .bind(&client.group_id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ErrorCode::DeviceNotFound.into());
    }
    crate::store::audit::Record {
        tenant_id: &client.tenant_id,
        actor: &format!("client:{}", client.client_id),
        action: "device.revoke",
        target: Some(device_id),
        detail: None,
    }
    .write(&mut tx, now)
    .await?;
    tx.commit().await?;
    tracing::info!(device_id, client_id = %client.client_id, "device revoked");
    Ok(())
}

/// The devices of a user in the client's group.
pub async fn list_for_user(state: &AppState, client: &Client, user_id: &str) -> ApiResult<Vec<DeviceRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM devices WHERE group_id = $1 AND user_id = $2 AND revoked_at IS NULL ORDER BY enrolled_at"
    ))
    .bind(&client.group_id)
    .bind(user_id)
    .fetch_all(&state.db.read)
    .await?)
}

/// Re-reads a device (after `verify_request` touched it).
pub async fn reload(state: &AppState, id: &str) -> ApiResult<DeviceRow> {
    let row: DeviceRow = sqlx::query_as(&format!("SELECT {COLUMNS} FROM devices WHERE id = $1"))
        .bind(id)
        .fetch_one(&state.db.write)
        .await?;
    Ok(row)
}
