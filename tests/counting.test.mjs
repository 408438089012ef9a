// Every admitted call is counted. A reservation is given back only when the call certainly never reached the
// agent (nothing to dispatch to); a call the agent failed — it threw after doing work, or answered a redirect,
// or the connection broke at a point nobody can tell — uses its request. Redirects are never followed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { deployVars, expectError, startControlPlane } from "./support/harness.mjs";
import { UNRULY_AGENT, invokeBody, startGate } from "./support/agents.mjs";

let lcf, gate, devApp, wfpApp;
before(async () => {
  lcf = await startLocalCloudflare();
  gate = await startGate();
  devApp = await startControlPlane({ vars: deployVars(lcf, "workers_dev") });
  wfpApp = await startControlPlane({ vars: deployVars(lcf, "dispatch_namespace"), dispatcher: { origin: lcf.origin, namespace: lcf.namespace } });
});
after(async () => {
  await devApp?.close();
  await wfpApp?.close();
  await gate?.close();
  await lcf?.close();
});

const remaining = (res) => Number(res.headers.get("X-RateLimit-Remaining"));
const rows = async (app) => (await app.db.prepare("SELECT outcome, counted FROM invocations ORDER BY started_at").all()).results;

async function unruly(app, subject) {
  const token = await app.token(subject);
  const { agent, deployment } = await app.deployedAgent(token, "unruly", { moduleCode: UNRULY_AGENT });
  const call = (mode, run) => app.invoke(token, agent.id, invokeBody("x", { metadata: { mode, gate: gate.url, run } }));
  return { token, agent, deployment, call };
}

test("dispatch namespace: an agent that throws after doing work uses its request (upstream_error)", async () => {
  const { call } = await unruly(wfpApp, "counting-throw");
  const before = await call("json-always");
  assert.equal(before.status, 200, before.text);
  const res = await call("throw-after-work", "threw");
  const err = expectError(assert, res, 502, "upstream_error");
  assert.ok(!JSON.stringify(err).includes("crashed"), "the agent's exception stays in the log");
  assert.equal(gate.count("threw", "tick"), 1, "the agent ran");
  assert.equal(remaining(res), remaining(before) - 1, "so the call counted");
  assert.deepEqual((await rows(wfpApp)).slice(-1), [{ outcome: "upstream_error", counted: 1 }]);
});

test("dispatch namespace: an agent that throws \"Worker not found\" itself after doing work still uses its request", async () => {
  const { call } = await unruly(wfpApp, "counting-fake-missing");
  const before = await call("json-always");
  assert.equal(before.status, 200, before.text);
  const res = await call("throw-not-found", "faked");
  expectError(assert, res, 502, "upstream_error");
  assert.equal(gate.count("faked", "tick"), 1, "the agent ran");
  assert.equal(remaining(res), remaining(before) - 1, "so the call counted, whatever it threw");
  assert.deepEqual((await rows(wfpApp)).slice(-1), [{ outcome: "upstream_error", counted: 1 }]);
});

test("dispatch namespace: a script the namespace does not hold was never dispatched, and gives its request back", async () => {
  const { call, deployment } = await unruly(wfpApp, "counting-missing");
  const before = await call("json-always");
  assert.equal(before.status, 200, before.text);
  const gone = await fetch(`${lcf.apiBase}/accounts/${lcf.accountId}/workers/dispatch/namespaces/${lcf.namespace}/scripts/${deployment.scriptName}`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${lcf.apiToken}` },
  });
  assert.equal(gone.status, 200);
  const res = await call("json-always");
  const err = expectError(assert, res, 502, "upstream_unreachable");
  assert.equal(err.retryable, true);
  assert.equal(remaining(res), remaining(before), "given back");
  assert.deepEqual((await rows(wfpApp)).slice(-1), [{ outcome: "upstream_unreachable", counted: 0 }]);
});

test("a redirect from an agent is an upstream error, counted, and never followed", async () => {
  const { call } = await unruly(devApp, "counting-redirect");
  const before = await call("json-always");
  const res = await call("redirect", "redirected");
  const err = expectError(assert, res, 502, "upstream_error");
  assert.equal(err.details.upstreamStatus, 302);
  assert.equal(gate.count("redirected", "tick"), 0, "the gateway did not go where the agent pointed");
  assert.equal(remaining(res), remaining(before) - 1);
  assert.deepEqual((await rows(devApp)).slice(-1), [{ outcome: "upstream_error", counted: 1 }]);
});

test("workers.dev: a script that throws answers 5xx, which counts", async () => {
  const { call } = await unruly(devApp, "counting-throw-dev");
  const before = await call("json-always");
  const res = await call("throw-after-work", "threw-dev");
  expectError(assert, res, 502, "upstream_error");
  assert.equal(gate.count("threw-dev", "tick"), 1);
  assert.equal(remaining(res), remaining(before) - 1);
});
