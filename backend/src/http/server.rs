//! The application: settings in, a bound listener and its background tasks out. `main` only
//! starts it; tests start it on port 0 with a database of their own.

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hermod_shared::signing::HEADER_SERVER_TIME;
use hermod_shared::ErrorCode;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::domain::error::ApiError;
use crate::engine::auth_failures::Kind;
use crate::engine::callbacks::{self, Outbox};
use crate::engine::commands;
use crate::engine::egress::Egress;
use crate::engine::metrics::Metrics;
use crate::engine::wake::Wakeups;
use crate::engine::AppState;
use crate::http::{admin_api, callbacks_api, client_api, device_api, openapi, pages};
use crate::store::clients;
use crate::store::{now_ms, Db};

pub struct Application {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    outbox: Outbox,
    push_http: reqwest::Client,
}

impl Application {
    /// Connects and migrates the database, synchronises the config's clients, binds the port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let tls = crate::http::tls::server_config(&settings.server.ssl)?;
        let db = Db::connect_with(
            &settings.database.url,
            &crate::store::PoolLimits::from_settings(&settings.database),
        )
        .await?;
        db.migrate().await?;
        clients::sync_config_clients(&db, &settings.allowed_clients).await?;
        let keys = crate::engine::keys::load(&settings, &db).await?;
        let egress = Egress::from_settings(&settings.egress)?;
        let trusted = callbacks::trusted_certificates(&settings.cacerts)?;
        let http = callbacks::http_client(&settings.callbacks, &trusted, &egress)?;
        let http_config =
            callbacks::http_client(&settings.callbacks, &trusted, &Egress::unrestricted(&settings.egress)?)?;
        let listener = TcpListener::bind(SocketAddr::new(settings.server.address, settings.server.port)).await?;
        let port = listener.local_addr()?.port();
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}:{port}/ms", settings.server.address)
            })
            .trim_end_matches('/')
            .to_owned();
        let state = AppState {
            db: db.clone(),
            settings: Arc::new(settings.clone()),
            keys: Arc::new(keys),
            public_url: Arc::new(public_url),
            wakeups: Arc::new(Wakeups::default()),
            outbox: Arc::new(Notify::new()),
            handoff: Arc::default(),
            metrics: Arc::new(Metrics::default()),
            key_use: Arc::default(),
            egress: egress.clone(),
            long_polls: crate::engine::longpoll::LongPolls::new(settings.long_polls.clone()),
            auth_failures: Arc::default(),
            push: Arc::new(crate::engine::push::Pusher::new(
                crate::engine::push::Vapid::from_settings(&settings.push.webpush)?,
            )),
        };
        let push_http = egress
            .client_builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("Hermod/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let outbox = Outbox::new(&state, http, http_config);
        match db.dialect {
            crate::store::Dialect::Sqlite => outbox.release_stale_claims().await?,
            crate::store::Dialect::Postgres => crate::engine::replicas::connect(&db, &state.wakeups).await?,
        }
        Ok(Self {
            listener,
            tls,
            state,
            outbox,
            push_http,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; the sweeper and the callback worker run alongside.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(port = self.port(), public_url = %self.state.public_url, "Hermod listening");
        let sweeper = tokio::spawn(sweep_forever(self.state.clone()));
        let retention = tokio::spawn(crate::engine::retention::run_forever(self.state.clone()));
        let auth_summary = tokio::spawn(crate::engine::auth_failures::flush_forever(self.state.clone()));
        let outbox = tokio::spawn(self.outbox.run());
        let push = tokio::spawn(crate::engine::push::run(self.state.clone(), self.push_http));
        let limits = crate::http::listener::ConnectionLimits::from_settings(&self.state.settings.server);
        let metrics = Arc::clone(&self.state.metrics);
        let long_polls = Arc::clone(&self.state.long_polls);
        let shutdown = async move {
            shutdown.await;
            // Long-polls answer now, so their connections drain within the grace.
            long_polls.stop();
        };
        // One router shared by every connection (cloning it is cloning an `Arc`).
        let router = router(self.state);
        let result = crate::http::listener::serve(self.listener, self.tls, router, limits, metrics, shutdown).await;
        sweeper.abort();
        retention.abort();
        auth_summary.abort();
        outbox.abort();
        push.abort();
        Ok(result?)
    }
}

async fn sweep_forever(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_millis(state.settings.commands.sweep_interval_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = commands::sweep(&state).await {
            tracing::error!(error = %e, "sweep failed");
        }
    }
}

fn api() -> Router<AppState> {
    Router::new()
        .route(
            "/command/{name}",
            post(client_api::create)
                .get(client_api::read)
                .delete(client_api::cancel),
        )
        .route("/command/{name}/qr", get(client_api::qr))
        .route(
            "/command/devices/{device_id}",
            get(client_api::device).delete(client_api::revoke_device),
        )
        .route("/command/users/{user_id}/devices", get(client_api::user_devices))
        .route("/command/{name}/callbacks", get(callbacks_api::for_command))
        .route("/command/callbacks", get(callbacks_api::for_client))
        .route("/command/callbacks/recover", post(callbacks_api::recover))
        .route(
            "/command/callbacks/{event_id}/redeliver",
            post(callbacks_api::redeliver),
        )
        .route("/ms/enrol", post(device_api::enrol))
        .route("/ms/mailbox", get(device_api::mailbox))
        .route("/ms/commands/{id}/response", post(device_api::respond))
        .route("/ms/lifesign", post(device_api::lifesign))
        .route("/ms/claim", post(device_api::claim))
        .route(
            "/ms/push",
            get(device_api::push_status)
                .put(device_api::push_register)
                .delete(device_api::push_remove),
        )
        .route("/ms/rekey", post(device_api::rekey))
        .route("/ms/time", get(device_api::time))
}

/// The admin API (hosted tenants); served at the root only, not under the seeds' prefix.
fn admin() -> Router<AppState> {
    use axum::routing::{delete, put};
    let t = "/admin/tenants/{tenant}";
    Router::new()
        .route(
            "/admin/tenants",
            post(admin_api::create_tenant).get(admin_api::list_tenants),
        )
        .route(t, get(admin_api::get_tenant))
        .route(&format!("{t}/quotas"), put(admin_api::set_quotas))
        .route(
            &format!("{t}/admin-keys"),
            post(admin_api::issue_admin_key).get(admin_api::list_admin_keys),
        )
        .route(
            &format!("{t}/admin-keys/{{key_id}}"),
            delete(admin_api::revoke_admin_key),
        )
        .route(
            &format!("{t}/groups"),
            post(admin_api::create_group).get(admin_api::list_groups),
        )
        .route(
            &format!("{t}/clients"),
            post(admin_api::create_client).get(admin_api::list_clients),
        )
        .route(
            &format!("{t}/clients/{{client}}"),
            get(admin_api::get_client)
                .patch(admin_api::update_client)
                .delete(admin_api::disable_client),
        )
        .route(
            &format!("{t}/clients/{{client}}/keys"),
            post(admin_api::issue_client_key).get(admin_api::list_client_keys),
        )
        .route(
            &format!("{t}/clients/{{client}}/keys/{{key_id}}"),
            delete(admin_api::revoke_client_key),
        )
        .route(&format!("{t}/audit"), get(admin_api::audit_log))
}

pub fn router(state: AppState) -> Router {
    let behind_edge =
        || axum::middleware::from_fn_with_state(state.clone(), crate::http::edge_channel::require_assertion);
    let mut api = api();
    if state.settings.generate_client_page {
        api = api.route("/generate-client", get(pages::generate_client));
    }
    if state.settings.demo_page_client.is_some() {
        api = api
            .route("/demo", get(crate::http::demo::page))
            .route("/demo/demo.js", get(crate::http::demo::script))
            .route("/demo/enrol", post(crate::http::demo::enrol))
            .route("/demo/login", post(crate::http::demo::login))
            .route("/demo/commands/{id}", get(crate::http::demo::command))
            .route("/demo/commands/{id}/qr", get(crate::http::demo::qr));
    }
    let api = api.layer(behind_edge());
    let admin = admin().layer(behind_edge());
    let internal = Router::new()
        .route(
            "/edge/clients/{client_id}",
            get(crate::http::edge_channel::client_for_edge),
        )
        .route(
            "/edge/mailboxes/{device_id}",
            get(crate::http::edge_channel::mailbox_for_edge),
        )
        .layer(behind_edge());
    let routes = Router::new()
        .merge(api.clone())
        .merge(internal)
        .merge(admin)
        .nest("/hermod/rest", api)
        .route("/openapi.json", get(openapi::serve))
        .route("/docs", get(crate::http::docs::page))
        .route("/docs/{file}", get(crate::http::docs::asset))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::from(ErrorCode::NotFound) })
        .method_not_allowed_fallback(|| async { ApiError::from(ErrorCode::MethodNotAllowed) })
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            Duration::from_secs_f64(state.settings.server.body_read_timeout),
        ))
        .layer(axum::middleware::map_response(stamp_server_time))
        .layer(axum::middleware::from_fn_with_state(state.clone(), retry_safe_once))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_request))
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    // Outside the whole router: `Router::layer` wraps each route, inside the part that lists
    // a route's methods in `Allow`.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(options_and_allow))
        .layer(axum::middleware::from_fn(problem_for_rejections))
}

