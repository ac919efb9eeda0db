#!/usr/bin/env bash
# Builds the static (musl, static-pie) `hermod` binary the container image ships, then proves it
# runs on its own: in an empty root holding only the binary, the sample config and an empty data
# folder, with an empty environment, as PID 1 of its own PID namespace, in a user namespace (no
# real root privileges needed). It checks /health and /ready, provisions a user with the sample
# `idm` client's key (201), stops the server with SIGTERM and checks that it exits 0 in time.
# Only loopback traffic. Exits non-zero on any failure.
#
# Installs the x86_64-unknown-linux-musl target and musl-tools (ring and the bundled SQLite are
# C, compiled with x86_64-linux-musl-gcc) only when they are missing.
#
#   scripts/static-binary.sh            # build, then run the checks
#   HERMOD_STATIC_KEEP=1 scripts/...    # keep the temporary root for inspection
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

TARGET=x86_64-unknown-linux-musl
BINARY="${CARGO_TARGET_DIR:-target}/$TARGET/release/hermod"
# The sample client `idm` of config/hermod-conf.yml.
IDM_KEY=446020134ee8422db5769fbef9104a4157728610236d4dd1a4b37f935dab410a

step() { printf '\n==> %s\n' "$*"; }
fail() {
    printf 'static-binary: %s\n' "$*" >&2
    exit 1
}

step "toolchain: the $TARGET target and musl-tools"
if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
if ! command -v x86_64-linux-musl-gcc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y --no-install-recommends musl-tools ||
            { apt-get update && apt-get install -y --no-install-recommends musl-tools; }
    else
        fail "x86_64-linux-musl-gcc is missing: install musl-tools (ring and SQLite are compiled C)"
    fi
fi

step "build: cargo build --release -p hermod --target $TARGET"
cargo build --release -p hermod --target "$TARGET"
if command -v file >/dev/null; then
    description=$(file -b "$BINARY")
    echo "$BINARY: $description"
    case "$description" in
        *"static-pie linked"* | *"statically linked"*) ;;
        *) fail "$BINARY is not statically linked" ;;
    esac
fi
# Without `file` the run below proves it anyway: the root it runs in has no libc and no ld.so.

step "run in an empty root with an empty environment, as PID 1 of its own namespaces"
# The root holds exactly: /hermod, /config/hermod-conf.yml (the sample) and an empty /data.
# Nothing else is needed, which this run proves. Measured with strace: no /tmp, no HOME, no /etc
# (no resolv.conf, passwd or hosts: the server resolves no name to start; the system CA roots
# under /etc/ssl are looked for and simply absent, so only cacerts/ is trusted), no /proc (the
# CPU count falls back from /proc/self/cgroup to sched_getaffinity), no /dev: randomness comes
# from the getrandom syscall; SQLite's one attempt at /dev/urandom fails harmlessly.
work=$(mktemp -d "${TMPDIR:-/tmp}/hermod-static.XXXXXX")
root="$work/root"
server_pid=""
unshare_pid=""
cleanup() {
    # On a failure: unshare's --kill-child takes the server down with it.
    if [ -n "$unshare_pid" ] && kill -0 "$unshare_pid" 2>/dev/null; then
        kill -KILL "$unshare_pid" 2>/dev/null || true
        wait "$unshare_pid" 2>/dev/null || true
    fi
    if [ "${HERMOD_STATIC_KEEP:-}" = 1 ]; then
        echo "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
mkdir -p "$root/config" "$root/data"
cp "$BINARY" "$root/hermod"
cp config/hermod-conf.yml "$root/config/hermod-conf.yml"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
log="$work/hermod.log"

# unshare: a user namespace mapping the caller to root inside it (so chroot is allowed without
# real privileges; CI runs as root, which works the same), a PID namespace in which the server is
# PID 1 (as in a container: only signals it handles reach it), and --root, a chroot into the
# empty root with /data as the working directory, so the sample's `sqlite://hermod.db` is
# /data/hermod.db and the server key file is made beside it. env -i leaves only the port
# (the sample listens on 127.0.0.1; the network namespace stays the host's, for curl).
env -i HERMOD_SERVER__PORT="$port" \
    "$(command -v unshare)" --user --map-root-user --pid --fork --kill-child --root="$root" --wd=/data \
    /hermod serve --config /config/hermod-conf.yml >"$log" 2>&1 &
unshare_pid=$!

# The server is unshare's child (unshare --fork waits for it and passes on its exit status).
deadline=$((SECONDS + 20))
until server_pid=$(ps -o pid= --ppid "$unshare_pid" | tr -d ' ') && [ -n "$server_pid" ]; do
    kill -0 "$unshare_pid" 2>/dev/null || { cat "$log" >&2; fail "the server exited at start"; }
    [ "$SECONDS" -lt "$deadline" ] || fail "the server process did not appear"
    sleep 0.05
done
nspid=$(awk '/^NSpid:/ { print $NF }' "/proc/$server_pid/status")
[ "$nspid" = 1 ] || fail "the server is PID $nspid in its namespace, not 1"
echo "server: host pid $server_pid, PID 1 in its namespace, root $root"

wait_for() { # path expected-body
    local body=""
    local deadline=$((SECONDS + 30))
    until body=$(curl -fsS --max-time 2 "$base$1" 2>/dev/null) && [ "$body" = "$2" ]; do
        kill -0 "$unshare_pid" 2>/dev/null || { cat "$log" >&2; fail "the server exited before $1 answered"; }
        [ "$SECONDS" -lt "$deadline" ] || { cat "$log" >&2; fail "$1 did not answer '$2' within 30 s (last: '$body')"; }
        sleep 0.1
    done
    echo "$1: $body"
}
wait_for /health ok
wait_for /ready ready

key=$(printf 'idm:%s' "$IDM_KEY" | base64 -w0)
status=$(curl -sS --max-time 10 -o "$work/provision.json" -w '%{http_code}' -X POST "$base/command/provision" \
    -H "X-API-Key: $key" -H 'Content-Type: application/json' -d '{"user_id": "alice"}')
[ "$status" = 201 ] || { cat "$work/provision.json" "$log" >&2; fail "POST /command/provision answered $status, not 201"; }
grep -q '"link":"hermod://enrol?' "$work/provision.json" || fail "the provision answer has no enrolment link"
echo "POST /command/provision: 201 with an enrolment link"
for made in hermod.db hermod-server-keys; do
    [ -s "$root/data/$made" ] || fail "/data/$made was not made"
done

kill -TERM "$server_pid"
deadline=$((SECONDS + 5))
while kill -0 "$server_pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { cat "$log" >&2; fail "the server did not stop within 5 s of SIGTERM"; }
    sleep 0.05
done
code=0
wait "$unshare_pid" || code=$?
unshare_pid=""
[ "$code" = 0 ] || { cat "$log" >&2; fail "the server exited $code after SIGTERM, not 0"; }
grep -q 'shutting down' "$log" || fail "the server did not log its shutdown"
echo "SIGTERM: exited 0"
echo "static binary OK: $BINARY ($(du -h "$BINARY" | cut -f1))"
