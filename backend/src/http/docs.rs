//! `/docs`: the API reference page, Swagger UI reading `/openapi.json`. Its files come from the
//! npm package `swagger-ui-dist` (pinned in `package.json`), which `build.rs` copies in at build
//! time and this module embeds: the page loads nothing but Hermod's own URLs, so it works offline
//! and under a strict Content-Security-Policy. A build made without `npm ci` serves a page saying
//! so instead, with a link to the document itself.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hermod_shared::ErrorCode;

use crate::domain::error::ApiError;

/// Only Hermod's own scripts run: the page's starter is a file (`init.js`), not inline. Swagger
/// UI draws its icons as `data:` images and sets `style` attributes, hence those two sources.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'";

/// The files change only with a new build of Hermod; the page itself is revalidated each time.
const ASSET_CACHE: &str = "public, max-age=86400";

#[cfg(hermod_docs_assets)]
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// Starts Swagger UI on the served document. `validatorUrl: null`: no badge fetched from the
/// public validator, whatever the layout.
#[cfg(hermod_docs_assets)]
const INIT_JS: &str = "\"use strict\";\n\
window.ui = SwaggerUIBundle({ url: \"/openapi.json\", dom_id: \"#swagger-ui\", validatorUrl: null, deepLinking: true });\n";

#[cfg(hermod_docs_assets)]
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Hermod API reference</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"#;

#[cfg(not(hermod_docs_assets))]
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Hermod API reference</title>
<link rel="icon" href="data:,">
</head>
<body>
<h1>Hermod API reference</h1>
<p>This build of Hermod has no reference page: its assets (the npm package
<code>swagger-ui-dist</code>) were not built in. Run <code>npm ci</code> in the repository root
before building Hermod to have it here.</p>
<p>The API is described by its OpenAPI document: <a href="/openapi.json">/openapi.json</a>.</p>
</body>
</html>
"#;

/// `GET /docs`: the page.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /docs/{file}`: Swagger UI's script and stylesheet, and the page's starter; 404 for any
/// other name (and for all three in a build without the assets).
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some((content_type, body)) = lookup(&file) else {
        return ApiError::from(ErrorCode::NotFound).into_response();
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, ASSET_CACHE),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(hermod_docs_assets)]
fn lookup(file: &str) -> Option<(&'static str, &'static [u8])> {
    match file {
        "swagger-ui-bundle.js" => Some((
            JAVASCRIPT,
            include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui-bundle.js")),
        )),
        "swagger-ui.css" => Some((
            "text/css; charset=utf-8",
            include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui.css")),
        )),
        "init.js" => Some((JAVASCRIPT, INIT_JS.as_bytes())),
        _ => None,
    }
}

#[cfg(not(hermod_docs_assets))]
fn lookup(_file: &str) -> Option<(&'static str, &'static [u8])> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn the_page_names_only_hermods_own_urls_under_a_strict_policy() {
        let response = page().await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert!(!PAGE.contains("://"), "no absolute URL on the page");
        assert!(!PAGE.contains("<script>"), "no inline script");
        let needed = if cfg!(hermod_docs_assets) {
            "/docs/init.js"
        } else {
            "/openapi.json"
        };
        assert!(PAGE.contains(needed), "the page names {needed}");
    }

    #[tokio::test]
    async fn files_are_served_with_their_types_and_unknown_names_are_404() {
        assert_eq!(asset(Path("nope.js".into())).await.status(), StatusCode::NOT_FOUND);
        if cfg!(hermod_docs_assets) {
            for (file, kind) in [
                ("swagger-ui-bundle.js", "text/javascript"),
                ("swagger-ui.css", "text/css"),
                ("init.js", "text/javascript"),
            ] {
                let response = asset(Path(file.into())).await;
                assert_eq!(response.status(), StatusCode::OK, "{file}");
                let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
                assert!(content_type.starts_with(kind), "{file}: {content_type}");
                assert_eq!(response.headers()[header::CACHE_CONTROL], ASSET_CACHE);
            }
        }
    }
}
