#!/usr/bin/env bash
# Checks that the served OpenAPI document is valid OpenAPI 3.1 and that the server answers as it
# says: status codes, content types, response bodies and response headers, and no 5xx.
#
#   scripts/api-conformance.sh target/release/hermod
#
# Run from anywhere (it works from the repo root). It makes a Python venv in target/api-venv
# (pinned versions, reused while they match), starts `hermod serve` with the sample config in a
# temp dir on a free 127.0.0.1 port with an operator key, seeds a few commands, a device and a
# tenant so that the fuzzer reaches past 404s, then runs openapi-spec-validator and schemathesis
# (fixed seed, bounded examples) against the client API (/command…, X-API-Key) and the admin
# API (/admin…, a tenant admin token, then the operator token). The device API (/ms/*: signed
# requests) and /generate-client are left out. Exits non-zero if any step fails. Reports go to
# target/api-conformance/.
#
# Environment: API_CONFORMANCE_EXAMPLES (max examples per operation, default 50),
# API_CONFORMANCE_SEED (default 20261202).
set -euo pipefail

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
    echo "usage: $0 path/to/hermod" >&2
    exit 2
fi
HERMOD=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CONFIG="$ROOT/config/hermod-conf.yml"
VENV="$ROOT/target/api-venv"
REPORTS="$ROOT/target/api-conformance"
EXAMPLES=${API_CONFORMANCE_EXAMPLES:-50}
SEED=${API_CONFORMANCE_SEED:-20261202}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
# The sample config's Identity Manager client.
IDM_KEY=446020134ee8422db5769fbef9104a4157728610236d4dd1a4b37f935dab410a

step() { printf '\n==> %s\n' "$*"; }
START=$SECONDS

# ---- the tools, pinned (schemathesis and everything under it: hypothesis decides what a seed
# generates, so it is pinned too) --------------------------------------------------------------
REQUIREMENTS='annotated-types==0.8.0
anyio==4.16.0
attrs==26.1.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
graphql-core==3.3.2
harfile==0.6.0
hypothesis==6.170.17
hypothesis-graphql==0.13.5
idna==3.20
iniconfig==2.3.1
jsonschema==4.26.0
jsonschema-path==0.5.0
jsonschema-specifications==2025.9.1
jsonschema_rs==0.60.3
lazy-object-proxy==1.13.0
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
openapi-schema-validator==0.9.0
openapi-spec-validator==0.9.0
packaging==26.4
pathable==0.6.0
pluggy==1.7.0
pydantic==2.14.4
pydantic-settings==2.16.3
pydantic_core==2.50.5
Pygments==2.21.0
pyrate-limiter==4.5.1
pytest==9.2.0
python-dotenv==1.2.4
PyYAML==6.0.4
referencing==0.37.0
requests==2.34.2
rfc3339-validator==0.1.4
rich==15.0.0
rpds-py==2026.9.1
schemathesis==4.32.5
six==1.17.0
sortedcontainers==2.4.0
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
Werkzeug==3.1.9'

step "tools: openapi-spec-validator and schemathesis in $VENV"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$VENV/requirements.txt" <(printf '%s\n' "$REQUIREMENTS"); then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    printf '%s\n' "$REQUIREMENTS" > "$VENV/requirements.lock"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-virtualenv -r "$VENV/requirements.lock"
    # Written last: a venv whose install broke off is rebuilt next time.
    mv "$VENV/requirements.lock" "$VENV/requirements.txt"
fi
PY="$VENV/bin/python"
"$VENV/bin/schemathesis" --version

# ---- the server ----------------------------------------------------------------------------
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

OPERATOR_KEY=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
cp "$CONFIG" "$WORK/hermod-conf.yml"
step "server: $HERMOD serve in $WORK"
for attempt in 1 2 3; do
    PORT=$(free_port)
    BASE="http://127.0.0.1:$PORT"
    # The admin rate limit is raised so that the fuzzer reaches the handlers (429 is documented
    # anyway); long-polls are capped at 1 s so that a generated `wait` cannot stall the run.
    (
        cd "$WORK"
        exec env HERMOD_SERVER__PORT="$PORT" \
            HERMOD_PUBLIC_URL="$BASE/ms" \
            HERMOD_ADMIN__OPERATOR_KEY="$OPERATOR_KEY" \
            HERMOD_SERVER_KEY="$(head -c 32 /dev/urandom | base64)" \
            HERMOD_ADMIN__RATE_LIMIT=100000 \
            HERMOD_COMMANDS__MAX_WAIT=1 \
            "$HERMOD" serve --config hermod-conf.yml
    ) > "$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    # Poll /health (curl retries while the port refuses connections) with a 30 s deadline.
    if curl -sf -o /dev/null --retry 30 --retry-connrefused --retry-delay 1 --retry-max-time 30 \
        --max-time 2 "$BASE/health"; then
        break
    fi
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "the server did not answer /health within 30 s" >&2
        tail -n 30 "$WORK/server.log" >&2
        exit 1
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    echo "the server exited (attempt $attempt); its log:" >&2
    tail -n 10 "$WORK/server.log" >&2
    [ "$attempt" = 3 ] && exit 1
done
echo "listening on $BASE"

# ---- seed data, so that the ids the fuzzer uses sometimes exist ------------------------------
step "seed: commands, a device, a tenant with a group, a client and keys"
J='Content-Type: application/json'
CLIENT_CRED=$(printf 'idm:%s' "$IDM_KEY" | base64 -w0)
jget() {
    "$PY" -c 'import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"
}
api() { curl -sS --fail-with-body --max-time 10 -X "$1" "$BASE$2" "${@:3}"; }
client() { api "$1" "$2" -H "X-API-Key: $CLIENT_CRED" -H "$J" "${@:3}"; }
operator() { api "$1" "$2" -H "Authorization: Bearer $OPERATOR_KEY" -H "$J" "${@:3}"; }

