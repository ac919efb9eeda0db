#!/usr/bin/env bash
# Runs every test of Hermod on a fresh machine or an old one. It installs what the tests need,
# skipping whatever is already there, then checks formatting and lints, builds the protocol
# crate and the edge for wasm32, and runs every unit and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm32 target"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "shared and edge build for wasm32-unknown-unknown"
cargo build -p hermod-shared -p hermod-edge --target wasm32-unknown-unknown

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
