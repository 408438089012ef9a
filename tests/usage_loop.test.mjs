// The whole loop, nothing faked: create an agent, deploy the template, invoke it (JSON and SSE); the deployed
// agent signs and posts its telemetry to this control plane, whose usage and metrics then show it. Then quotas:
// tokens and compute charged from that telemetry refuse further invocations before the runtime is called.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { startControlPlane, deployVars, expectError } from "./support/harness.mjs";
import { invokeBody } from "./support/agents.mjs";

const ADMIN = "usage-loop-test-admin-token-0123456789abcdef";
let lcf, app;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({ vars: { ...deployVars(lcf, "workers_dev"), ADMIN_TOKEN: ADMIN }, telemetryToSelf: true });
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

async function loop(app, lcf, subject) {
  const token = await app.token(subject);
  const { agent, deployment } = await app.deployedAgent(token, "loop-agent");

  const json = await app.invoke(token, agent.id, invokeBody("three little words"));
  assert.equal(json.status, 200, json.text);
  const stream = await app.invokeStream(token, agent.id, invokeBody("four words in stream"));
  assert.equal(stream.status, 200);
  assert.deepEqual(stream.events.map((e) => e.event), ["meta", "delta", "delta", "delta", "delta", "delta", "delta", "delta", "usage", "done"]);
  const sseUsage = stream.events.find((e) => e.event === "usage").data;

  // The agent reports after answering (waitUntil); its reports arrive on their own.
  const events = await app.until("the agent's telemetry for both calls", async () => {
    const r = await app.metricsRecent(token, `?agentId=${agent.id}`);
    assert.equal(r.status, 200, r.text);
    return r.body.events.length >= 2 && r.body.events;
  });
  assert.equal(events.length, 2);
  const byTrace = Object.fromEntries(events.map((e) => [e.traceId, e]));
  const sseTrace = stream.events[0].data.traceId;
  assert.deepEqual(Object.keys(byTrace).sort(), [json.body.traceId, sseTrace].sort(), "the gateway's trace ids, carried by the agent");
  for (const e of events) {
    assert.equal(e.deploymentId, deployment.id);
    assert.equal(e.agentId, agent.id);
    assert.equal(e.runtimeProvider, "cloudflare");
    assert.equal(e.requests, 1);
  }
  assert.deepEqual([byTrace[json.body.traceId].inputTokens, byTrace[json.body.traceId].outputTokens], [json.body.usage.inputTokens, json.body.usage.outputTokens]);
  assert.deepEqual([byTrace[sseTrace].inputTokens, byTrace[sseTrace].outputTokens], [sseUsage.inputTokens, sseUsage.outputTokens]);

  const usage = await app.usageCurrent(token);
  assert.equal(usage.status, 200, usage.text);
  const tokens = json.body.usage.inputTokens + json.body.usage.outputTokens + sseUsage.inputTokens + sseUsage.outputTokens;
  assert.equal(usage.body.totals.events, 2);
  assert.equal(usage.body.totals.requests, 2);
  assert.equal(usage.body.totals.tokens, tokens);
  assert.equal(usage.body.totals.inputTokens, json.body.usage.inputTokens + sseUsage.inputTokens);
  assert.equal(usage.body.requestsReserved, 2);
  assert.equal(usage.body.remaining.tokens, usage.body.entitlements.tokensPerPeriod - tokens);
  assert.equal(usage.body.remaining.requests, usage.body.entitlements.requestsPerPeriod - 2);
  const rejects = (await app.db.prepare("SELECT COUNT(*) AS n FROM telemetry_rejects").first()).n;
  assert.equal(rejects, 0, "every report the agent sent was accepted");
}

test("the whole loop through workers.dev: deploy, invoke JSON and SSE, signed telemetry, usage", async () => {
  await loop(app, lcf, "loop-workers-dev");
});

test("the whole loop through the dispatch namespace", async () => {
  const dlcf = await startLocalCloudflare();
  const dapp = await startControlPlane({
    vars: deployVars(dlcf, "dispatch_namespace"),
    dispatcher: { origin: dlcf.origin, namespace: dlcf.namespace },
    telemetryToSelf: true,
  });
  try {
    await loop(dapp, dlcf, "loop-dispatch");
  } finally {
    await dapp.close();
    await dlcf.close();
  }
});

async function userIdOf(token) {
  return (await app.me(token)).body.id;
}

async function waitForTokens(token, atLeast) {
  return app.until(`${atLeast} tokens charged`, async () => {
    const u = await app.usageCurrent(token);
    return u.body.totals.tokens >= atLeast && u.body;
  });
}

function expectQuota(res, entitlement, used, limit) {
  const err = expectError(assert, res, 429, "quota_exhausted");
  assert.equal(err.details.entitlement, entitlement);
  assert.equal(err.details.used, used);
  assert.equal(err.details.limit, limit);
  assert.ok(Number(res.headers.get("Retry-After")) > 0);
  const now = new Date();
  const reset = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
  assert.equal(err.details.resetsAt, reset.getTime());
  assert.ok(err.message.includes(reset.toISOString().replace(".000", "")), err.message);
  assert.equal(err.retryable, false);
}

