#!/usr/bin/env bash
# Runs every test of Hermod on a fresh machine or an old one. It installs what the tests need
# (wasm32 target, worker-build, wasm-bindgen-cli, wrangler from npm; for fuzzing the nightly
# toolchain and cargo-fuzz), skipping whatever is already there, then checks formatting and
# lints, builds the protocol crate and the edge Worker for wasm32, runs every unit and
# end-to-end test (the edge under `wrangler dev`), and a short fuzz smoke run of every target.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

# worker-build must match the `worker` crate; wasm-bindgen-cli must match Cargo.lock exactly.
WORKER_BUILD_VERSION=0.8.7
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)

step "toolchain: wasm32 target, worker-build $WORKER_BUILD_VERSION, wasm-bindgen-cli $WASM_BINDGEN_VERSION, wrangler"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if [ "$(worker-build --version 2>/dev/null)" != "$WORKER_BUILD_VERSION" ]; then
    cargo install worker-build --version "$WORKER_BUILD_VERSION"
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
    # Not --locked: the registry mirror lacks a few of the newest patches the CLI's lockfile pins.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
if [ ! -x node_modules/.bin/wrangler ] || [ "$(node_modules/.bin/wrangler --version 2>/dev/null)" != "$(node -p 'require("./package.json").devDependencies.wrangler')" ] ||
    [ "$(node -p 'require("./node_modules/swagger-ui-dist/package.json").version' 2>/dev/null)" != "$(node -p 'require("./package.json").devDependencies["swagger-ui-dist"]')" ]; then
    npm ci --no-audit --no-fund
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p hermod-edge --target wasm32-unknown-unknown -- -D warnings

step "the device protocol's test vectors, checked by a second signer written from docs/PROTOCOL.md"
python3 tests/vectors/check_device_protocol.py

step "shared builds for wasm32-unknown-unknown; the edge Worker builds with worker-build"
cargo build -p hermod-shared --target wasm32-unknown-unknown
# WASM_BINDGEN_BIN and ESBUILD_BIN keep worker-build from downloading them (no GitHub here);
# --no-opt skips wasm-opt for the same reason.
(cd edge && WASM_BINDGEN_BIN=wasm-bindgen ESBUILD_BIN=../node_modules/.bin/esbuild worker-build --release --no-opt)

# The end-to-end suite runs twice: on SQLite (each test its own file) and on PostgreSQL (each
# test its own database on 127.0.0.1:5432, or HERMOD_TEST_POSTGRES). The PostgreSQL pass is
# never skipped: without a server it fails.
if cargo nextest --version >/dev/null 2>&1; then
    step "tests on SQLite (and the unit tests)"
    cargo nextest run --workspace --no-fail-fast
    step "end-to-end tests on PostgreSQL"
    HERMOD_TEST_DATABASE=postgres cargo nextest run -p hermod --test e2e --no-fail-fast
else
    step "tests on SQLite (and the unit tests)"
    cargo test --workspace --no-fail-fast
    step "end-to-end tests on PostgreSQL"
    HERMOD_TEST_DATABASE=postgres cargo test -p hermod --test e2e --no-fail-fast
fi

# The served API as its users see it, on the debug binary the tests built.
step "the /docs page in headless Chromium"
tests/browser/run.sh target/debug/hermod
step "the OpenAPI document: valid OpenAPI 3.1, and the client and admin APIs answer as it says (schemathesis)"
scripts/api-conformance.sh target/debug/hermod

# The container image's binary: static (musl), and it serves from an empty root with an empty
# environment as PID 1, stopping on SIGTERM (docs/CONTAINERS.md). No container engine needed.
step "the static binary: built for x86_64-unknown-linux-musl, run alone in an empty root"
scripts/static-binary.sh

# Every parser of outside bytes is fuzzed (fuzz/, docs/SECURITY.md); here each target runs a
# short smoke time. `scripts/fuzz.sh 600` is the long run.
step "fuzz smoke: every target for ${FUZZ_SMOKE_SECONDS:-5} s"
./scripts/fuzz.sh "${FUZZ_SMOKE_SECONDS:-5}"
