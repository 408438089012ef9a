-- Signed telemetry from deployed agents, the billing usage rolled up from it, and the audit of rejected reports.

-- Append-only raw events. dedupe_key is `e:<eventId>`, or `t:<traceId>` for an event without an eventId; a
-- retried event finds its key taken and is not stored (or counted) again. period_key is the UTC month in
-- which the control plane accepted the event (never the agent's clock); report_id names the report that
-- stored the row, so the same batch can add exactly the rows it inserted to billing_usage.
CREATE TABLE metrics_events (
  deployment_id    TEXT NOT NULL,
  dedupe_key       TEXT NOT NULL,
  event_id         TEXT,
  trace_id         TEXT NOT NULL,
  user_id          TEXT NOT NULL,
  agent_id         TEXT NOT NULL,
  runtime_provider TEXT NOT NULL,
  ts               INTEGER NOT NULL,
  received_at      INTEGER NOT NULL,
  period_key       TEXT NOT NULL,
  report_id        TEXT NOT NULL,
  requests         INTEGER NOT NULL CHECK (requests >= 0),
  input_tokens     INTEGER NOT NULL CHECK (input_tokens >= 0),
  output_tokens    INTEGER NOT NULL CHECK (output_tokens >= 0),
  compute_ms       INTEGER NOT NULL CHECK (compute_ms >= 0),
  errors           INTEGER NOT NULL CHECK (errors >= 0),
  PRIMARY KEY (deployment_id, dedupe_key)
);
-- /v1/metrics/recent: one user's agent, newest first.
CREATE INDEX metrics_events_by_agent_ts ON metrics_events (user_id, agent_id, ts DESC);
-- Recompute and retention: a period's events, per user.
CREATE INDEX metrics_events_by_period_user ON metrics_events (period_key, user_id);
-- The ingest batch's own rows.
CREATE INDEX metrics_events_by_report ON metrics_events (report_id);

-- Derived totals per user and period. Always equal to the sums over metrics_events of that user and period,
-- until the period's raw events are pruned (see usage_rollups), after which these rows are the record.
CREATE TABLE billing_usage (
  user_id       TEXT NOT NULL,
  period_key    TEXT NOT NULL,
  events        INTEGER NOT NULL DEFAULT 0,
  requests      INTEGER NOT NULL DEFAULT 0,
  input_tokens  INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  compute_ms    INTEGER NOT NULL DEFAULT 0,
  errors        INTEGER NOT NULL DEFAULT 0,
  updated_at    INTEGER NOT NULL,
  PRIMARY KEY (user_id, period_key)
);

-- One row per period the recompute job has seen. finalized_at: the period had ended (plus a grace for
-- reports in flight) when it was last recomputed, so its totals can no longer change. pruned_at: its raw
-- events have been removed (only ever after finalized_at, and only past the retention).
CREATE TABLE usage_rollups (
  period_key    TEXT PRIMARY KEY,
  recomputed_at INTEGER NOT NULL,
  finalized_at  INTEGER,
  pruned_at     INTEGER,
  events        INTEGER NOT NULL,
  users         INTEGER NOT NULL
);

-- Rejected telemetry reports. Rate-limited per isolate: past the limit, rejects are only counted, and the
-- next row written carries that count in `suppressed`. deployment_id is the claimed id when well-formed.
CREATE TABLE telemetry_rejects (
  id            TEXT PRIMARY KEY,
  at            INTEGER NOT NULL,
  request_id    TEXT NOT NULL,
  code          TEXT NOT NULL,
  status        INTEGER NOT NULL,
  deployment_id TEXT,
  suppressed    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX telemetry_rejects_by_at ON telemetry_rejects (at);
