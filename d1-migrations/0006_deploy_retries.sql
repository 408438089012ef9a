-- How many provider calls of a deploy failed transiently (429, 5xx, network) and were retried: a deployment that
-- is still `deploying` shows its attempts while it waits out a busy provider.
ALTER TABLE deployments ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
