//! Bodies of the admin API (`/admin`): tenants, their groups, clients and keys, quotas and the
//! audit log. Secrets (admin tokens, client keys, callback signing secrets) appear only in the
//! answer that creates them, never again. Bodies refuse unknown fields.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Longest tenant, group or client name.
pub const NAME_MAX: usize = 63;

/// At most this many keys of one client are active at once: the old and the new during a
/// rotation.
pub const MAX_ACTIVE_CLIENT_KEYS: usize = 2;

/// Tenant, group and client names: 1 to 63 of `a-z`, `0-9`, `-`, `_`, starting with a letter
/// or digit. They appear in client ids (`{tenant}.{client}`) and in paths, so nothing else.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= NAME_MAX
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The client id of a hosted client: unique across tenants, and telling nothing a name would not.
pub fn hosted_client_id(tenant: &str, client: &str) -> String {
    format!("{tenant}.{client}")
}

/// Absent stays `None`; `null` becomes `Some(None)` (clear it); a value `Some(Some(v))`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Per-tenant limits; absent or `null` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Commands the tenant's clients may create per second, together (a one-second window).
    #[serde(default)]
    pub max_commands_per_second: Option<u32>,
    /// Enrolled, unrevoked devices across the tenant's groups.
    #[serde(default)]
    pub max_devices: Option<u32>,
}

/// `POST /admin/tenants` (operator).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 1-63 of `a-z 0-9 - _`; part of every client id of the tenant.
    pub id: String,
    /// A display name; the id when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub quotas: Quotas,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub quotas: Quotas,
    /// Enrolled, unrevoked devices now.
    pub devices: u64,
}

/// A tenant admin token: `{id}.{secret}`, sent as `Authorization: Bearer {token}`. Shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct IssuedAdminKey {
    pub id: String,
    pub token: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TenantCreated {
    pub tenant: TenantView,
    /// The tenant's first admin token (shown only here).
    pub admin_key: IssuedAdminKey,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AdminKeyView {
    pub id: String,
    pub created_by: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// `POST /admin/tenants/{tenant}/groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GroupView {
    pub name: String,
    pub created_at: String,
}

/// `POST /admin/tenants/{tenant}/clients`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// 1-63 of `a-z 0-9 - _`; the client id is `{tenant}.{name}`.
    pub name: String,
    /// The group whose devices the client shares.
    pub group: String,
    /// Where callbacks go (`http` or `https`).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// `user:password` sent as HTTP basic auth with each callback.
    #[serde(default)]
    pub callback_basic_auth: Option<String>,
}

/// `PATCH /admin/tenants/{tenant}/clients/{client}`: absent fields stay, `null` clears.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateClient {
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub callback_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub callback_basic_auth: Option<Option<String>>,
    /// `true` turns callbacks back on after Hermod disabled them (a 410 Gone, or failures for a
    /// whole retry window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClientView {
    /// What the client authenticates as: `base64(client_id:key)`.
    pub client_id: String,
    pub name: String,
    pub group: String,
    /// `config` (from the on-premises config file) or `api`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Whether callbacks carry basic auth (the password is never shown).
    pub callback_basic_auth: bool,
    /// Set when the receiver answered 410 Gone and callbacks stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_disabled_at: Option<String>,
    pub active_keys: u32,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    /// What is unsafe in this client's set-up, e.g. basic auth sent over plain `http://`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The warning for basic auth over plain HTTP (the password would cross the network readable).
pub const WARNING_BASIC_AUTH_OVER_HTTP: &str =
    "callback_basic_auth is sent over plain http://: anyone on the path can read the password; use https://";

/// The warnings a client's callback set-up deserves.
pub fn callback_warnings(callback_url: Option<&str>, basic_auth: bool) -> Vec<String> {
    let plain = callback_url.is_some_and(|u| u.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")));
    if plain && basic_auth {
        vec![WARNING_BASIC_AUTH_OVER_HTTP.to_owned()]
    } else {
        Vec::new()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClientCreated {
    pub client: ClientView,
    /// The `whsec_` secret callbacks are signed with (Standard Webhooks). Shown only here.
    pub callback_signing_secret: String,
}

/// A client API key, shown once: send `credential` as `X-API-Key` (it is
/// `base64(client_id:key)`), or `client_id:key` as HTTP basic auth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct IssuedClientKey {
    pub id: String,
    pub client_id: String,
    /// 256 bits, base64url.
    pub key: String,
    pub credential: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClientKeyView {
    pub id: String,
    pub source: String,
    pub created_at: String,
    /// Recorded at most once a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    /// `operator`, `admin:{key id}`, `client:{client id}` or `device:{device id}`.
    pub actor: String,
    /// e.g. `tenant.create`, `client.key.issue`, `client.key.revoke`, `client.key.use`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub detail: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `after` for the next page.
    pub next_cursor: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_slugs() {
        for ok in ["acme", "a", "idm-1", "gw_2", "0day", &"a".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Acme", "-x", "_x", "a.b", "a/b", "a b", "ä", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn patch_tells_absent_from_null() {
        let u: UpdateClient = serde_json::from_str(r#"{"callback_url": null}"#).unwrap();
        assert_eq!(u.callback_url, Some(None));
        assert_eq!(u.callback_basic_auth, None);
        let u: UpdateClient = serde_json::from_str(r#"{"callback_url": "https://x"}"#).unwrap();
        assert_eq!(u.callback_url, Some(Some("https://x".into())));
        assert!(serde_json::from_str::<UpdateClient>(r#"{"callback_urll": null}"#).is_err());
    }
}
