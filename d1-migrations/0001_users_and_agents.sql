-- Users: one row per external identity (issuer + subject). Every tenant table references users.id, never the
-- identity provider's subject.
CREATE TABLE users (
  id           TEXT PRIMARY KEY,
  auth_issuer  TEXT NOT NULL,
  auth_subject TEXT NOT NULL,
  tier         TEXT NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'pro', 'enterprise')),
  created_at   INTEGER NOT NULL,
  UNIQUE (auth_issuer, auth_subject)
);

-- Agents. Deleting is soft (deleted_at) so later usage, billing and audit rows keep their referent; a deleted
-- agent's name is free for reuse.
CREATE TABLE agents (
  id                   TEXT PRIMARY KEY,
  user_id              TEXT NOT NULL REFERENCES users (id),
  name                 TEXT NOT NULL,
  description          TEXT,
  status               TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
  active_deployment_id TEXT,
  created_at           INTEGER NOT NULL,
  updated_at           INTEGER NOT NULL,
  deleted_at           INTEGER
);

-- Unique names among a user's live agents.
CREATE UNIQUE INDEX agents_live_name_per_user ON agents (user_id, name) WHERE deleted_at IS NULL;
-- The list query: a user's live agents, newest first, keyset-paginated on (created_at, id).
CREATE INDEX agents_live_by_user_newest ON agents (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
