-- The per-deployment gateway credential: the key the gateway signs every forwarded call with, which the
-- deployed script's guard checks before any work. AES-256-GCM under TELEMETRY_SECRETS_ENCRYPTION_KEY, bound to
-- "<deploymentId>:gateway"; never plaintext. NULL for deployments made before the guard existed (their scripts
-- have no guard: redeploy them).
ALTER TABLE deployments ADD COLUMN gateway_secret_sealed TEXT;
