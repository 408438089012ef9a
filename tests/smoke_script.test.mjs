// `make smoke-cloudflare` is ready to run against a real account: here the same script runs against the local
// Cloudflare (its API base and workers.dev URLs pointed there), in both deploy modes, and is skipped cleanly
// without credentials.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { ROOT } from "./support/harness.mjs";

let lcf;
before(async () => {
  lcf = await startLocalCloudflare();
});
after(() => lcf?.close());

function smoke(extraEnv) {
  const env = { ...process.env, CLOUDFLARE_API_TOKEN: "", CLOUDFLARE_ACCOUNT_ID: "", ...extraEnv };
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(ROOT, "scripts/smoke-cloudflare.mjs")], { cwd: ROOT, env });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("exit", (code) => resolve({ code, output }));
  });
}

const against = (target) => ({
  CLOUDFLARE_API_BASE_URL: lcf.apiBase,
  CLOUDFLARE_API_TOKEN: lcf.apiToken,
  CLOUDFLARE_ACCOUNT_ID: lcf.accountId,
  WORKERS_DEV_URL_TEMPLATE: `${lcf.origin}/__workers/{script}`,
  SMOKE_TARGET: target,
  DISPATCH_NAMESPACE: lcf.namespace,
});

test("without credentials it says what to set and skips", async () => {
  const { code, output } = await smoke({});
  assert.equal(code, 0, output);
  assert.match(output, /skipped\. Set CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID/);
});

test("workers.dev: deploy, invoke through the gateway, redeploy, roll back, delete, nothing left", async () => {
  const { code, output } = await smoke(against("workers_dev"));
  assert.equal(code, 0, output);
  assert.match(output, /v1: JSON "hello v1", a stream of \d+ events, and its own URL refuses direct calls/);
  assert.match(output, /rolled back to dep_/);
  assert.match(output, /its scripts are gone\. Done\./);
  assert.deepEqual(lcf.scripts().filter((s) => s.scope === "workers"), []);
});

test("dispatch namespace: deploy, redeploy, roll back, delete, nothing left", async () => {
  const { code, output } = await smoke(against("dispatch_namespace"));
  assert.equal(code, 0, output);
  assert.match(output, /is in the namespace/);
  assert.match(output, /its scripts are gone\. Done\./);
  assert.deepEqual(lcf.scripts(), []);
});
