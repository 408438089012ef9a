-- Deployments: one immutable row per upload of an agent. Only status, provider_ref, error_json and the
-- timestamps recording those changes are ever updated (DESIGN.md §4.2).
CREATE TABLE deployments (
  id                      TEXT PRIMARY KEY,
  agent_id                TEXT NOT NULL REFERENCES agents (id),
  user_id                 TEXT NOT NULL REFERENCES users (id),
  version                 INTEGER NOT NULL,
  status                  TEXT NOT NULL CHECK (status IN ('deploying', 'active', 'failed', 'inactive')),
  runtime_provider        TEXT NOT NULL,
  deploy_target           TEXT NOT NULL CHECK (deploy_target IN ('dispatch_namespace', 'workers_dev')),
  script_name             TEXT NOT NULL UNIQUE,
  main_module_name        TEXT NOT NULL,
  compatibility_date      TEXT NOT NULL,
  invoke_path             TEXT NOT NULL,
  source                  TEXT NOT NULL CHECK (source IN ('template', 'custom')),
  code_sha256             TEXT NOT NULL,
  env_json                TEXT NOT NULL,
  -- AES-256-GCM under TELEMETRY_SECRETS_ENCRYPTION_KEY, bound to the deployment id; never plaintext.
  telemetry_secret_sealed TEXT NOT NULL,
  idempotency_key         TEXT,
  request_sha256          TEXT NOT NULL,
  provider_ref            TEXT,
  error_json              TEXT,
  created_at              INTEGER NOT NULL,
  updated_at              INTEGER NOT NULL,
  finished_at             INTEGER,
  -- Set once the provider script is gone (cleaned up); such a deployment can no longer be activated.
  script_deleted_at       INTEGER,
  UNIQUE (agent_id, version),
  UNIQUE (agent_id, idempotency_key)
);

-- An agent's deployments, newest first.
CREATE INDEX deployments_by_agent_version ON deployments (agent_id, version DESC);
-- The clean-up job: stuck deploys and scripts still on the provider.
CREATE INDEX deployments_by_status_created ON deployments (status, created_at);

-- Write-only agent secrets, sealed with AES-256-GCM bound to (user, agent, name).
CREATE TABLE agent_secrets (
  agent_id     TEXT NOT NULL REFERENCES agents (id),
  user_id      TEXT NOT NULL REFERENCES users (id),
  name         TEXT NOT NULL,
  value_sealed TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  PRIMARY KEY (agent_id, name)
);
