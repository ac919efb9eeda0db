-- Retention: the sweeper removes what outlived its purpose in bounded batches, each found
-- through an index so a batch never scans history.
CREATE INDEX callback_events_finished_by_age ON callback_events (created_at) WHERE status <> 'pending';
CREATE INDEX audit_log_by_age ON audit_log (at);
CREATE INDEX devices_revoked ON devices (revoked_at) WHERE revoked_at IS NOT NULL;
