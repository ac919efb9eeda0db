//! Devices as stored.

use hermod_shared::wire::{rfc3339, DeviceView};
use hermod_shared::{DeviceId, UserId};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeviceRow {
    pub id: String,
    pub group_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub enrolled_at: i64,
    pub last_seen_at: Option<i64>,
    /// The server key the device's secret derives from; `None`: the legacy key.
    pub key_id: Option<String>,
}

pub const COLUMNS: &str = "id, group_id, user_id, name, enrolled_at, last_seen_at, key_id";

impl DeviceRow {
    /// The id of the key the device signs with.
    pub fn key_id(&self) -> &str {
        self.key_id.as_deref().unwrap_or(hermod_shared::keys::LEGACY_KEY_ID)
    }
}

impl DeviceRow {
    pub fn view(&self) -> DeviceView {
        DeviceView {
            device_id: DeviceId::parse(&self.id).expect("stored ids are valid"),
            user_id: UserId::parse(&self.user_id).expect("stored user ids are valid"),
            name: self.name.clone(),
            enrolled_at: rfc3339(self.enrolled_at),
            last_seen_at: self.last_seen_at.map(rfc3339),
            push: None,
        }
    }
}
