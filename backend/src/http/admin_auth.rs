//! Who calls the admin API: the operator (one token from the settings) or a tenant admin (a
//! token issued for one tenant, kept as a hash). Both come as `Authorization: Bearer`, a scheme
//! client credentials never use, so neither kind of secret works at the other's door.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hermod_shared::{sha256_hex, ErrorCode};
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::domain::error::{ApiError, ApiResult};
use crate::engine::AppState;
use crate::store::audit::KeyKind;

/// Longest bearer token looked at.
const TOKEN_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    Operator,
    Tenant { tenant_id: String, key_id: String },
}

impl Admin {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match self {
            Admin::Operator => "operator".to_owned(),
            Admin::Tenant { key_id, .. } => format!("admin:{key_id}"),
        }
    }

    pub fn require_operator(&self) -> ApiResult<()> {
        match self {
            Admin::Operator => Ok(()),
            Admin::Tenant { .. } => Err(ApiError::new(ErrorCode::Forbidden, "only the operator may do this")),
        }
    }

    /// A tenant admin sees only its own tenant: any other is "not found", so tenants cannot
    /// learn of each other.
    pub fn require_tenant(&self, tenant_id: &str) -> ApiResult<()> {
        match self {
            Admin::Operator => Ok(()),
            Admin::Tenant { tenant_id: own, .. } if own == tenant_id => Ok(()),
            Admin::Tenant { .. } => Err(ErrorCode::NotFound.into()),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= TOKEN_MAX).then_some(token)
}

fn equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn refused() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "an admin token is needed: Authorization: Bearer with the operator key or a tenant admin token",
    )
    .with_headers(vec![(
        "www-authenticate".into(),
        "Bearer realm=\"hermod-admin\"".into(),
    )])
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let admin = authenticate(parts, state).await?;
        let decision = state.auth_failures.take_admin_call(
            &admin.actor(),
            state.settings.admin.rate_limit,
            crate::store::now_ms(),
        );
        if !decision.allowed {
            return Err(
                ApiError::new(ErrorCode::RateLimited, "too many admin requests with this token")
                    .with_headers(decision.headers(1)),
            );
        }
        Ok(admin)
    }
}

/// The caller behind the bearer token, or a 401.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Admin, ApiError> {
    let token = bearer(parts).ok_or_else(refused)?;
    let presented = sha256_hex(token.as_bytes());
    if let Some(operator) = &state.settings.admin.operator_key {
        if equal(&presented, &sha256_hex(operator.expose().as_bytes())) {
            return Ok(Admin::Operator);
        }
    }
    let key_id = token.split_once('.').map_or("", |(id, _)| id);
    let row = sqlx::query("SELECT tenant_id, key_hash FROM admin_keys WHERE id = $1 AND revoked_at IS NULL")
        .bind(key_id)
        .fetch_optional(&state.db.read)
        .await?;
    let stored: String = match &row {
        Some(r) => r.try_get("key_hash")?,
        None => "0".repeat(64),
    };
    match row {
        Some(r) if equal(&presented, &stored) => {
            let tenant_id: String = r.try_get("tenant_id")?;
            let admin = Admin::Tenant {
                tenant_id: tenant_id.clone(),
                key_id: key_id.to_owned(),
            };
            state.key_use.note(&state.db, KeyKind::Admin, &tenant_id, key_id, || {
                (admin.actor(), format!("{} {}", parts.method, parts.uri.path()))
            });
            Ok(admin)
        }
        _ => Err(refused()),
    }
}
