-- When the clean-up job removed a deployment's artifact (its code in R2), because only deleted agents used it.
ALTER TABLE deployments ADD COLUMN artifact_deleted_at INTEGER;
CREATE INDEX deployments_by_code ON deployments (code_sha256);
