-- Operator API calls refused for their credentials are audited at most 60 a minute per isolate; the next row
-- written says how many were left out meanwhile.
ALTER TABLE admin_audit ADD COLUMN suppressed INTEGER NOT NULL DEFAULT 0;
