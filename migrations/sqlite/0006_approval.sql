-- Phishing-resistant approval. `approval` holds, as JSON, what a command carries for the person
-- confirming it (its verification challenge, its animated QR code's token and secret, the number
-- to match and its choices, the text to show); NULL for a provision. `reason` says why the
-- command ended as it did when that is known (a decline's reason, `number_mismatch`).
ALTER TABLE commands ADD COLUMN approval TEXT;
ALTER TABLE commands ADD COLUMN reason TEXT;
