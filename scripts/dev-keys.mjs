// Creates the local stack's own RS256 signing key and secrets encryption key (once, in .dev/, git-ignored) and
// writes the settings `wrangler dev` needs into .dev.vars: the identity provider (AUTH_*, and the dashboard's
// sign-in through the local identity provider), the operator token
// (ADMIN_TOKEN) and deploys to the
// local Cloudflare (PORT and LOCAL_CLOUDFLARE_PORT pick the ports). Other lines in .dev.vars are kept, so local
// additions such as CORS_ALLOWED_ORIGINS survive.
import { exportJWK, generateKeyPair } from "jose";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { randomBytes } from "node:crypto";
import { ADMIN_TOKEN_FILE, DEV_AUDIENCE, DEV_ISSUER, ENCRYPTION_KEY_FILE, KEY_FILE } from "./dev-identity.mjs";

async function loadOrCreateKey() {
  if (existsSync(KEY_FILE)) return JSON.parse(readFileSync(KEY_FILE, "utf8"));
  const { privateKey } = await generateKeyPair("RS256", { modulusLength: 2048, extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: `dev-${randomUUID()}`, alg: "RS256", use: "sig" };
  mkdirSync(".dev", { recursive: true, mode: 0o700 });
  writeFileSync(KEY_FILE, JSON.stringify(jwk, null, 2) + "\n", { mode: 0o600 });
  return jwk;
}

const key = await loadOrCreateKey();
const { kid } = key;

function loadOrCreate(file, make) {
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const value = make();
  mkdirSync(".dev", { recursive: true, mode: 0o700 });
  writeFileSync(file, value + "\n", { mode: 0o600 });
  return value;
}

const port = process.env.PORT || "8787";
const lcfPort = process.env.LOCAL_CLOUDFLARE_PORT || "8788";
const lcf = `http://127.0.0.1:${lcfPort}`;
const identity = `127.0.0.1:${process.env.LOCAL_IDENTITY_PORT || "8789"}`;
const localStripe = `http://127.0.0.1:${process.env.LOCAL_STRIPE_PORT || "8790"}`;
const agentcoreControl = `http://127.0.0.1:${process.env.LOCAL_AGENTCORE_CONTROL_PORT || "8791"}`;
const agentcoreData = `http://127.0.0.1:${process.env.LOCAL_AGENTCORE_DATA_PORT || "8792"}`;
const managed = {
  AUTH_ISSUER: DEV_ISSUER,
  // The local identity provider (local-identity/server.mjs) publishes the local key, as Clerk publishes its own.
  AUTH_JWKS_URL: `http://${identity}/.well-known/jwks.json`,
  AUTH_AUDIENCES: DEV_AUDIENCE,
  // The dashboard signs in with the local identity provider: a Clerk development key naming it, and its script.
  DASHBOARD_CLERK_PUBLISHABLE_KEY: `pk_test_${Buffer.from(`${identity}$`).toString("base64")}`,
  DASHBOARD_CLERK_JS_URL: `http://${identity}/npm/@clerk/clerk-js@5/dist/clerk.browser.js`,
  // wrangler dev exits if answered mid-upload; the worker reads such bodies to their end here (never in production).
  DRAIN_UNREAD_BODIES: "true",
  DEPLOY_TARGET: "workers_dev",
  CLOUDFLARE_API_BASE_URL: `${lcf}/client/v4`,
  CLOUDFLARE_API_TOKEN: "local-cloudflare-token",
  CLOUDFLARE_ACCOUNT_ID: "local-account",
  WORKERS_DEV_URL_TEMPLATE: `${lcf}/__workers/{script}`,
  TELEMETRY_SECRETS_ENCRYPTION_KEY: loadOrCreate(ENCRYPTION_KEY_FILE, () => randomBytes(32).toString("base64")),
  ADMIN_TOKEN: loadOrCreate(ADMIN_TOKEN_FILE, () => randomBytes(32).toString("hex")),
  TELEMETRY_REPORT_URL: `http://127.0.0.1:${port}/v1/telemetry/report`,
  // Billing against the local Stripe (local-stripe/server.mjs): its test key, its webhook secret, its prices.
  STRIPE_SECRET_KEY: "sk_test_local",
  STRIPE_WEBHOOK_SECRETS: "whsec_local",
  STRIPE_PRICE_PRO: "price_local_pro",
  STRIPE_PRICE_ENTERPRISE: "price_local_enterprise",
  STRIPE_API_BASE_URL: localStripe,
  BILLING_RETURN_URL: `http://127.0.0.1:${port}/billing`,
  // The second runtime against the local AgentCore (local-agentcore/server.mjs) and the key pair it knows.
  AGENTCORE_REGION: "us-east-1",
  AGENTCORE_ACCOUNT_ID: "123456789012",
  AGENTCORE_EXECUTION_ROLE_ARN: "arn:aws:iam::123456789012:role/WebhostAgentRuntime",
  AGENTCORE_CONTROL_URL: agentcoreControl,
  AGENTCORE_DATA_URL: agentcoreData,
  AWS_ACCESS_KEY_ID: process.env.LOCAL_AGENTCORE_ACCESS_KEY_ID || "AKIALOCALAGENTCORE01",
  AWS_SECRET_ACCESS_KEY: process.env.LOCAL_AGENTCORE_SECRET_ACCESS_KEY || "local-agentcore-secret-access-key",
};
// Settings earlier versions of this script wrote, dropped from .dev.vars (AUTH_JWKS gave way to AUTH_JWKS_URL).
const RETIRED = ["AUTH_JWKS"];
const kept = existsSync(".dev.vars")
  ? readFileSync(".dev.vars", "utf8")
      .split("\n")
      .filter((line) => line.trim() && ![...Object.keys(managed), ...RETIRED].some((name) => line.startsWith(`${name}=`)))
  : ["# Local-only settings for `wrangler dev`, rewritten by scripts/dev-keys.mjs except for lines you add."];
const lines = [...kept, ...Object.entries(managed).map(([name, value]) => `${name}='${value}'`)];
writeFileSync(".dev.vars", lines.join("\n") + "\n", { mode: 0o600 });
console.error(`Local signing key ${kid} ready; .dev.vars written.`);
