-- Hermod's schema on PostgreSQL (the same as migrations/sqlite, in this dialect). Times are unix milliseconds. Applied migrations are never edited.

-- Keys the server derives device secrets and enrolment tokens from; 'root' is made at first start.
CREATE TABLE server_keys (
    name       TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE groups (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- A server system that sends commands. The credential is base64(client_id:key); only the
-- key's SHA-256 is kept.
CREATE TABLE clients (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    group_id            TEXT NOT NULL REFERENCES groups (id),
    client_id           TEXT NOT NULL UNIQUE,
    key_hash            TEXT NOT NULL,
    callback_url        TEXT,
    callback_basic_auth TEXT,
    -- Space-separated whsec_ secrets, each signs every callback (two during a rotation).
    callback_secrets    TEXT,
    -- Set when the receiver answered 410 Gone: nothing more is sent until a recovery or a new URL.
    callback_disabled_at BIGINT,
    source              TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    disabled_at         BIGINT
);

CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    group_id     TEXT NOT NULL REFERENCES groups (id),
    user_id      TEXT NOT NULL,
    name         TEXT,
    enrolled_by  TEXT NOT NULL,
    enrolled_at  BIGINT NOT NULL,
    last_seen_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX devices_by_user ON devices (group_id, user_id);

CREATE TABLE commands (
    id              TEXT PRIMARY KEY,
    group_id        TEXT NOT NULL REFERENCES groups (id),
    client_pk       TEXT NOT NULL REFERENCES clients (id),
    type            TEXT NOT NULL,
    device_id       TEXT,
    user_id         TEXT,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT,
    answered_by     TEXT,
    response_hash   TEXT,
    timeout_secs    BIGINT NOT NULL,
    lifespan_secs   BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    timeout_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    completed_at    BIGINT,
    idempotency_key TEXT,
    request_hash    TEXT,
    UNIQUE (client_pk, idempotency_key)
);
CREATE INDEX commands_open_by_timeout ON commands (timeout_at) WHERE status IN ('pending', 'delivered');
CREATE INDEX commands_by_expiry ON commands (expires_at);

-- The mailbox is a log: a device reads the events addressed to it (or to its user) after its
-- cursor. A command appears once when created and once more if it is cancelled.
CREATE TABLE mailbox_events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id   TEXT NOT NULL,
    device_id  TEXT,
    user_id    TEXT,
    command_id TEXT NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX mailbox_by_device ON mailbox_events (device_id, seq);
CREATE INDEX mailbox_by_user ON mailbox_events (group_id, user_id, seq);
CREATE INDEX mailbox_by_command ON mailbox_events (command_id);

-- Nonces of signed device requests, kept for the signature window.
CREATE TABLE nonces (
    device_id  TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, nonce)
);
CREATE INDEX nonces_by_expiry ON nonces (expires_at);

-- The callback outbox: written in the same transaction as the state change it reports.
CREATE TABLE callback_events (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    client_pk       TEXT NOT NULL REFERENCES clients (id),
    command_id      TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    last_error      TEXT
);
CREATE INDEX callback_events_due ON callback_events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX callback_events_by_command ON callback_events (command_id, seq);
CREATE INDEX callback_events_by_client ON callback_events (client_pk, created_at);

CREATE TABLE callback_attempts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      TEXT NOT NULL REFERENCES callback_events (id) ON DELETE CASCADE,
    attempted_at  BIGINT NOT NULL,
    status_code   BIGINT,
    duration_ms   BIGINT NOT NULL,
    response_body TEXT,
    error         TEXT
);
CREATE INDEX callback_attempts_by_event ON callback_attempts (event_id, id);
