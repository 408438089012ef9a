// The invocation gateway end to end (workers_dev mode): the control plane in workerd routes invoke/v1 through the
// agent's active deployment to scripts really running in the local Cloudflare.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startLocalCloudflare } from "../local-cloudflare/server.mjs";
import { startControlPlane, deployVars, expectError } from "./support/harness.mjs";
import { ECHO_AGENT, UNRULY_AGENT, invokeBody } from "./support/agents.mjs";

let lcf, app, alice, mallory;
before(async () => {
  lcf = await startLocalCloudflare();
  app = await startControlPlane({ vars: { ...deployVars(lcf, "workers_dev"), INVOKE_TIMEOUT_MS: "1500" } });
  alice = await app.token("user_alice");
  mallory = await app.token("user_mallory");
});
after(async () => {
  await app?.close();
  await lcf?.close();
});

const seen = (res) => JSON.parse(res.body.output.text);
const remaining = (res) => Number(res.headers.get("X-RateLimit-Remaining"));

test("JSON invocation of the template through the active deployment", async () => {
  const { agent, deployment } = await app.deployedAgent(alice, "echo-template");
  const res = await app.invoke(alice, agent.id, invokeBody("hello through the gateway"));
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.protocol, "invoke/v1");
  assert.equal(res.body.output.text, "hello through the gateway");
  assert.deepEqual(res.body.usage, { inputTokens: 4, outputTokens: 4 });
  assert.match(res.body.sessionId, /^ses_[0-9a-f]{32}$/);
  // An admitted call's trace id: the minute it was issued, 64 random bits and the admission tag (domain::admission).
  assert.match(res.body.traceId, /^trc_[0-9a-f]{40}$/);
  assert.deepEqual(Object.keys(res.body).sort(), ["output", "protocol", "sessionId", "traceId", "usage"]);
  assert.equal(res.headers.get("X-Deployment-Id"), deployment.id);
  assert.equal(res.headers.get("X-Trace-Id"), res.body.traceId);
  assert.equal(res.headers.get("X-RateLimit-Limit"), "1000");
  assert.equal(remaining(res), 999);
  const reset = Number(res.headers.get("X-RateLimit-Reset"));
  const now = new Date();
  assert.equal(reset, Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1) / 1000, "the next UTC month");
});

test("sessions: opaque to clients, stable per user and agent, never shared across either", async () => {
  const { agent } = await app.deployedAgent(alice, "session-echo", { moduleCode: ECHO_AGENT });
  const { agent: other } = await app.deployedAgent(alice, "session-echo-2", { moduleCode: ECHO_AGENT });
  const { agent: mallorys } = await app.deployedAgent(mallory, "session-echo", { moduleCode: ECHO_AGENT });

  const first = await app.invoke(alice, agent.id, invokeBody("hi"));
  assert.equal(first.status, 200, first.text);
  const runtime = seen(first).runtimeSession;
  assert.ok(runtime.length >= 33, `runtime session ids are long enough for every provider: ${runtime}`);
  assert.notEqual(first.body.sessionId, runtime, "the client's session id is not the runtime's");

  const again = await app.invoke(alice, agent.id, invokeBody("again", { sessionId: first.body.sessionId }));
  assert.equal(again.body.sessionId, first.body.sessionId);
  assert.equal(seen(again).runtimeSession, runtime, "a known session reaches the same runtime session");

  const named = await app.invoke(alice, agent.id, invokeBody("mine", { sessionId: "conversation-42" }));
  assert.equal(named.body.sessionId, "conversation-42");
  assert.notEqual(seen(named).runtimeSession, runtime);

  // The same client session id, presented for another agent or by another user, starts a different session.
  const otherAgent = await app.invoke(alice, other.id, invokeBody("x", { sessionId: first.body.sessionId }));
  assert.notEqual(seen(otherAgent).runtimeSession, runtime);
  const stolen = await app.invoke(mallory, mallorys.id, invokeBody("x", { sessionId: first.body.sessionId }));
  assert.equal(stolen.status, 200);
  assert.notEqual(seen(stolen).runtimeSession, runtime);
  assert.notEqual(seen(stolen).runtimeSession, seen(otherAgent).runtimeSession);
});

