-- The second runtime (issue 14): AgentCore deployments. `deploy_target` names where a deployment runs, so it may
-- now be `agentcore`; `source` may be `image` (a container image, not uploaded code). SQLite cannot change a CHECK
-- in place, so the table is rebuilt with every column it has gained since 0002, and its indexes are made again.
CREATE TABLE deployments_rebuilt (
  id                      TEXT PRIMARY KEY,
  agent_id                TEXT NOT NULL REFERENCES agents (id),
  user_id                 TEXT NOT NULL REFERENCES users (id),
  version                 INTEGER NOT NULL,
  status                  TEXT NOT NULL CHECK (status IN ('deploying', 'active', 'failed', 'inactive')),
  runtime_provider        TEXT NOT NULL,
  deploy_target           TEXT NOT NULL CHECK (deploy_target IN ('dispatch_namespace', 'workers_dev', 'agentcore')),
  script_name             TEXT NOT NULL UNIQUE,
  main_module_name        TEXT NOT NULL,
  compatibility_date      TEXT NOT NULL,
  invoke_path             TEXT NOT NULL,
  source                  TEXT NOT NULL CHECK (source IN ('template', 'custom', 'image')),
  code_sha256             TEXT NOT NULL,
  env_json                TEXT NOT NULL,
  telemetry_secret_sealed TEXT NOT NULL,
  idempotency_key         TEXT,
  request_sha256          TEXT NOT NULL,
  provider_ref            TEXT,
  error_json              TEXT,
  created_at              INTEGER NOT NULL,
  updated_at              INTEGER NOT NULL,
  finished_at             INTEGER,
  script_deleted_at       INTEGER,
  gateway_secret_sealed   TEXT,
  retries                 INTEGER NOT NULL DEFAULT 0,
  artifact_deleted_at     INTEGER,
  restoring_until         INTEGER,
  restore_started_at      INTEGER,
  artifact_removed_at     INTEGER,
  -- AgentCore: the image and the role its runtime version runs as.
  container_uri           TEXT,
  execution_role_arn      TEXT,
  UNIQUE (agent_id, version),
  UNIQUE (agent_id, idempotency_key)
);
INSERT INTO deployments_rebuilt (id, agent_id, user_id, version, status, runtime_provider, deploy_target, script_name,
  main_module_name, compatibility_date, invoke_path, source, code_sha256, env_json, telemetry_secret_sealed,
  idempotency_key, request_sha256, provider_ref, error_json, created_at, updated_at, finished_at, script_deleted_at,
  gateway_secret_sealed, retries, artifact_deleted_at, restoring_until, restore_started_at, artifact_removed_at)
SELECT id, agent_id, user_id, version, status, runtime_provider, deploy_target, script_name,
  main_module_name, compatibility_date, invoke_path, source, code_sha256, env_json, telemetry_secret_sealed,
  idempotency_key, request_sha256, provider_ref, error_json, created_at, updated_at, finished_at, script_deleted_at,
  gateway_secret_sealed, retries, artifact_deleted_at, restoring_until, restore_started_at, artifact_removed_at
FROM deployments;
DROP TABLE deployments;
ALTER TABLE deployments_rebuilt RENAME TO deployments;
CREATE INDEX deployments_by_agent_version ON deployments (agent_id, version DESC);
CREATE INDEX deployments_by_status_created ON deployments (status, created_at);
CREATE INDEX deployments_by_user_status ON deployments (user_id, status, created_at);
CREATE INDEX deployments_by_code ON deployments (code_sha256);

-- An agent's AgentCore runtime, once its first AgentCore deploy created it (its versions are the deployments).
ALTER TABLE agents ADD COLUMN agentcore_runtime_id TEXT;
