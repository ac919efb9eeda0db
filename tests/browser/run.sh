#!/usr/bin/env bash
# The /docs and /demo pages in a real browser: starts the given `hermod` binary with the sample
# config on a free port (a fresh SQLite file in a temporary folder), waits for /health, and runs
# docs_page.py and demo_page.py against it in headless Chromium; they store screenshots in
# target/browser/. Builds nothing: pass the binary, e.g. `tests/browser/run.sh
# target/debug/hermod`. Installs what it needs once, skipping whatever is already there:
# Debian's Chromium (never a browser build of Playwright's own: `playwright install` is never
# run) and the Python packages playwright, zxing-cpp and Pillow, pinned, in target/browser-venv.
set -euo pipefail
HERMOD=$(realpath "${1:?usage: tests/browser/run.sh path/to/hermod}")
cd "$(dirname "$0")/../.."
ROOT=$PWD
started=$SECONDS

PLAYWRIGHT_VERSION=1.65.2
# zxing-cpp reads the QR codes off the screenshots; Pillow opens them.
ZXING_VERSION=3.1.1
PILLOW_VERSION=12.3.0
VENV=target/browser-venv
CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ] || [ ! -d /usr/share/fonts/truetype/dejavu ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
fi
installed=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(*(m.version(p) for p in ("playwright", "zxing-cpp", "pillow")))' 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_VERSION $ZXING_VERSION $PILLOW_VERSION" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "playwright==$PLAYWRIGHT_VERSION" "zxing-cpp==$ZXING_VERSION" "pillow==$PILLOW_VERSION"
fi

# Only the sample config and the port: nothing from the caller's HERMOD_* or DATABASE_URL.
for name in $(compgen -e | grep -E '^(HERMOD_|DATABASE_URL$)' || true); do
    unset "$name"
done
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The enrolment links name this server; claims may use frames up to 30 s old (two screenshots
# and two simulator runs on a busy CI machine).
(cd "$WORK" && HERMOD_SERVER__PORT=$PORT HERMOD_PUBLIC_URL="http://127.0.0.1:$PORT/ms" HERMOD_COMMANDS__QR_MAX_AGE=30 exec "$HERMOD" serve --config "$ROOT/config/hermod-conf.yml") \
    >"$WORK/hermod.log" 2>&1 &
PID=$!
stop() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap stop EXIT

BASE="http://127.0.0.1:$PORT"
deadline=$((SECONDS + 30))
until curl -fsS --max-time 1 "$BASE/health" >/dev/null 2>&1; do
    if ! kill -0 "$PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
        echo "hermod did not answer $BASE/health; its log:" >&2
        cat "$WORK/hermod.log" >&2
        exit 1
    fi
    sleep 0.1
done

mkdir -p target/browser
"$VENV/bin/python" tests/browser/docs_page.py "$BASE" target/browser/docs.png
echo "browser test of /docs: $((SECONDS - started)) s"
"$VENV/bin/python" tests/browser/demo_page.py "$BASE" "$HERMOD" target/browser
echo "browser tests of /docs and /demo: $((SECONDS - started)) s"
