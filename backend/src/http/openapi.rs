//! The OpenAPI 3.1 document, generated from the handlers and wire types, served at
//! `/openapi.json`. It is the source of truth for the wire format.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin_api, callbacks_api, client_api, device_api, pages};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "base64(clientId:key)",
            ))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("clientId:key"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator token (admin.operator-key) or a tenant admin token ({id}.{secret})",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "device_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Hermod-Signature",
                "base64 HMAC-SHA256 with the device secret over \
                 HERMOD-DEVICE-V1\\n{device}\\n{METHOD}\\n{path?query}\\n{timestamp}\\n{nonce}\\n{hex sha256(body)}; \
                 sent with Hermod-Device, Hermod-Timestamp (unix seconds, within 300 s of the server) and \
                 Hermod-Nonce (16-64 of [A-Za-z0-9_-], never reused)",
            ))),
        );
    }
}

/// The answers every operation can give for the same reasons, added where a handler did not
/// document them: 400 where it reads a body or parameters, 401 by the kind of credential it
/// takes, 413 and 415 where it reads a JSON body, 429 where a rate applies, 503 when the
/// database is unreachable.
struct StandardAnswers;

fn problem(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{Content, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .build()
        .into()
}

impl Modify for StandardAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
            ];
            for op in operations.into_iter().flatten() {
                let schemes: Vec<String> = op
                    .security
                    .iter()
                    .flatten()
                    .filter_map(|r| serde_json::to_value(r).ok())
                    .filter_map(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
                    .flatten()
                    .collect();
                let has_body = op.request_body.is_some();
                let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let answers = &mut op.responses.responses;
                // Added where missing, and where a handler listed the status without saying why.
                let mut add = |status: &str, description: &str| {
                    let answer = answers.entry(status.to_owned()).or_insert_with(|| problem(description));
                    if let utoipa::openapi::RefOr::T(r) = answer {
                        if r.description.is_empty() {
                            r.description = description.to_owned();
                        }
                    }
                };
                if schemes.iter().any(|s| s == "admin_token") {
                    add(
                        "401",
                        "Missing or invalid admin token (`invalid_credentials`, with WWW-Authenticate: Bearer)",
                    );
                    add(
                        "429",
                        "More admin requests a second with this token than `admin.rate-limit` (Retry-After)",
                    );
                } else if schemes.iter().any(|s| s == "api_key" || s == "basic") {
                    add(
                        "401",
                        "Missing or invalid client credentials (`invalid_credentials`), or a disabled client",
                    );
                } else if schemes.iter().any(|s| s == "device_signature") {
                    add(
                        "401",
                        "The device request's signature is missing or wrong (`invalid_signature`), its timestamp \
                         outside the signature window (`stale_request`) or its nonce used before (`replayed_request`)",
                    );
                }
                if has_body || has_params {
                    add(
                        "400",
                        "Malformed JSON or an invalid value in the body, path or query (`malformed_json`, \
                         `invalid_request`, …; the detail names what is wrong)",
                    );
                }
                if has_body {
                    add("413", "The body is larger than `max-body-bytes` (`body_too_large`)");
                    add(
                        "415",
                        "The body is not `Content-Type: application/json` (`unsupported_media_type`)",
                    );
                }
                if path != "/ms/time" && path != "/openapi.json" {
                    add(
                        "503",
                        "The database is unreachable or the server is at a limit (`unavailable`, Retry-After)",
                    );
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hermod",
        description = "A command broker between server-side identity systems and authenticator apps. \
            Every path is also served under /hermod/rest. Errors are application/problem+json with a stable `code`. \
            Request bodies are limited to 64 KiB (configurable); long-polls wait at most 60 s (configurable). \
            Every response carries the server's time in unix milliseconds as Hermod-Server-Time."
    ),
    paths(
        client_api::create, client_api::read, client_api::cancel, client_api::qr, client_api::device, client_api::revoke_device, client_api::user_devices,
        device_api::enrol, device_api::mailbox, device_api::respond, device_api::claim, device_api::push_status, device_api::push_register, device_api::push_remove, device_api::lifesign, device_api::rekey, device_api::time,
        callbacks_api::for_command, callbacks_api::for_client, callbacks_api::redeliver, callbacks_api::recover,
        pages::generate_client,
        admin_api::create_tenant, admin_api::list_tenants, admin_api::get_tenant, admin_api::set_quotas,
        admin_api::issue_admin_key, admin_api::list_admin_keys, admin_api::revoke_admin_key,
        admin_api::create_group, admin_api::list_groups,
        admin_api::create_client, admin_api::list_clients, admin_api::get_client, admin_api::update_client,
        admin_api::disable_client, admin_api::issue_client_key, admin_api::list_client_keys,
        admin_api::revoke_client_key, admin_api::audit_log,
    ),
    components(schemas(hermod_shared::wire::CallbackEvent)),
    modifiers(&Security, &StandardAnswers),
    tags(
        (name = "commands", description = "For server systems (client API key)"),
        (name = "devices", description = "Devices of the client's group"),
        (name = "callbacks", description = "Callback deliveries of the client, with every attempt"),
        (name = "device", description = "For authenticator apps (signed requests)"),
        (name = "admin", description = "Hosted tenants: the operator token or a tenant admin token as Authorization: Bearer"),
    )
)]
pub struct ApiDoc;

/// The document, its description stating this server's limits as configured.
pub async fn serve(
    axum::extract::State(state): axum::extract::State<crate::engine::AppState>,
) -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    let s = &state.settings;
    let limits = format!(
        "\n\nLimits of this server (beyond each, the answer named): request body {} bytes (413); \
         headers within {} s and body within {} s (connection closed / 400); {} connections, {} per address \
         (closed at once); long-poll `wait` at most {} s (400); long-polls {} per device (the oldest is \
         answered at once), {} per client (429 + Retry-After), {} in all (503 + Retry-After); admin API {} \
         requests/s per token (429 + RateLimit-*); database unreachable: 503 + Retry-After: {} within {} s; \
         device signature window {} s (401); an enrolment link lives at most {} s (400); callbacks {} s a \
         request, {} in flight, {} per receiver, {} per tenant, retried after {:?} s.",
        s.max_body_bytes,
        s.server.header_read_timeout,
        s.server.body_read_timeout,
        s.server.max_connections,
        s.server.max_connections_per_ip,
        s.commands.max_wait,
        s.long_polls.per_device,
        s.long_polls.per_client,
        s.long_polls.max,
        s.admin.rate_limit,
        crate::store::UNAVAILABLE_RETRY_AFTER_SECS,
        s.database.acquire_timeout,
        s.devices.signature_window,
        crate::domain::command::MAX_ENROLMENT_TIMEOUT,
        s.callbacks.request_timeout,
        s.callbacks.concurrency,
        s.callbacks.per_receiver_concurrency,
        s.callbacks.per_tenant_concurrency,
        s.callbacks.retry_schedule,
    );
    let description = doc.info.description.take().unwrap_or_default();
    doc.info.description = Some(description + &limits);
    Json(doc)
}
