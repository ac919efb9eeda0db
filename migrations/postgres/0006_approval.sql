-- Phishing-resistant approval. `approval` holds, as JSON, what a command carries for the person
-- confirming it (its verification challenge, its animated QR code's token and secret, the number
-- to match and its choices, the text to show); NULL for a provision. `reason` says why the
-- command ended as it did when that is known (a decline's reason, `number_mismatch`).
-- `claim_token` is the QR start token of a command created for nobody yet, which the first
-- device that scans a current frame claims; NULL for every other command (and so unindexed).
ALTER TABLE commands ADD COLUMN approval TEXT;
ALTER TABLE commands ADD COLUMN reason TEXT;
ALTER TABLE commands ADD COLUMN claim_token TEXT;
CREATE UNIQUE INDEX commands_by_claim_token ON commands (claim_token) WHERE claim_token IS NOT NULL;
