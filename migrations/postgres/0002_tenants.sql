-- Hosted tenants: quotas, tenant admin keys, several keys per client (rotation), an audit log.

-- Quotas; NULL is unlimited.
ALTER TABLE tenants ADD COLUMN max_commands_per_second BIGINT;
ALTER TABLE tenants ADD COLUMN max_devices BIGINT;

-- Keys of a tenant's administrators. The token is `{id}.{secret}`; only its SHA-256 is kept.
CREATE TABLE admin_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    key_hash     TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX admin_keys_by_tenant ON admin_keys (tenant_id);

-- A client's API keys: at most two active at once (the old and the new during a rotation).
-- `source` is 'config' for the key of a config-file client, else 'api'.
CREATE TABLE client_keys (
    id           TEXT PRIMARY KEY,
    client_pk    TEXT NOT NULL REFERENCES clients (id),
    key_hash     TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX client_keys_by_client ON client_keys (client_pk);
INSERT INTO client_keys (id, client_pk, key_hash, source, created_at)
    SELECT 'key_' || id, id, key_hash, source, created_at FROM clients;
ALTER TABLE clients DROP COLUMN key_hash;
-- The client's name within its tenant (its client_id is `{tenant}.{name}` for hosted clients).
ALTER TABLE clients ADD COLUMN name TEXT;
UPDATE clients SET name = client_id;

-- Commands counted in the current one-second window, per tenant with a rate quota.
CREATE TABLE tenant_usage (
    tenant_id    TEXT PRIMARY KEY REFERENCES tenants (id),
    window_start BIGINT NOT NULL,
    commands     BIGINT NOT NULL
);

-- Who did what, when: admin actions and key use (at most once a minute per key).
CREATE TABLE audit_log (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT,
    detail    TEXT
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, seq);
