-- Rolling back to a deployment whose script the clean-up job removed uploads it again (issue 13). One restore of a
-- deployment runs at a time: `restoring_until` is its lease. `restore_started_at` counts a restore with deploys
-- against the plan's deploy limits (in flight, per hour).
ALTER TABLE deployments ADD COLUMN restoring_until INTEGER;
ALTER TABLE deployments ADD COLUMN restore_started_at INTEGER;
-- Artifacts are removed in two steps: `artifact_deleted_at` claims an orphaned one (a deploy of the same code
-- after that clears the claim); a later clean-up run removes it from R2 and records `artifact_removed_at`.
ALTER TABLE deployments ADD COLUMN artifact_removed_at INTEGER;
