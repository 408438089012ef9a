-- Billing with Stripe: each user's one customer, their subscription as last read from Stripe, and every webhook
-- event received (stored before it is processed, deduplicated by Stripe's event id).

CREATE TABLE billing_customers (
  user_id     TEXT PRIMARY KEY,
  customer_id TEXT NOT NULL UNIQUE,
  created_at  INTEGER NOT NULL
);

-- The newest state seen of the user's subscription; `state_at` (ms) is when it was read from Stripe, so an older
-- read never replaces a newer one. The user's tier (users.tier) is set in the same batch.
CREATE TABLE billing_subscriptions (
  user_id              TEXT PRIMARY KEY,
  subscription_id      TEXT NOT NULL,
  customer_id          TEXT NOT NULL,
  status               TEXT NOT NULL,
  price_id             TEXT,
  tier                 TEXT NOT NULL CHECK (tier IN ('free', 'pro', 'enterprise')),
  current_period_end   INTEGER,
  cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
  state_at             INTEGER NOT NULL
);

CREATE TABLE billing_events (
  id              TEXT PRIMARY KEY,
  type            TEXT NOT NULL,
  created         INTEGER NOT NULL,
  livemode        INTEGER NOT NULL,
  payload         TEXT NOT NULL,
  status          TEXT NOT NULL CHECK (status IN ('pending', 'processed', 'ignored', 'rejected', 'failed', 'dead')),
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER,
  -- A run processing it holds it until then (ms): no two runs process one event at once.
  lease_until     INTEGER,
  last_error      TEXT,
  user_id         TEXT,
  received_at     INTEGER NOT NULL,
  processed_at    INTEGER
);
-- The scheduled job's query: what is due.
CREATE INDEX billing_events_due ON billing_events (status, next_attempt_at);
-- The operators' list, newest first.
CREATE INDEX billing_events_received ON billing_events (received_at);