OPEN_PROVISION=$(client POST /command/provision -d '{"user_id": "alice", "timeout": 3600}' | jget id)
TOKEN=$(client POST /command/provision -d '{"user_id": "bob", "timeout": 3600}' | jget enrolment.token)
DONE_PROVISION=${TOKEN%%.*}
DEVICE=$(api POST /ms/enrol -H "$J" -d "{\"token\": \"$TOKEN\", \"name\": \"seed\"}" | jget device_id)
OPEN_COMMAND=$(client POST /command/authenticate -d '{"user_id": "bob", "timeout": 3600, "lifespan": 7200}' | jget id)
EVENT=$(client GET "/command/$DONE_PROVISION/callbacks" | jget 0.id)
TENANT=$(operator POST /admin/tenants -d '{"id": "acme", "name": "ACME", "quotas": {"max_devices": 100}}')
ADMIN_KEY_ID=$(printf '%s' "$TENANT" | jget admin_key.id)
operator POST /admin/tenants/acme/groups -d '{"name": "mobile-id"}' > /dev/null
operator POST /admin/tenants/acme/clients -d '{"name": "gateway", "group": "mobile-id"}' > /dev/null
operator POST /admin/tenants/acme/clients -d '{"name": "portal", "group": "mobile-id"}' > /dev/null
CLIENT_KEY_ID=$(operator POST /admin/tenants/acme/clients/gateway/keys | jget id)
# The tenant admin run's own token: not in the dictionaries, so no run revokes it.
TENANT_ADMIN=$(operator POST /admin/tenants/acme/admin-keys | jget token)

cat > "$WORK/schemathesis.toml" <<EOF
[dictionaries]
command_ids = { values = ["$OPEN_PROVISION", "$DONE_PROVISION", "$OPEN_COMMAND"] }
device_ids = { values = ["$DEVICE"] }
user_ids = { values = ["alice", "bob"] }
event_ids = { values = ["$EVENT"] }
types = { values = ["provision", "authenticate", "sign", "certificate", "ping", "x-custom"] }
tenants = { values = ["acme", "default"] }
clients = { values = ["gateway", "portal", "idm"] }
key_ids = { values = ["$CLIENT_KEY_ID", "$ADMIN_KEY_ID"] }

[parameters]
"path.id" = { dictionary = "command_ids", probability = 0.5 }
"path.device_id" = { dictionary = "device_ids", probability = 0.5 }
"path.user_id" = { dictionary = "user_ids", probability = 0.5 }
"path.event_id" = { dictionary = "event_ids", probability = 0.5 }
"path.type" = { dictionary = "types", probability = 0.7 }
"body.user_id" = { dictionary = "user_ids", probability = 0.5 }
"body.device_id" = { dictionary = "device_ids", probability = 0.5 }
"path.tenant" = { dictionary = "tenants", probability = 0.8 }
"path.client" = { dictionary = "clients", probability = 0.8 }
"path.key_id" = { dictionary = "key_ids", probability = 0.5 }
EOF

# ---- the checks ----------------------------------------------------------------------------
FAILED=()

step "openapi-spec-validator (OpenAPI 3.1) on $BASE/openapi.json"
curl -sS --fail --max-time 10 -o "$WORK/openapi.json" "$BASE/openapi.json"
if ! "$VENV/bin/openapi-spec-validator" --schema 3.1 --validation-errors all --subschema-errors all "$WORK/openapi.json"; then
    FAILED+=("openapi-spec-validator")
fi

mkdir -p "$REPORTS"
run_schemathesis() {
    local name=$1 path_regex=$2 header=$3
    shift 3
    step "schemathesis: $name ($EXAMPLES examples per operation, seed $SEED)"
    # `timeout` is a backstop only; the run is bounded by its examples. It runs in the temp dir,
    # where hypothesis and schemathesis leave their caches (.hypothesis, .schemathesis).
    if ! (cd "$WORK" && timeout 900 "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$BASE/openapi.json" \
        --url "$BASE" \
        --include-path-regex "$path_regex" \
        --header "$header" \
        --checks "$CHECKS" \
        --max-examples "$EXAMPLES" \
        --seed "$SEED" \
        --workers 1 \
        --generation-database none \
        --continue-on-failure \
        --request-timeout 10 \
        --no-color \
        --report junit \
        --report-junit-path "$REPORTS/$name.xml" \
        "$@"); then
        FAILED+=("schemathesis $name")
    fi
}

run_schemathesis client '^/command(/|$)' "X-API-Key: $CLIENT_CRED"
# A tenant admin: reaches the operator-only 403s. Revoking admin keys is left to the operator
# run (the run would otherwise revoke its own token and see only 401s after).
run_schemathesis tenant-admin '^/admin/' "Authorization: Bearer $TENANT_ADMIN" \
    --exclude-operation-id revoke_admin_key
run_schemathesis operator '^/admin/' "Authorization: Bearer $OPERATOR_KEY"

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    FAILED+=("the server exited during the run")
    tail -n 30 "$WORK/server.log" >&2
fi

step "done in $((SECONDS - START)) s"
if [ ${#FAILED[@]} -gt 0 ]; then
    if grep -qE 'ERROR|panicked' "$WORK/server.log"; then
        echo "errors in the server's log:"
        grep -E 'ERROR|panicked' "$WORK/server.log" | tail -n 20
    fi
    printf 'FAILED: %s\n' "${FAILED[@]}"
    exit 1
fi
echo "the document is valid OpenAPI 3.1 and the client and admin APIs conform to it"