test("token quota: charged from the agent's telemetry, refuses before the runtime, lifts when raised or at rollover", async () => {
  const carol = await app.token("quota-carol");
  const carolId = await userIdOf(carol);
  const set = async (tokensPerPeriod) => {
    const r = await app.admin("PUT", `/users/${carolId}/entitlements`, ADMIN, { tokensPerPeriod });
    assert.equal(r.status, 200, r.text);
  };
  await set(12);
  const { agent, deployment } = await app.deployedAgent(carol, "quota-agent");
  const key = (await app.createApiKey(carol, { name: "quota-key" })).body.key;

  // "one two three": 3 input + 3 output tokens per call, as the template reports them.
  assert.equal((await app.invoke(carol, agent.id, invokeBody("one two three"))).status, 200);
  await waitForTokens(carol, 6);
  assert.equal((await app.invoke(carol, agent.id, invokeBody("one two three"))).status, 200, "6 of 12: still allowed");
  const spent = await waitForTokens(carol, 12);
  assert.equal(spent.remaining.tokens, 0);
  assert.deepEqual(spent.exhausted, ["tokensPerPeriod"]);

  const served = lcf.requestsServed(deployment.scriptName);
  const reserved = spent.requestsReserved;
  expectQuota(await app.invoke(carol, agent.id, invokeBody("one more")), "tokensPerPeriod", 12, 12);
  const streamed = await app.invokeStream(carol, agent.id, invokeBody("one more"));
  assert.equal(streamed.status, 429);
  assert.equal(streamed.body.error.code, "quota_exhausted");
  expectQuota(await app.invoke(key, agent.id, invokeBody("with a key")), "tokensPerPeriod", 12, 12);
  assert.equal(lcf.requestsServed(deployment.scriptName), served, "the runtime was never called");
  assert.equal((await app.usageCurrent(carol)).body.requestsReserved, reserved, "refusals take no request");
  const refusals = await app.until("metering rows", async () => {
    const rows = (await app.db.prepare("SELECT * FROM invocations WHERE user_id = ? AND outcome = 'quota_exhausted'").bind(carolId).all()).results;
    return rows.length === 3 && rows;
  });
  assert.ok(refusals.every((r) => r.counted === 0 && r.upstream_status === null));

  // Raising the entitlement lets calls through at once…
  await set(1000);
  assert.equal((await app.invoke(carol, agent.id, invokeBody("one two three"))).status, 200);
  await waitForTokens(carol, 18);
  await set(12);
  expectQuota(await app.invoke(carol, agent.id, invokeBody("again")), "tokensPerPeriod", 18, 12);
  // …and so does a new period. The month cannot be made to turn here; moving the user's totals to the
  // previous period is exactly the state the first invocation of a new month finds.
  await app.db.prepare("UPDATE billing_usage SET period_key = ? WHERE user_id = ?").bind(previousPeriod(), carolId).run();
  // D1 was edited by hand: the user's gate still holds this period's totals until it is told.
  expectQuota(await app.invoke(carol, agent.id, invokeBody("stale copy")), "tokensPerPeriod", 18, 12);
  const refreshed = await app.admin("POST", `/users/${carolId}/gate/refresh`, ADMIN);
  assert.deepEqual(refreshed.body, { userId: carolId, refreshed: true });
  assert.equal((await app.invoke(carol, agent.id, invokeBody("a new month"))).status, 200);
});

function previousPeriod() {
  const now = new Date();
  const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

test("compute quota: the free tier's compute spent, a raised tier lifts it", async () => {
  const dave = await app.token("quota-dave");
  const daveId = await userIdOf(dave);
  const { agent, deployment } = await app.deployedAgent(dave, "compute-agent");
  // One long-running call, reported (and signed) as the agent reports every call.
  const report = await app.report(
    deployment.id,
    {
      eventId: "heavy-call", traceId: app.admittedTraceId(deployment.id), userId: daveId, agentId: agent.id, deploymentId: deployment.id,
      runtimeProvider: "cloudflare", ts: Date.now(), requests: 1, inputTokens: 0, outputTokens: 0, computeMs: 600000, errors: 0,
    },
    { secret: lcf.secretValue(deployment.scriptName, "TELEMETRY_SECRET") },
  );
  assert.equal(report.status, 200, report.text);
  const served = lcf.requestsServed(deployment.scriptName);
  expectQuota(await app.invoke(dave, agent.id, invokeBody("hi")), "computeMsPerPeriod", 600000, 600000);
  assert.equal(lcf.requestsServed(deployment.scriptName), served);
  const seen = await app.admin("GET", `/users/${daveId}/usage`, ADMIN);
  assert.equal(seen.status, 200, seen.text);
  assert.equal(seen.body.totals.computeMs, 600000);
  assert.deepEqual(seen.body.remaining, { requests: 1000, tokens: 200000, computeMs: 0 });
  const raised = await app.admin("PUT", `/users/${daveId}/tier`, ADMIN, { tier: "pro" });
  assert.equal(raised.status, 200, raised.text);
  assert.equal((await app.invoke(dave, agent.id, invokeBody("hi"))).status, 200);
  assert.equal(lcf.requestsServed(deployment.scriptName), served + 1);
});