async fn count_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    state.metrics.http_requests.inc();
    // Who a refused request claimed to be, read before the request moves on (identifiers
    // only: a client id, a device id, an admin key's id; never a secret).
    let peer = crate::http::listener::peer(&request).map(|a| a.ip());
    let path = request.uri().path();
    let claimed = if path.starts_with("/admin") {
        let key_id = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .and_then(|(_, token)| token.trim().split_once('.'))
            .map(|(id, _)| id.to_owned());
        (Kind::Admin, key_id.unwrap_or_else(|| "operator-or-none".into()))
    } else if path.starts_with("/ms/") || path.starts_with("/hermod/rest/ms/") {
        let device = request
            .headers()
            .get(hermod_shared::signing::HEADER_DEVICE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        (Kind::Device, device)
    } else {
        let client = crate::http::extract::credential(request.headers()).map_or_else(|| "none".into(), |c| c.client_id);
        (Kind::Client, client)
    };
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        state.metrics.http_unavailable.inc();
    }
    if response.status() == axum::http::StatusCode::UNAUTHORIZED {
        let (kind, who) = claimed;
        match kind {
            Kind::Client => state.metrics.auth_failures_client.inc(),
            Kind::Device => state.metrics.auth_failures_device.inc(),
            Kind::Admin => state.metrics.auth_failures_admin.inc(),
        };
        state.auth_failures.note(kind, &who, peer);
    }
    response
}

