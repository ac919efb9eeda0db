-- Cursors that cannot skip, and an index of pending callbacks (PostgreSQL; the same as migrations/sqlite/0003 in this dialect).
--
-- A device's mailbox is its user's (a group's user): every event addressed to the user or to one
-- of the user's devices is numbered within that mailbox, the number taken from `mailboxes` in the
-- transaction that writes the event. On PostgreSQL the row lock that taking it holds until commit
-- makes the numbers of one mailbox become visible in order, so a cursor never passes a number
-- that commits later (a global identity column did not promise that). The audit log is numbered
-- per tenant the same way. SQLite, with one writer, keeps the same scheme so both read alike.
CREATE TABLE mailboxes (
    group_id TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

-- Events addressed to a device name its user too.
UPDATE mailbox_events SET user_id = (SELECT d.user_id FROM devices d WHERE d.id = mailbox_events.device_id)
    WHERE user_id IS NULL;
ALTER TABLE mailbox_events ADD COLUMN mailbox_seq BIGINT;
UPDATE mailbox_events SET mailbox_seq = seq;
-- Devices keep their cursors: every mailbox continues above every number handed out so far.
INSERT INTO mailboxes (group_id, user_id, last_seq)
    SELECT group_id, user_id, (SELECT COALESCE(MAX(seq), 0) FROM mailbox_events)
    FROM (SELECT group_id, user_id FROM devices UNION SELECT group_id, user_id FROM mailbox_events WHERE user_id IS NOT NULL) owners;
DROP INDEX mailbox_by_device;
DROP INDEX mailbox_by_user;
CREATE INDEX mailbox_by_owner ON mailbox_events (group_id, user_id, mailbox_seq);

CREATE TABLE audit_cursors (
    tenant_id TEXT PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);
ALTER TABLE audit_log ADD COLUMN tenant_seq BIGINT;
UPDATE audit_log SET tenant_seq = seq;
INSERT INTO audit_cursors (tenant_id, last_seq)
    SELECT tenant_id, (SELECT COALESCE(MAX(seq), 0) FROM audit_log)
    FROM (SELECT id AS tenant_id FROM tenants UNION SELECT tenant_id FROM audit_log) owners;
DROP INDEX audit_log_by_tenant;
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, tenant_seq);

-- The callback worker takes pending events in order: an index holding only those, in that order,
-- keeps the claim from reading the whole (growing) table.
CREATE INDEX callback_events_pending ON callback_events (seq) WHERE status = 'pending';
