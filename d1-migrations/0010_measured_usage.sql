-- Platform-measured usage, and refusals aggregated. The compute the gateway measures for every admitted call, charged to the user's
-- period whether or not the agent reports anything, and the token counts an agent's invoke/v1 answer carried,
-- recorded beside the signed telemetry so that a mismatch between the two is visible.

-- Refused calls are not written one row each: past a few rows a minute per user, they are only counted, and
-- the next refused call's row carries that count (how many more refusals it stands for).
ALTER TABLE invocations ADD COLUMN suppressed INTEGER NOT NULL DEFAULT 0;

-- The answer's `usage`, per call (NULL when the answer carried none).
ALTER TABLE invocations ADD COLUMN answer_input_tokens INTEGER;
ALTER TABLE invocations ADD COLUMN answer_output_tokens INTEGER;

-- Per user and period: counted calls, their measured wall time (forwarding to the answer's last byte, or to
-- the moment the client went away) and the answers' token counts. Added to by the gateway's metering write,
-- in the same batch as the call's row; the record once the period's invocations are pruned.
CREATE TABLE measured_usage (
  user_id              TEXT NOT NULL,
  period_key           TEXT NOT NULL,
  invocations          INTEGER NOT NULL DEFAULT 0,
  gateway_ms           INTEGER NOT NULL DEFAULT 0,
  answer_input_tokens  INTEGER NOT NULL DEFAULT 0,
  answer_output_tokens INTEGER NOT NULL DEFAULT 0,
  updated_at           INTEGER NOT NULL,
  PRIMARY KEY (user_id, period_key)
);
