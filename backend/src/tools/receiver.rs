//! `hermod receiver`: a callback receiver for trying Hermod out. It prints every callback and,
//! given the client's signing secret, checks its Standard Webhooks signature.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hermod_shared::webhook::{self, WebhookSecret};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::store::now_ms;

async fn receive(State(secret): State<Arc<Option<WebhookSecret>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let verdict = match secret.as_ref() {
        None => "not checked (no --secret)".to_owned(),
        Some(s) => match webhook::verify(
            std::slice::from_ref(s),
            &h(webhook::HEADER_ID),
            &h(webhook::HEADER_TIMESTAMP),
            &h(webhook::HEADER_SIGNATURE),
            &body,
            now_ms() / 1000,
            webhook::TOLERANCE_SECS,
        ) {
            Ok(()) => "valid".to_owned(),
            Err(e) => format!("INVALID ({e})"),
        },
    };
    let basic = if headers.contains_key("authorization") {
        "with basic auth"
    } else {
        "without basic auth"
    };
    println!(
        "callback {} {basic}, signature {verdict}\n{}\n",
        h(webhook::HEADER_ID),
        String::from_utf8_lossy(&body)
    );
    StatusCode::NO_CONTENT
}

pub async fn run(address: SocketAddr, secret: Option<&str>) -> anyhow::Result<()> {
    let secret = match secret {
        None => None,
        Some(s) => Some(WebhookSecret::parse(s).ok_or_else(|| anyhow::anyhow!("--secret must be a whsec_ secret"))?),
    };
    let router = axum::Router::new()
        .route("/", axum::routing::post(receive))
        .route("/{*path}", axum::routing::post(receive))
        .with_state(Arc::new(secret));
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("receiving callbacks on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
