-- The invocation gateway: per-user entitlement overrides, API keys, gateway-side metering and the operator
-- audit log.

-- The operator's per-user overrides of the tier's entitlements (JSON object; NULL = none).
ALTER TABLE users ADD COLUMN entitlements_json TEXT;

-- API keys: only the SHA-256 of the key is kept, with a short visible prefix. agent_id, when set, limits the key
-- to that agent. Revoking stamps revoked_at; the row stays so audits can name the key.
CREATE TABLE api_keys (
  id           TEXT PRIMARY KEY,
  user_id      TEXT NOT NULL REFERENCES users (id),
  name         TEXT NOT NULL,
  prefix       TEXT NOT NULL,
  key_hash     TEXT NOT NULL UNIQUE,
  agent_id     TEXT REFERENCES agents (id),
  created_at   INTEGER NOT NULL,
  last_used_at INTEGER,
  revoked_at   INTEGER
);
CREATE INDEX api_keys_by_user_newest ON api_keys (user_id, created_at DESC);

-- Gateway-side metering: one row per invocation that reached an agent of the caller, written by the gateway
-- itself (never from what the agent reports). counted = 1 when the call used one of the period's requests.
CREATE TABLE invocations (
  id              TEXT PRIMARY KEY,
  request_id      TEXT NOT NULL,
  user_id         TEXT NOT NULL REFERENCES users (id),
  agent_id        TEXT NOT NULL REFERENCES agents (id),
  deployment_id   TEXT,
  api_key_id      TEXT,
  period_key      TEXT NOT NULL,
  mode            TEXT NOT NULL CHECK (mode IN ('json', 'stream')),
  outcome         TEXT NOT NULL,
  upstream_status INTEGER,
  counted         INTEGER NOT NULL CHECK (counted IN (0, 1)),
  started_at      INTEGER NOT NULL,
  wall_ms         INTEGER NOT NULL
);
CREATE INDEX invocations_by_user_period ON invocations (user_id, period_key, outcome);

-- Every operator API call, successful or not.
CREATE TABLE admin_audit (
  id             TEXT PRIMARY KEY,
  request_id     TEXT NOT NULL,
  at             INTEGER NOT NULL,
  action         TEXT NOT NULL,
  target_user_id TEXT,
  status         INTEGER NOT NULL,
  outcome        TEXT NOT NULL,
  change_json    TEXT
);
CREATE INDEX admin_audit_by_target ON admin_audit (target_user_id, at);