test("the agent gets the invocation, not the caller's credentials", async () => {
  const { agent } = await app.deployedAgent(alice, "header-echo", { moduleCode: ECHO_AGENT });
  const res = await app.invoke(alice, agent.id, invokeBody("hi", { metadata: { color: "blue" } }), { Cookie: "session=abc" });
  assert.equal(res.status, 200, res.text);
  const got = seen(res);
  assert.equal(got.authorization, null);
  assert.equal(got.cookie, null);
  assert.equal(got.traceId, res.body.traceId, "the agent sees the gateway's trace id");
  assert.deepEqual(got.metadata, { color: "blue" });
  assert.equal(res.body.traceId === "agent-chosen", false, "the agent cannot choose the trace id");
});

test("refusals before the runtime: clear codes, nothing counted", async () => {
  const { agent } = await app.deployedAgent(alice, "refusals");
  const before = remaining(await app.invoke(alice, agent.id, invokeBody("count me")));

  const undeployed = (await app.createAgent(alice, { name: "never-deployed" })).body;
  expectError(assert, await app.invoke(alice, undeployed.id, invokeBody("x")), 409, "no_active_deployment");
  expectError(assert, await app.invoke(alice, "agt_000000000000000000000000", invokeBody("x")), 404, "agent_not_found");
  expectError(assert, await app.invoke(alice, "not-an-id", invokeBody("x")), 404, "agent_not_found");
  expectError(assert, await app.invoke(mallory, agent.id, invokeBody("x")), 404, "agent_not_found");
  expectError(assert, await app.invoke(alice, agent.id, { protocol: "invoke/v2", input: { messages: [] } }), 400, "validation_failed");
  expectError(assert, await app.invoke(alice, agent.id, { protocol: "invoke/v1", input: { messages: [] } }), 400, "validation_failed");
  expectError(assert, await app.invoke(alice, agent.id, invokeBody("x", { sessionId: "has spaces" })), 400, "validation_failed");
  expectError(assert, await app.invoke(alice, agent.id, invokeBody("x", { userId: "usr_x" })), 400, "invalid_body");
  expectError(assert, await app.request("POST", `/v1/invoke/${agent.id}`, { token: alice, body: "{", headers: { "Content-Type": "application/json" } }), 400, "invalid_json");
  expectError(assert, await app.request("POST", `/v1/invoke/${agent.id}`, { token: alice, body: "x", headers: { "Content-Type": "text/plain" } }), 415, "unsupported_media_type");
  expectError(assert, await app.invoke(undefined, agent.id, invokeBody("x")), 401, "missing_credentials");
  expectError(assert, await app.request("GET", `/v1/invoke/${agent.id}`, { token: alice }), 405, "method_not_allowed");

  assert.equal((await app.disableAgent(alice, agent.id)).status, 200);
  expectError(assert, await app.invoke(alice, agent.id, invokeBody("x")), 409, "agent_disabled");
  assert.equal((await app.enableAgent(alice, agent.id)).status, 200);

  const after = await app.invoke(alice, agent.id, invokeBody("count me too"));
  assert.equal(after.status, 200);
  assert.equal(remaining(after), before - 1, "only the two successful calls were counted");
  // Deleted: refused from the very next call, although the user's gate had this agent's route in memory.
  assert.equal((await app.deleteAgent(alice, agent.id)).status, 204);
  expectError(assert, await app.invoke(alice, agent.id, invokeBody("gone")), 404, "agent_not_found");
});

test("rollback: the very next invocation goes to the newly active deployment", async () => {
  const created = (await app.createAgent(alice, { name: "rollback-target" })).body;
  const version = async () => {
    const res = await app.invoke(alice, created.id, invokeBody("which?"));
    assert.equal(res.status, 200, res.text);
    return [seen(res).version, res.headers.get("X-Deployment-Id")];
  };
  const v1 = await app.settled(alice, created.id, (await app.deploy(alice, created.id, { moduleCode: ECHO_AGENT, env: { VERSION: "v1" } })).body.id);
  // The user's gate now holds v1 as the route; a deploy going live must move it.
  assert.deepEqual(await version(), ["v1", v1.id]);
  const v2 = await app.settled(alice, created.id, (await app.deploy(alice, created.id, { moduleCode: ECHO_AGENT, env: { VERSION: "v2" } })).body.id);
  assert.equal(v2.status, "active");
  assert.deepEqual(await version(), ["v2", v2.id]);
  for (const [target, name] of [[v1, "v1"], [v2, "v2"], [v1, "v1"]]) {
    assert.equal((await app.activate(alice, created.id, target.id)).status, 200);
    assert.deepEqual(await version(), [name, target.id]);
  }
});

