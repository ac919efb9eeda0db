-- Which server key a device's secret derives from (its id in the key ring); NULL: the key from
-- before key ids (`legacy`).
ALTER TABLE devices ADD COLUMN key_id TEXT;
