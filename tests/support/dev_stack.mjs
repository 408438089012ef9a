// The local stack as `make dev` runs it: the control plane under `wrangler dev` (with the dashboard as its static
// assets and D1 migrated), beside the local Cloudflare and the local identity provider. Each test gets its own
// ports and state directory.
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { exportJWK } from "jose";
import { startLocalCloudflare } from "../../local-cloudflare/server.mjs";
import { startLocalIdentity } from "../../local-identity/server.mjs";
import { startLocalStripe } from "../../local-stripe/server.mjs";
import { startLocalAgentCore } from "../../local-agentcore/server.mjs";
import { ISSUER, ROOT, agentcoreVars, freePort, makeSigningKey } from "./harness.mjs";

const run = promisify(execFile);
const WRANGLER = path.join(ROOT, "node_modules/.bin/wrangler");
const AUDIENCE = "webhost-dev-stack-test";
const env = { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" };

/**
 * Starts `wrangler dev` with `vars` (written to an env file). With `identity: true` the local Cloudflare and the
 * local identity provider start too, and the control plane is configured like `make dev` configures it.
 */
export async function startDevStack(options = {}) {
  // The port is chosen before wrangler listens on it; another test file may take it in between: choose again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDevStackOnce(options);
    } catch (error) {
      if (!/address already in use|EADDRINUSE/i.test(error?.message ?? "") || attempt >= 3) throw error;
    }
  }
}

async function startDevStackOnce({ vars = {}, identity = false } = {}) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const state = mkdtempSync(path.join(tmpdir(), "dev-stack-"));
  const key = await makeSigningKey();
  const stack = { base, state, key, issuer: ISSUER, audience: AUDIENCE, output: "", exited: null, lcf: null, idp: null, stripe: null, dev: null };
  try {
    let settings = { DRAIN_UNREAD_BODIES: "true", AUTH_ISSUER: ISSUER, ...vars };
    if (identity) {
      stack.lcf = await startLocalCloudflare();
      stack.agentcore = await startLocalAgentCore();
      stack.stripe = await startLocalStripe({ webhookUrl: `${base}/v1/billing/webhook`, retryDelaysMs: [500, 1_000, 2_000, 4_000] });
      stack.idp = await startLocalIdentity({
        signingKey: { ...(await exportJWK(key.privateKey)), kid: key.kid },
        issuer: ISSUER,
        audience: AUDIENCE,
        allowedOrigins: [base],
      });
      settings = {
        ...settings,
        AUTH_JWKS_URL: stack.idp.jwksUrl,
        AUTH_AUDIENCES: AUDIENCE,
        // As in production with Clerk: only tokens issued to the dashboard's origin (`azp`) are accepted.
        AUTH_AUTHORIZED_PARTIES: base,
        DASHBOARD_CLERK_PUBLISHABLE_KEY: stack.idp.publishableKey,
        DASHBOARD_CLERK_JS_URL: stack.idp.scriptUrl,
        DEPLOY_TARGET: "workers_dev",
        CLOUDFLARE_API_BASE_URL: stack.lcf.apiBase,
        CLOUDFLARE_API_TOKEN: stack.lcf.apiToken,
        CLOUDFLARE_ACCOUNT_ID: stack.lcf.accountId,
        WORKERS_DEV_URL_TEMPLATE: `${stack.lcf.origin}/__workers/{script}`,
        TELEMETRY_SECRETS_ENCRYPTION_KEY: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"),
        TELEMETRY_REPORT_URL: `${base}/v1/telemetry/report`,
        STRIPE_SECRET_KEY: stack.stripe.secretKey,
        STRIPE_WEBHOOK_SECRETS: stack.stripe.webhookSecret,
        STRIPE_PRICE_PRO: "price_local_pro",
        STRIPE_PRICE_ENTERPRISE: "price_local_enterprise",
        STRIPE_API_BASE_URL: stack.stripe.origin,
        BILLING_RETURN_URL: `${base}/billing`,
        ...agentcoreVars(stack.agentcore),
        ...vars,
      };
    }
    const envFile = path.join(state, "dev.env");
    writeFileSync(envFile, Object.entries(settings).map(([k, v]) => `${k}='${v}'`).join("\n") + "\n");
    await run(WRANGLER, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", state], { cwd: ROOT, env });
    // Its own process group, so stopping it stops workerd too.
    stack.dev = spawn(WRANGLER, ["dev", "--local", "--ip", "127.0.0.1", "--port", String(port), "--persist-to", state, "--env-file", envFile], {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    stack.dev.stdout.on("data", (d) => (stack.output += d));
    stack.dev.stderr.on("data", (d) => (stack.output += d));
    stack.dev.on("exit", (code) => (stack.exited = code));
    stack.health = async () => {
      try {
        return (await fetch(`${base}/health`)).status;
      } catch {
        return null;
      }
    };
    let status = null;
    for (let i = 0; i < 600 && status === null && stack.exited === null; i++) {
      status = await stack.health();
      if (status === null) await new Promise((r) => setTimeout(r, 250));
    }
    if (status === null) throw new Error(`wrangler dev did not start:\n${stack.output.slice(-2000)}`);
    // Settled: wrangler may still reload the worker once its build output is in place.
    for (let i = 0; i < 40 && stack.output.includes("Reloading") && !/Reloading[\s\S]*Ready/.test(stack.output); i++) await new Promise((r) => setTimeout(r, 250));
    await new Promise((r) => setTimeout(r, 1_000));
    stack.status = status;
    stack.stop = () => stop(stack);
    return stack;
  } catch (error) {
    await stop(stack);
    throw error;
  }
}

async function stop(stack) {
  if (stack.dev) {
    const stopped = new Promise((r) => (stack.exited !== null ? r() : stack.dev.on("exit", r)));
    try {
      process.kill(-stack.dev.pid, "SIGTERM");
    } catch {
      // Already gone.
    }
    await stopped;
  }
  await stack.idp?.close();
  await stack.stripe?.close();
  await stack.agentcore?.close();
  await stack.lcf?.close();
  rmSync(stack.state, { recursive: true, force: true });
}
