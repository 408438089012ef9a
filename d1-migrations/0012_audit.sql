-- The audit trail: every privileged action, who did it (a user, an API key, an operator, Stripe, the system),
-- what it was done to, and how it ended. Never a secret's value: names, ids and outcomes only.
CREATE TABLE audit_log (
  id          TEXT PRIMARY KEY,
  at          INTEGER NOT NULL,
  request_id  TEXT,
  actor       TEXT NOT NULL CHECK (actor IN ('user', 'api_key', 'operator', 'stripe', 'system')),
  actor_id    TEXT,
  user_id     TEXT,
  action      TEXT NOT NULL,
  target      TEXT,
  agent_id    TEXT,
  outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
  status      INTEGER,
  detail_json TEXT
);
-- A user's trail, newest first (the cursor is (at, id)).
CREATE INDEX audit_log_by_user ON audit_log (user_id, at, id);
-- Everyone's, for operators, and the retention prune.
CREATE INDEX audit_log_by_at ON audit_log (at, id);
