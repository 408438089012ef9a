-- The per-user deploy limits count a user's deployments by status and start time with every deploy.
CREATE INDEX deployments_by_user_status ON deployments (user_id, status, created_at);
