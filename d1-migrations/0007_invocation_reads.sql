-- A user's recent invocations of one agent, newest first (GET /v1/agents/:id/invocations), and retention by age.
CREATE INDEX invocations_by_agent_newest ON invocations (user_id, agent_id, started_at DESC, id DESC);
CREATE INDEX invocations_by_started ON invocations (started_at);