test("upstream failures are classified with safe, bounded details", async () => {
  const { agent, deployment } = await app.deployedAgent(alice, "unruly", { moduleCode: UNRULY_AGENT });
  const call = (mode, extra = {}) => app.invoke(alice, agent.id, invokeBody("x", { metadata: { mode, ...extra } }));

  const crashed = expectError(assert, await call("status-500"), 502, "upstream_error");
  assert.equal(crashed.retryable, true);
  assert.equal(crashed.details.deploymentId, deployment.id);
  assert.equal(crashed.details.upstreamStatus, 500);
  assert.ok(crashed.details.upstreamBody.startsWith("boom boom"));
  assert.ok(crashed.details.upstreamBody.length <= 513, "the snippet is bounded");

  const refused = expectError(assert, await call("status-400"), 502, "upstream_error");
  assert.equal(refused.retryable, false);
  assert.equal(refused.details.upstreamStatus, 400);
  assert.equal(refused.details.upstreamBody, "the agent did not like that");

  const garbled = expectError(assert, await call("not-invoke"), 502, "upstream_invalid_response");
  assert.equal(garbled.details.upstreamBody, '{"hello":"world"}');

  const slow = expectError(assert, await call("slow", { ms: 4000 }), 504, "upstream_timeout");
  assert.equal(slow.retryable, true);
  assert.equal(slow.details.timeoutMs, 1500);
});

test("an agent whose connection fails is a retryable 502, and the request counts (it may have run)", async () => {
  const gone = await startLocalCloudflare();
  const isolated = await startControlPlane({ vars: deployVars(gone, "workers_dev") });
  try {
    const token = await isolated.token("user_unreachable");
    const created = (await isolated.createAgent(token, { name: "soon-gone" })).body;
    const dep = await isolated.settled(token, created.id, (await isolated.deploy(token, created.id)).body.id);
    assert.equal(dep.status, "active");
    const ok = await isolated.invoke(token, created.id, invokeBody("before"));
    assert.equal(ok.status, 200, ok.text);
    await gone.close();
    const res = await isolated.invoke(token, created.id, invokeBody("after"));
    const err = expectError(assert, res, 502, "upstream_unreachable");
    assert.equal(err.retryable, true);
    assert.equal(err.details.deploymentId, dep.id);
    assert.ok(!JSON.stringify(err).includes("127.0.0.1"), "no internal addresses in the answer");
    // Over HTTP a refused connection and one that broke after the agent started look the same: it counts
    // (only a call that certainly never reached an agent is given back; tests/counting.test.mjs).
    assert.equal(remaining(res), remaining(ok) - 1);
    const { results } = await isolated.db.prepare("SELECT outcome, counted FROM invocations ORDER BY started_at").all();
    assert.deepEqual(results, [{ outcome: "ok", counted: 1 }, { outcome: "upstream_unreachable", counted: 1 }]);
  } finally {
    await isolated.close();
    await gone.close().catch(() => {});
  }
});

test("gateway-side metering records every call that reached an agent of the caller", async () => {
  const { agent, deployment } = await app.deployedAgent(alice, "metered", { moduleCode: UNRULY_AGENT });
  await app.invoke(alice, agent.id, invokeBody("x"));
  await app.invoke(alice, agent.id, invokeBody("x", { metadata: { mode: "status-500" } }));
  await app.disableAgent(alice, agent.id);
  await app.invoke(alice, agent.id, invokeBody("x"));
  await app.enableAgent(alice, agent.id);
  // Metering is written after the response; give the background write a moment.
  let rows = [];
  for (let i = 0; i < 50 && rows.length < 3; i++) {
    ({ results: rows } = await app.db
      .prepare("SELECT outcome, counted, deployment_id, mode, upstream_status, wall_ms, period_key FROM invocations WHERE agent_id = ? ORDER BY started_at")
      .bind(agent.id)
      .all());
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(
    rows.map((r) => [r.outcome, r.counted, r.upstream_status]),
    [["ok", 1, 200], ["upstream_error", 1, 500], ["agent_disabled", 0, null]],
  );
  assert.ok(rows.every((r) => r.deployment_id === deployment.id && r.mode === "json" && r.wall_ms >= 0));
  assert.match(rows[0].period_key, /^\d{4}-\d{2}$/);
});
