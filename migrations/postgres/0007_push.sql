-- How to wake a device that is not long-polling: its push registration (one a device). For
-- `webpush`, the RFC 8030 endpoint and the RFC 8291 keys the device's subscription holds
-- (base64url); they are the device's to give, not secrets of Hermod's.
CREATE TABLE push_registrations (
    device_id  TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    transport  TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    p256dh     TEXT,
    auth       TEXT,
    created_at BIGINT NOT NULL
);
