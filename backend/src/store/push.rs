//! Push registrations: how to wake each device that registered one.

use sqlx::Row;

use super::Db;

/// A registration, as sending needs it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub device_id: String,
    pub transport: String,
    pub endpoint: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
}

/// Stores a device's registration, replacing its earlier one.
pub async fn put(db: &Db, r: &Registration, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO push_registrations (device_id, transport, endpoint, p256dh, auth, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (device_id) DO UPDATE SET transport = $2, endpoint = $3, p256dh = $4, auth = $5, created_at = $6",
    )
    .bind(&r.device_id)
    .bind(&r.transport)
    .bind(&r.endpoint)
    .bind(&r.p256dh)
    .bind(&r.auth)
    .bind(now)
    .execute(&db.write)
    .await?;
    Ok(())
}

/// Removes a device's registration; with `endpoint`, only if it is still that one (a push
/// service said it is gone, and the device may have registered anew meanwhile).
pub async fn remove(db: &Db, device_id: &str, endpoint: Option<&str>) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM push_registrations WHERE device_id = $1 AND ($2 IS NULL OR endpoint = $2)")
        .bind(device_id)
        .bind(endpoint)
        .execute(&db.write)
        .await?;
    Ok(done.rows_affected() > 0)
}

fn row(r: &sqlx::any::AnyRow) -> sqlx::Result<Registration> {
    Ok(Registration {
        device_id: r.try_get(0)?,
        transport: r.try_get(1)?,
        endpoint: r.try_get(2)?,
        p256dh: r.try_get(3)?,
        auth: r.try_get(4)?,
    })
}

const COLUMNS: &str = "r.device_id, r.transport, r.endpoint, r.p256dh, r.auth";

/// A device's registration.
pub async fn get(db: &Db, device_id: &str) -> sqlx::Result<Option<Registration>> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM push_registrations r WHERE r.device_id = $1"
    ))
    .bind(device_id)
    .fetch_optional(&db.read)
    .await?
    .as_ref()
    .map(row)
    .transpose()
}

/// Which of these devices registered for push (the listings show it).
pub async fn registered(db: &Db, device_ids: &[&str]) -> sqlx::Result<std::collections::HashSet<String>> {
    if device_ids.is_empty() {
        return Ok(Default::default());
    }
    let placeholders: Vec<String> = (1..=device_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT device_id FROM push_registrations WHERE device_id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_scalar::<_, String>(&sql);
    for id in device_ids {
        query = query.bind(*id);
    }
    Ok(query.fetch_all(&db.read).await?.into_iter().collect())
}

/// The registrations of the devices a command's mailbox event reaches: the one device it names,
/// or every active device of its user.
pub async fn for_recipients(
    db: &Db,
    group_id: &str,
    user_id: &str,
    device_id: Option<&str>,
) -> sqlx::Result<Vec<Registration>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM push_registrations r JOIN devices d ON d.id = r.device_id
         WHERE d.revoked_at IS NULL AND d.group_id = $1 AND d.user_id = $2 AND ($3 IS NULL OR d.id = $3)"
    ))
    .bind(group_id)
    .bind(user_id)
    .bind(device_id)
    .fetch_all(&db.read)
    .await?;
    rows.iter().map(row).collect()
}