/// A request that is safe to repeat (GET, HEAD: no body, no change) and failed because its
/// database connection died under it is tried once more, on a fresh connection from the pool,
/// before the client hears of it. Writes are not repeated: the client decides (Idempotency-Key).
/// Device requests are not repeated either: each carries a single-use nonce the first try may
/// have spent; the device signs a new one.
async fn retry_safe_once(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let signed = request.uri().path().contains("/ms/");
    if !matches!(*request.method(), Method::GET | Method::HEAD) || signed {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let again = {
        let mut copy = axum::extract::Request::new(axum::body::Body::empty());
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.version_mut() = parts.version;
        *copy.headers_mut() = parts.headers.clone();
        // The route's path parameters, the peer address, …: the route runs again as it ran.
        *copy.extensions_mut() = parts.extensions.clone();
        copy
    };
    let response = next.clone().run(axum::extract::Request::from_parts(parts, body)).await;
    if response
        .extensions()
        .get::<crate::http::error::ConnectionLost>()
        .is_none()
    {
        return response;
    }
    tracing::info!(uri = %again.uri(), "a read lost its database connection: tried once more");
    state.metrics.reads_retried.inc();
    next.run(again).await
}

/// Readiness: 200 when the database answers within a second, else 503 (a load balancer stops
/// sending traffic here meanwhile). `/health` is liveness: the process answers.
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    use axum::response::IntoResponse;
    let check = async {
        match &state.db.sqlite_read {
            Some(readers) => readers
                .run(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
                .await
                .is_ok(),
            None => sqlx::query("SELECT 1").execute(&state.db.read).await.is_ok(),
        }
    };
    match tokio::time::timeout(Duration::from_secs(1), check).await {
        Ok(true) => "ready".into_response(),
        _ => crate::store::unavailable().into_response(),
    }
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl axum::response::IntoResponse {
    state.metrics.long_polls_open.set(state.long_polls.open() as i64);
    (
        [(axum::http::header::CONTENT_TYPE, crate::engine::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
}

/// An extractor's own refusal (a path parameter that is not UTF-8, a query that does not
/// parse) is plain text; every error Hermod answers is problem+json with a stable code.
async fn problem_for_rejections(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::{header::CONTENT_TYPE, StatusCode};
    use axum::response::IntoResponse;
    let response = next.run(request).await;
    let plain = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !plain || !response.status().is_client_error() {
        return response;
    }
    let code = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        _ => ErrorCode::InvalidRequest,
    };
    let mut problem = ApiError::new(code, "the request's path or query cannot be read").into_response();
    if let Some(time) = response.headers().get(HEADER_SERVER_TIME) {
        problem.headers_mut().insert(HEADER_SERVER_TIME, time.clone());
    }
    problem
}

/// The methods `/command/{name}` takes for this `name`: creating is `POST /command/{type}`,
/// reading and cancelling `GET`/`DELETE /command/{id}`; one route serves both, so the router's
/// own list would name methods that this path refuses.
fn command_route_methods(path: &str) -> Option<&'static str> {
    let path = path.strip_prefix("/hermod/rest").unwrap_or(path);
    let name = path.strip_prefix("/command/").filter(|n| !n.contains('/'))?;
    if hermod_shared::CommandId::parse(name).is_some() {
        Some("GET,HEAD,DELETE")
    } else if hermod_shared::CommandType::parse(name).is_ok() {
        Some("POST")
    } else {
        None
    }
}

/// `OPTIONS` answers 204 with the methods the path takes; a 405 names the same methods in
/// `Allow` (RFC 9110 §15.5.6), never one the path refuses.
async fn options_and_allow(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::{header::ALLOW, Method, StatusCode};
    use axum::response::IntoResponse;
    let options = request.method() == Method::OPTIONS;
    let exact = command_route_methods(request.uri().path());
    let mut response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let listed = response
        .headers()
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(methods) = exact.map(str::to_owned).or(listed) else {
        return response;
    };
    let allow = HeaderValue::try_from(format!("{methods},OPTIONS")).expect("method names are header-safe");
    if options {
        response = StatusCode::NO_CONTENT.into_response();
    }
    response.headers_mut().insert(ALLOW, allow);
    response
}

async fn stamp_server_time(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(HEADER_SERVER_TIME, HeaderValue::from(now_ms()));
    response
}
