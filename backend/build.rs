//! Takes Swagger UI's files for the `/docs` page from `node_modules/swagger-ui-dist` (pinned in
//! the repository's `package.json`, installed by `npm ci`) into `OUT_DIR`, where
//! `src/http/docs.rs` embeds them, and sets `cfg(hermod_docs_assets)`. Without them (a plain
//! `cargo build` with no `npm ci` before it) the build still succeeds and `/docs` says how to get
//! the page. Nothing is ever downloaded here.

use std::path::{Path, PathBuf};

/// The files the page needs, as `swagger-ui-dist` ships them.
const ASSETS: [&str; 2] = ["swagger-ui-bundle.js", "swagger-ui.css"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(hermod_docs_assets)");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let node_modules = manifest.join("../node_modules");
    let dist = node_modules.join("swagger-ui-dist");
    if ASSETS.iter().all(|name| dist.join(name).is_file()) {
        for name in ASSETS {
            let from = dist.join(name);
            watch(&from);
            std::fs::copy(&from, out.join(name)).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        }
        watch(&dist.join("package.json"));
        println!("cargo::rustc-cfg=hermod_docs_assets");
        return;
    }
    // Watch only paths that exist: Cargo reruns a build script on every build while a watched
    // path is missing, and every rerun recompiles the crate. `node_modules` as a whole (a
    // directory is scanned for any change) catches a later `npm ci`; with no `node_modules` at
    // all, the workspace's npm manifests are what is left to watch.
    if node_modules.is_dir() {
        watch(&node_modules);
    } else {
        watch(&manifest.join("../package.json"));
        watch(&manifest.join("../package-lock.json"));
    }
    println!(
        "cargo::warning=swagger-ui-dist is not installed: /docs serves a placeholder. Run `npm ci` in the \
         repository root and build again{}",
        if node_modules.is_dir() {
            ""
        } else {
            " (after `touch backend/build.rs`)"
        }
    );
}

fn watch(path: &Path) {
    println!("cargo::rerun-if-changed={}", path.display());
}
